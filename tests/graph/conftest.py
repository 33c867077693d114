"""Fixtures for the graph tests: a private config dir, so keys never touch the user's real one
or the repository."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def config_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    directory = tmp_path / "config"
    monkeypatch.setenv("MAML_CONFIG_DIR", str(directory))
    monkeypatch.delenv("MAML_GRAPH", raising=False)
    return directory


@pytest.fixture
def key(config_dir: Path):
    from maml.graph import keys

    return keys.create_key(config_dir)
