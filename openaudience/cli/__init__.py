"""`oa`, the command line. `main` is the script's entry point."""

import sys


def main() -> None:
    """Import the command line inside the error handling (importing it reads the project's id-type
    registry, which a user may have broken), then run it."""
    from connectors.identifiers import RegistryError

    try:
        from openaudience.cli.app import main as run
    except RegistryError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    run()
