"""`maml sign DOC [--key K]`: a detached DSSE signature `DOC.sig` over the document's bytes.

The key is your maml key (made on first use, see `maml keys`) or `--key PRIVATE_PEM`. Anyone
who trusts the public key (`maml keys trust PUB`) can then check it with `maml verify DOC`,
and `maml run --require-signed` runs only documents signed by a trusted key.
"""

from __future__ import annotations

import json
from pathlib import Path

import click


@click.command("sign")
@click.argument("documents", nargs=-1, required=True,
                type=click.Path(exists=True, dir_okay=False))
@click.option("--key", "key_path", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Private key (PKCS#8 PEM, mode 0600) to sign with; default: your maml key.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per document.")
def command(documents: tuple[str, ...], key_path: str | None, as_json: bool) -> None:
    """Sign DOCUMENTS: write DOC.sig next to each."""
    from maml.graph import docsig, keys

    key = keys.load_key(path=Path(key_path)) if key_path else keys.load_or_create_key()
    for document in documents:
        written = docsig.sign(document, key)
        if as_json:
            click.echo(json.dumps({"document": document, "signature": str(written),
                                   "key_id": key.id}))
        else:
            click.echo(f"signed {document} with key {key.id}: {written}")
