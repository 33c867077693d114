"""`maml verify DOC`: check a document's detached signature against the keys you trust.

Exit 0 when a trusted key signed exactly these bytes; 3 (refused) when the document is
unsigned, signed by a key you do not trust, or changed since it was signed; the message says
which. Also home of the trust options `maml run` takes (`--require-signed`, `--allow-path`,
`--append-history`, `--as`), which reach the run through maml.graph.settings.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from typing import Any

import click

from maml.errors import RefusedError, UsageError


@click.command("verify")
@click.argument("documents", nargs=-1, required=True,
                type=click.Path(exists=True, dir_okay=False))
@click.option("--key", "key_paths", type=click.Path(exists=True, dir_okay=False),
              multiple=True, help="Public key (PEM) to accept; repeatable. Default: yours and "
                                  "the keys you trusted (maml keys list).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per document.")
def command(documents: tuple[str, ...], key_paths: tuple[str, ...], as_json: bool) -> None:
    """Check DOCUMENTS' signatures (DOC.sig); exit 3 if one is not signed by a trusted key."""
    from maml.graph import docsig, keys
    from maml.graph.verify import trusted_keys

    trusted = trusted_keys(list(key_paths) or None)
    names = keys.key_names()
    failed = None
    for document in documents:
        verdict = docsig.verify(document, trusted)
        if as_json:
            click.echo(json.dumps({**verdict.to_dict(), "name": names.get(verdict.key_id or "")}))
        elif verdict.ok:
            name = names.get(verdict.key_id or "")
            click.echo(f"{document}: signed by {verdict.key_id}"
                       + (f" ({name})" if name else "") + f", sha256 {verdict.sha256}")
        failed = failed or (None if verdict.ok else verdict)
    if failed is not None:
        raise RefusedError(f"{failed.status}: {failed.reason}", path=failed.path)


def trust_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """`maml run`'s trust options. The wrapped command runs inside settings.overrides(), and
    its `principal` is always None: the OS user (`--as` may only name that user)."""

    @functools.wraps(func)
    def wrapper(*args: Any, require_signed: bool, allow_paths: tuple[str, ...],
                append_history: bool, resign: bool, principal: str | None,
                **kwargs: Any) -> Any:
        from maml.document.permissions import narrowed_principal
        from maml.graph import settings

        try:
            narrowed_principal(principal)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        if append_history and kwargs.get("no_graph"):
            raise UsageError("--append-history writes the run's graph head: it needs the "
                             "graph (drop --no-graph)")
        if resign and not append_history:
            raise UsageError("--resign re-signs the history line --append-history writes; "
                             "give both")
        with settings.overrides(require_signed=require_signed, allow_paths=allow_paths,
                                append_history=append_history, resign=resign):
            return func(*args, principal=None, **kwargs)

    options = [
        click.option("--require-signed", is_flag=True,
                     help="Refuse (exit 3) unless a trusted key signed this document's exact "
                          "bytes (maml sign). Also: require_signed = true in config."),
        click.option("--allow-path", "allow_paths", multiple=True, metavar="DIR",
                     type=click.Path(file_okay=False),
                     help="Let step params (sources, sinks, models) use paths under DIR too "
                          "(repeatable; default: the document's directory and the run's)."),
        click.option("--append-history", is_flag=True,
                     help="Append '- <time>: [EXECUTED] run ...' to the document's History "
                          "section (atomic rewrite; a signed document then no longer matches)."),
        click.option("--resign", is_flag=True,
                     help="With --append-history: re-sign the document with your key."),
        click.option("--as", "principal", default=None, metavar="USER",
                     help="Only your OS user name is accepted: permissions follow who runs maml."),
    ]
    for option in reversed(options):      # click lists the last decorator first
        wrapper = option(wrapper)
    return wrapper
