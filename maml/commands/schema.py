"""`maml schema [NAME] [--path]`: list the shipped JSON Schemas, or print one.

NAME may be `policy`, `policy.json`, `kinds/llm` or just `llm`. `--path` prints where the
file is, for pointing an editor's YAML plugin at it.
"""

from __future__ import annotations

import json

import click


@click.command("schema")
@click.argument("name", required=False)
@click.option("--path", "show_path", is_flag=True, help="Print the schema file's path instead.")
def command(name: str | None, show_path: bool) -> None:
    """Print a JSON Schema shipped with maml (or list them)."""
    from maml import schemas

    if name is None:
        for schema_name in schemas.schema_names():
            click.echo(schemas.schemas_dir() / f"{schema_name}.json" if show_path
                       else schema_name)
        return
    resolved = schemas.resolve_name(name)
    if show_path:
        click.echo(schemas.schemas_dir() / f"{resolved}.json")
        return
    click.echo(json.dumps(schemas.load_schema(resolved), indent=2, ensure_ascii=False))
