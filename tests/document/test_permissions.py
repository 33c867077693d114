"""execute_allowed: who may run a document."""

from __future__ import annotations

import getpass

import pytest

from maml.document.permissions import execute_allowed


def meta(execute):
    return {"permissions": {"read": None, "write": None, "execute": execute}}


@pytest.mark.parametrize("execute, principal, allowed", [
    (True, None, True), (None, None, True), (False, "root", False),
    (["agent://*"], "agent://planner", True), (["agent://*"], "alice", False),
    (["alice", "bob"], "bob", True), (["public"], "anyone-at-all", True), (["*"], "x", True),
    (["admin"], "admin", True), (["admin"], "administrator", False),
    (["gateway://localhost"], "gateway://localhost", True),
])
def test_matrix(execute, principal, allowed):
    ok, reason = execute_allowed(meta(execute), principal)
    assert ok is allowed and reason


def test_no_permissions_key_allows():
    assert execute_allowed({}, "x")[0] is True


def test_refusal_says_how_to_run(monkeypatch):
    monkeypatch.delenv("MAML_PRINCIPAL", raising=False)
    ok, reason = execute_allowed(meta(["agent://ops"]), None)
    assert not ok
    assert "--as PRINCIPAL" in reason and "MAML_PRINCIPAL" in reason
    assert repr(getpass.getuser()) in reason
    assert "execute: true" in execute_allowed(meta(False))[1]


def test_principal_from_environment(monkeypatch):
    monkeypatch.setenv("MAML_PRINCIPAL", "agent://ops")
    assert execute_allowed(meta(["agent://ops"]))[0] is True
    assert execute_allowed(meta(["agent://ops"]), "someone-else")[0] is False


def test_os_user_is_the_default(monkeypatch):
    monkeypatch.delenv("MAML_PRINCIPAL", raising=False)
    assert execute_allowed(meta([getpass.getuser()]))[0] is True
