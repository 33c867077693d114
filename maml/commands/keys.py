"""`maml keys init|show|export|rotate|trust|list|revoke`: your Ed25519 key and the keys you trust.

Your key signs the error graph, documents (`maml sign`) and attestations. It lives in
$MAML_CONFIG_DIR or the platform's user config dir (never the repository), the private key
with mode 0600 (a key others can read is refused). `export --public` prints what others need
to trust you; `export` alone prints the private key, for a backup. `rotate` makes a new key
and keeps the old public key trusted, so what it signed still verifies; `revoke` stops
accepting a key (yours included).
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


@command.command()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def rotate(as_json: bool) -> None:
    """Make a new key; the old public key stays trusted, so what it signed still verifies."""
    from maml.graph import keys

    old = keys.load_key().id
    key = keys.create_key(force=True)
    if as_json:
        click.echo(json.dumps({"key_id": key.id, "previous": old, "path": str(key.path)}))
    else:
        click.echo(f"new signing key {key.id}; {old} stays trusted for verification "
                   f"(maml keys revoke {old[:12]} to stop that)")


@command.command("trust")
@click.argument("public_key", type=click.Path(exists=True, dir_okay=False))
@click.option("--name", default=None, help="A name shown with the key id (e.g. a person).")
def trust_(public_key: str, name: str | None) -> None:
    """Accept signatures by PUBLIC_KEY (PEM) on documents, graphs and attestations."""
    from maml.graph import keys

    public = keys.load_public_key(public_key)
    path = keys.trust_public_key(public)
    if name:
        keys.name_key(public, name)
    click.echo(f"trusted {keys.key_id(public)}" + (f" ({name})" if name else "") + f": {path}")


@command.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def list_(as_json: bool) -> None:
    """Every key maml accepts, and the revoked ones."""
    from maml.graph import keys

    names = keys.key_names()
    directory = keys.config_dir()
    own = keys.load_key().id if (directory / keys.PRIVATE_NAME).exists() else None
    rows = [{"key_id": k, "name": names.get(k), "own": k == own, "revoked": False}
            for k in keys.trusted_public_keys()]
    rows += [{"key_id": k, "name": names.get(k), "own": k == own, "revoked": True}
             for k in sorted(keys.revoked_ids())]
    if as_json:
        click.echo(json.dumps({"keys": rows}))
        return
    for row in rows:
        label = "revoked" if row["revoked"] else ("yours" if row["own"] else "trusted")
        click.echo(f"{row['key_id']}  {label:8}" + (f"  {row['name']}" if row["name"] else ""))


@command.command()
@click.argument("key_id")
def revoke(key_id: str) -> None:
    """Stop accepting the key whose id starts with KEY_ID."""
    from maml.graph import keys

    directory = keys.config_dir()
    own = keys.load_key().id if (directory / keys.PRIVATE_NAME).exists() else None
    revoked = keys.revoke_key(key_id)
    click.echo(f"revoked {revoked}: its signatures no longer verify")
    if revoked == own:
        click.echo("maml: warning: that is your own key, which still signs new records; "
                   "make a new one with `maml keys rotate`", err=True)
