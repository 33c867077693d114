"""Key files: where they live, their modes, first-use creation, replacement."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from maml.errors import GraphError
from maml.graph import keys

REPO = Path(__file__).resolve().parents[2]


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_key_files_are_private_and_in_the_config_dir(config_dir):
    key = keys.create_key()
    assert key.path == config_dir / keys.PRIVATE_NAME
    assert _mode(config_dir) == 0o700
    assert _mode(key.path) == 0o600
    assert _mode(config_dir / keys.PUBLIC_NAME) == 0o600
    assert not key.path.resolve().is_relative_to(REPO)


def test_default_config_dir_is_outside_the_repo(monkeypatch):
    monkeypatch.delenv("MAML_CONFIG_DIR")
    assert not keys.config_dir().resolve().is_relative_to(REPO)


def test_key_id_is_a_fingerprint_of_the_public_key(key):
    reloaded = keys.load_key()
    assert reloaded.id == key.id and len(key.id) == 32
    assert keys.key_id(keys.load_public_key(key.path.with_name(keys.PUBLIC_NAME))) == key.id


def test_init_twice_refuses_and_force_keeps_the_old_key_trusted(key):
    with pytest.raises(GraphError, match="already exists"):
        keys.create_key()
    new = keys.create_key(force=True)
    assert new.id != key.id
    assert set(keys.trusted_public_keys()) == {key.id, new.id}


def test_first_use_creates_a_key_and_says_so_once(config_dir, capsys):
    first = keys.load_or_create_key()
    again = keys.load_or_create_key()
    assert first.id == again.id
    assert capsys.readouterr().err.count("created signing key") == 1


def test_processes_creating_the_key_at_once_share_one_key(config_dir):
    code = "from maml.graph import keys; print(keys.load_or_create_key().id)"
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, env=os.environ.copy())
             for _ in range(4)]
    ids = {proc.communicate(timeout=60)[0].strip() for proc in procs}
    assert len(ids) == 1 and ids == {keys.load_key().id.encode()}


def test_missing_key_is_a_clear_error(config_dir):
    with pytest.raises(GraphError, match="maml keys init"):
        keys.load_key()
