"""Who may run a document: `permissions.execute` read against a principal.

    execute: true / absent       anyone may run it
    execute: false               nobody may
    execute: admin               a principal, or a list of them; fnmatch patterns such as
    execute: [agent://*, alice]  agent://* match; "*", "all", "public", "everyone" match anyone

The principal is the caller's `--as PRINCIPAL`, else $MAML_PRINCIPAL, else the OS user name.
A principal list naming `admin` or `root` matches an OS user of that name (and only that).
"""

from __future__ import annotations

import fnmatch
import getpass
import os
from typing import Any

ANYONE = frozenset({"*", "all", "public", "everyone", "any", "anyone"})


def current_principal(principal: str | None = None) -> str:
    """`principal`, else $MAML_PRINCIPAL, else the OS user name ("unknown" if there is none)."""
    if principal:
        return principal
    if os.environ.get("MAML_PRINCIPAL"):
        return os.environ["MAML_PRINCIPAL"]
    try:
        return getpass.getuser()
    except (OSError, KeyError, ImportError):  # no user name in a bare container
        return "unknown"


def execute_principals(meta: dict[str, Any]) -> bool | list[str] | None:
    """permissions.execute from normalised meta: True/False, a list of principals, or None."""
    permissions = meta.get("permissions") or {}
    value = permissions.get("execute") if isinstance(permissions, dict) else None
    if isinstance(value, str):
        return [value]
    return value


def execute_allowed(meta: dict[str, Any], principal: str | None = None) -> tuple[bool, str]:
    """Whether `principal` may run the document, and a reason that says how to run it."""
    value = execute_principals(meta)
    if value is None or value is True:
        return True, "permissions.execute allows anyone to run this document"
    if value is False:
        return False, ("permissions.execute is false: this document refuses to run; set "
                       "`permissions: {execute: true}` in its front matter to allow it")
    who = current_principal(principal)
    names = [str(p) for p in value]
    if any(_matches(who, name) for name in names):
        return True, f"principal {who!r} is allowed by permissions.execute {names}"
    return False, (f"permissions.execute allows only {', '.join(names) or 'nobody'}, and you run "
                   f"as {who!r}; run with `--as PRINCIPAL` (or set MAML_PRINCIPAL) as one of "
                   "them, or add yourself to permissions.execute")


def _matches(principal: str, pattern: str) -> bool:
    pattern = pattern.strip()
    if pattern.lower() in ANYONE:
        return True
    return principal == pattern or fnmatch.fnmatchcase(principal, pattern)
