"""Identifiers as SQL: the one quoting both engines accept. Values never go into SQL text; they
are bound parameters."""


def qident(name: str) -> str:
    """Quote an identifier for both engines."""
    return '"' + name.replace('"', '""') + '"'


def qualified(schema: str, table: str) -> str:
    return f"{qident(schema)}.{qident(table)}"
