"""The bearer token that guards every request, and the principal it stands for.

The token is made on the first start and kept in the user's config dir (the one that holds
maml's signing key: $MAML_CONFIG_DIR or platformdirs') as `serve-token.json`, mode 0600:
`{"token": "...", "principal": "<user name>"}`. `MAML_SERVE_TOKEN` overrides it (its
principal: `MAML_SERVE_PRINCIPAL`, else the user name). Requests carry it as
`Authorization: Bearer <token>`; the dashboard gets it once through `/?token=...` and keeps
it in an HttpOnly, SameSite=Strict cookie (so EventSource and plain links work, and no other
site can make the browser use it).
"""

from __future__ import annotations

import getpass
import hmac
import ipaddress
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from maml._files import write_synced

TOKEN_FILE = "serve-token.json"
ENV_TOKEN = "MAML_SERVE_TOKEN"
ENV_PRINCIPAL = "MAML_SERVE_PRINCIPAL"


@dataclass(frozen=True)
class Credentials:
    token: str
    principal: str
    source: str          # the file it came from, or "$MAML_SERVE_TOKEN"

    def accepts(self, presented: str | None) -> bool:
        return bool(presented) and hmac.compare_digest(presented.encode(), self.token.encode())


def user_name() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid{os.getuid()}"


def token_path() -> Path:
    from maml.graph.keys import config_dir

    return config_dir() / TOKEN_FILE


def load_or_create() -> Credentials:
    """The service's credentials: $MAML_SERVE_TOKEN, else the token file (made if absent)."""
    env = os.environ.get(ENV_TOKEN)
    if env:
        return Credentials(env, os.environ.get(ENV_PRINCIPAL) or user_name(), f"${ENV_TOKEN}")
    path = token_path()
    if not path.exists():
        _create(path)
    data = json.loads(path.read_text(encoding="utf-8"))
    return Credentials(str(data["token"]), str(data.get("principal") or user_name()), str(path))


def _create(path: Path) -> None:
    """Write a new token file with mode 0600; a concurrent first start keeps the other's."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    body = json.dumps({"token": secrets.token_urlsafe(32), "principal": user_name()})
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    write_synced(tmp, body.encode("utf-8"), 0o600)
    try:
        os.link(tmp, path)    # atomic, never replaces: no half-written token is ever read
    except FileExistsError:
        pass
    finally:
        tmp.unlink()


def is_loopback(host: str) -> bool:
    """True for localhost and loopback addresses (127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def open_access() -> Credentials:
    """`maml serve --no-token` (loopback only): every request is accepted as the user."""
    return _OpenAccess("", user_name(), "--no-token")


class _OpenAccess(Credentials):
    def accepts(self, presented: str | None) -> bool:
        return True
