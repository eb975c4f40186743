"""``oa``: the one command line of OpenAudience.

Errors a user can cause (``UserError``) are printed without a traceback and exit with 2;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import os
import re
import sys

import typer
from rich.markup import escape

from connectors.base import ConnectorConfigError
from connectors.identifiers import RegistryError
from openaudience.cli import aipl, audience, bench, demo, load, pipeline, report
from openaudience.cli.common import err
from openaudience.cli.deliver import deliver_app, suppress_app
from openaudience.cli.events import events_app
from openaudience.cli.journey import journey_app
from openaudience.cli.ml import ml_app
from openaudience.core.errors import UserError, ValidationFailed

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="OpenAudience: warehouse-native customer data platform.")
for commands in (demo.app, load.app, pipeline.app):
    app.add_typer(commands)
app.add_typer(audience.audience_app, name="audience")
app.add_typer(report.report_app, name="report")
app.add_typer(aipl.aipl_app, name="aipl")
app.add_typer(bench.bench_app, name="bench")
app.add_typer(deliver_app, name="deliver")
app.add_typer(suppress_app, name="suppress")
app.add_typer(ml_app, name="ml")
app.add_typer(journey_app, name="journey")
app.add_typer(events_app, name="events")


def main() -> None:
    """Run `oa`; turn every failure a user can cause into one message and exit code 2."""
    argv = sys.argv[1:]
    if "--wait" in argv[: argv.index("--") if "--" in argv else len(argv)]:
        argv.remove("--wait")  # accepted anywhere: `oa deliver crm --wait`, `oa --wait load ...`
        os.environ["OA_LOCK_WAIT"] = "forever"
    from openaudience.core import locks

    locks.start_command()
    locks.keep_until_done()  # a command that wrote keeps the warehouse until its snapshot is out
    try:
        app(args=argv, standalone_mode=False)
        _publish_snapshot()
    except ValidationFailed as exc:
        err.print(f"[red]rejected:[/red] {escape(str(exc))}", highlight=False)
        if exc.report:
            err.print(exc.report, highlight=False, markup=False)
        sys.exit(2)
    except (UserError, ConnectorConfigError, RegistryError) as exc:
        err.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False)
        sys.exit(2)
    except (typer.Abort, KeyboardInterrupt):
        err.print("aborted")
        sys.exit(130)
    except Exception as exc:  # usage errors (typer ships its own copy of click's exceptions)
        names = {c.__name__ for c in type(exc).__mro__}
        if "ClickException" in names:
            exc.show()
            sys.exit(exc.exit_code)
        if "Exit" in names:
            sys.exit(exc.exit_code)
        missing = _missing_relation(exc)
        if missing:
            err.print(f"[red]error:[/red] {escape(missing)}", highlight=False)
            sys.exit(2)
        raise
    finally:
        locks.release_kept()


def _publish_snapshot() -> None:
    """After a command that wrote the embedded warehouse, refresh the snapshot readers use while
    another command holds the file."""
    from openaudience.core.locks import wrote
    from openaudience.core.settings import load_settings

    if wrote():
        from openaudience.core.warehouse import publish_snapshot

        publish_snapshot(load_settings())


def _missing_relation(exc: Exception) -> str | None:
    """The message for a command run before the warehouse has what it reads (an empty
    warehouse, a model not built yet): DuckDB's catalog error or PostgreSQL's undefined table."""
    kind = type(exc).__name__
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if kind in ("CatalogException", "UndefinedTable", "InvalidSchemaName"):
        match = re.search(r'(?:Table with name|Schema with name|relation|schema) "?([\w.]+)"? does not exist',
                          text)
        what = f"table {match.group(1)}" if match else "a table this command reads"
        return (f"the warehouse has no {what} yet: load data and build first "
                "(`make demo`, or `oa load ...` then `oa build`)")
    return None


if __name__ == "__main__":
    main()
