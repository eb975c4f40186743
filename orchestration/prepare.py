"""What the Dagster UI needs before it starts (`make ui` runs this): the instance in DAGSTER_HOME
with the project's dagster.yaml and pool limits, and a current dbt manifest (`dbt parse` when a
model, macro or seed changed). Loading the code location itself runs neither."""

from __future__ import annotations

import sys


def main() -> int:
    from rich.console import Console

    from openaudience.core.dbt import ensure_manifest, manifest_is_current
    from openaudience.core.errors import UserError
    from orchestration.launch import ensure_dagster_home

    console = Console(stderr=True)
    try:
        home = ensure_dagster_home()
        if not manifest_is_current():
            with console.status("dbt parse: the manifest the UI loads ..."):
                ensure_manifest()
    except (UserError, RuntimeError) as exc:  # a bad setting, or dbt parse failed: its output
        console.print(f"[red]error:[/red] {exc}", markup=True, highlight=False)
        return 2
    console.print(f"Dagster instance {home}; dbt manifest ready", highlight=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
