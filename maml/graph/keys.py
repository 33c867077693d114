"""The Ed25519 key that signs the error graph, kept in the user's config dir.

    <config dir>/signing_key.pem      private key, PKCS#8 PEM, mode 0600
    <config dir>/signing_key.pub      its public key, SubjectPublicKeyInfo PEM, mode 0600
    <config dir>/trusted/<id>.pub     other public keys whose signatures `verify` accepts
                                      (a replaced key of yours goes here, so old graphs verify)
    <config dir>/trusted/<id>.name    the name given with `maml keys trust PUB --name N`
    <config dir>/revoked/<id>.pub     keys no longer accepted, yours included

The config dir is `$MAML_CONFIG_DIR` or platformdirs' `user_config_dir("maml")`, mode 0700:
never the repository. Files are written to a temporary name and linked into place, so two
`maml run` processes creating the key at once end up sharing one complete key. A private
key file that group or others can read is refused (as ssh refuses one), with the fix.
"""

from __future__ import annotations

import hashlib
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from maml._files import write_new
from maml.errors import GraphError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import (
        Ed25519PrivateKey,
        Ed25519PublicKey,
    )

PRIVATE_NAME = "signing_key.pem"
PUBLIC_NAME = "signing_key.pub"
TRUSTED_DIR = "trusted"
REVOKED_DIR = "revoked"


def config_dir() -> Path:
    """Where maml keeps the user's key: $MAML_CONFIG_DIR, else the platform's config dir."""
    explicit = os.environ.get("MAML_CONFIG_DIR")
    if explicit:
        return Path(explicit).expanduser()
    import platformdirs

    return Path(platformdirs.user_config_dir("maml"))


def key_id(public_key: Ed25519PublicKey) -> str:
    """sha256 of the raw 32-byte public key, first 16 bytes in hex: stored with each head."""
    from cryptography.hazmat.primitives import serialization

    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:32]


@dataclass(frozen=True)
class SigningKey:
    private: Ed25519PrivateKey
    id: str
    path: Path

    @property
    def public(self) -> Ed25519PublicKey:
        return self.private.public_key()


def _ensure_dir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path, 0o700)


def _write_exclusive(path: Path, data: bytes) -> bool:
    """Write `data` to `path` with mode 0600 unless it exists; False if another got there first."""
    return write_new(path, data, 0o600)


def _pem(private: Ed25519PrivateKey) -> tuple[bytes, bytes]:
    from cryptography.hazmat.primitives import serialization

    private_pem = private.private_bytes(serialization.Encoding.PEM,
                                        serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption())
    public_pem = private.public_key().public_bytes(serialization.Encoding.PEM,
                                                   serialization.PublicFormat.SubjectPublicKeyInfo)
    return private_pem, public_pem


def create_key(directory: Path | None = None, *, force: bool = False) -> SigningKey:
    """Make a new key. With force, the old key's public half moves to trusted/ first."""
    directory = directory or config_dir()
    _ensure_dir(directory)
    private_path = directory / PRIVATE_NAME
    if private_path.exists():
        if not force:
            raise GraphError(f"a signing key already exists at {private_path}; "
                             "use --force to replace it")
        old = load_key(directory)
        trust_public_key(old.public, directory)
        private_path.unlink()
        (directory / PUBLIC_NAME).unlink(missing_ok=True)
    return _new_key(directory)[0]


def _new_key(directory: Path) -> tuple[SigningKey, bool]:
    """Generate and store a key unless another process stores one first; (key on disk, ours?)."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    _ensure_dir(directory)
    private_pem, _ = _pem(Ed25519PrivateKey.generate())
    won = _write_exclusive(directory / PRIVATE_NAME, private_pem)
    key = load_key(directory)          # whoever won a race, use the key on disk
    _write_exclusive(directory / PUBLIC_NAME, _pem(key.private)[1])
    return key, won


def load_key(directory: Path | None = None, *, path: Path | None = None) -> SigningKey:
    """The private key in `directory` (default: the config dir), or at `path`."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    path = path or (directory or config_dir()) / PRIVATE_NAME
    try:
        _check_private(path)
        private = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except FileNotFoundError:
        raise GraphError(f"no signing key at {path}; create one with: maml keys init") from None
    except ValueError as exc:
        raise GraphError(f"{path}: not a PEM private key: {exc}") from None
    if not isinstance(private, Ed25519PrivateKey):
        raise GraphError(f"{path}: not an Ed25519 key")
    return SigningKey(private, key_id(private.public_key()), path)


def _check_private(path: Path) -> None:
    """Refuse a private key that group or others can read or write, saying how to fix it."""
    import stat

    mode = os.stat(path).st_mode
    if mode & 0o077:
        raise GraphError(f"{path}: the private signing key is readable by others (mode "
                         f"{stat.S_IMODE(mode):04o}); refusing to use it. Fix it with: "
                         f"chmod 600 {path}")


def load_or_create_key(directory: Path | None = None) -> SigningKey:
    """The user's key; made on first use, saying so once on stderr."""
    directory = directory or config_dir()
    if (directory / PRIVATE_NAME).exists():
        return load_key(directory)
    key, created = _new_key(directory)
    if created:
        print(f"maml: created signing key {key.id} at {key.path} "
              "(back it up: maml keys export)", file=sys.stderr)
    return key


def load_public_key(source: str | os.PathLike[str] | bytes) -> Ed25519PublicKey:
    """A public key from a PEM file path or PEM bytes (`maml graph verify --key PUB`)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    data = source if isinstance(source, bytes) else Path(source).read_bytes()
    try:
        public = serialization.load_pem_public_key(data)
    except ValueError as exc:
        raise GraphError(f"{source!r:.80}: not a PEM public key: {exc}") from None
    if not isinstance(public, Ed25519PublicKey):
        raise GraphError(f"{source!r:.80}: not an Ed25519 public key")
    return public


def trust_public_key(public: Ed25519PublicKey, directory: Path | None = None) -> Path:
    """Add a public key to trusted/, so graphs it signed verify without --key."""
    from cryptography.hazmat.primitives import serialization

    trusted = (directory or config_dir()) / TRUSTED_DIR
    _ensure_dir(trusted)
    path = trusted / f"{key_id(public)}.pub"
    pem = public.public_bytes(serialization.Encoding.PEM,
                              serialization.PublicFormat.SubjectPublicKeyInfo)
    if not path.exists():
        _write_exclusive(path, pem)
    (trusted.parent / REVOKED_DIR / path.name).unlink(missing_ok=True)   # trusted again
    return path


def trusted_public_keys(directory: Path | None = None) -> dict[str, Ed25519PublicKey]:
    """key id -> public key: the user's own key (if any) and every key in trusted/, less the
    revoked ones."""
    directory = directory or config_dir()
    keys: dict[str, Ed25519PublicKey] = {}
    if (directory / PRIVATE_NAME).exists():
        own = load_key(directory)
        keys[own.id] = own.public
    for path in sorted((directory / TRUSTED_DIR).glob("*.pub")):
        public = load_public_key(path)
        keys[key_id(public)] = public
    for revoked in revoked_ids(directory):
        keys.pop(revoked, None)
    return keys


def revoked_ids(directory: Path | None = None) -> set[str]:
    return {p.stem for p in ((directory or config_dir()) / REVOKED_DIR).glob("*.pub")}


def key_names(directory: Path | None = None) -> dict[str, str]:
    """key id -> the name given when it was trusted."""
    trusted = (directory or config_dir()) / TRUSTED_DIR
    return {p.stem: p.read_text(encoding="utf-8").strip() for p in trusted.glob("*.name")}


def name_key(public: Ed25519PublicKey, name: str, directory: Path | None = None) -> None:
    from maml._files import write_atomic

    trusted = (directory or config_dir()) / TRUSTED_DIR
    _ensure_dir(trusted)
    write_atomic(trusted / f"{key_id(public)}.name", name.encode("utf-8") + b"\n", 0o600)


def revoke_key(wanted: str, directory: Path | None = None) -> str:
    """Stop accepting the key whose id starts with `wanted`; its public key moves to revoked/
    (so it can be named later). Returns the full key id; GraphError if none or several match."""
    directory = directory or config_dir()
    known = {key_id(load_public_key(p)): p for p in (directory / TRUSTED_DIR).glob("*.pub")}
    own = directory / PUBLIC_NAME
    if own.exists():
        known.setdefault(key_id(load_public_key(own)), own)
    matches = sorted(k for k in known if k.startswith(wanted))
    if len(matches) != 1:
        raise GraphError(f"no key id starts with {wanted!r}" if not matches else
                         f"{wanted!r} matches several keys: {', '.join(matches)}")
    revoked = directory / REVOKED_DIR
    _ensure_dir(revoked)
    _write_exclusive(revoked / f"{matches[0]}.pub", known[matches[0]].read_bytes())
    if known[matches[0]].parent.name == TRUSTED_DIR:
        known[matches[0]].unlink()
    return matches[0]
