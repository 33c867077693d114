"""`maml keys init|show|export`: the Ed25519 key that signs the error graph.

The key lives in $MAML_CONFIG_DIR or the platform's user config dir (never the repository),
the private key with mode 0600. `export --public` prints what others need for
`maml graph verify --key PUB`; `export` alone prints the private key, for a backup.
"""

from __future__ import annotations

import json

import click


@click.group("keys")
def command() -> None:
    """Manage the Ed25519 key that signs the error graph."""


@command.command()
@click.option("--force", is_flag=True,
              help="Replace an existing key (its public half is kept in trusted/, so graphs "
                   "it signed still verify).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def init(force: bool, as_json: bool) -> None:
    """Create the signing key."""
    from maml.graph import keys

    key = keys.create_key(force=force)
    if as_json:
        click.echo(json.dumps({"key_id": key.id, "path": str(key.path)}))
    else:
        click.echo(f"created signing key {key.id} at {key.path}")


@command.command()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def show(as_json: bool) -> None:
    """Print the key id, where the key is and which other keys are trusted."""
    from maml.graph import keys

    key = keys.load_key()
    trusted = sorted(k for k in keys.trusted_public_keys() if k != key.id)
    if as_json:
        click.echo(json.dumps({"key_id": key.id, "path": str(key.path),
                               "public_path": str(key.path.with_name(keys.PUBLIC_NAME)),
                               "trusted": trusted}))
        return
    click.echo(f"key id:   {key.id}\nprivate:  {key.path}\n"
               f"public:   {key.path.with_name(keys.PUBLIC_NAME)}")
    for key_id in trusted:
        click.echo(f"trusted:  {key_id}")


@command.command()
@click.option("--public", "public", is_flag=True, help="Print the public key only.")
def export(public: bool) -> None:
    """Print the key as PEM: the public key with --public, else the private key (a secret)."""
    from cryptography.hazmat.primitives import serialization

    from maml.graph import keys

    key = keys.load_key()
    if public:
        pem = key.public.public_bytes(serialization.Encoding.PEM,
                                      serialization.PublicFormat.SubjectPublicKeyInfo)
    else:
        click.echo("maml: this is your private signing key: keep it secret", err=True)
        pem = key.private.private_bytes(serialization.Encoding.PEM,
                                        serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption())
    click.echo(pem.decode("ascii"), nl=False)
