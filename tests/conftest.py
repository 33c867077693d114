"""Fixtures for the whole suite.

Every test session gets its own maml config and state directories, so no test writes keys,
trusted keys or graph witnesses into the real user's directories; subprocesses and spawned
workers inherit the variables. Tests that need their own directories set them again.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True, scope="session")
def _private_maml_dirs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    patch = pytest.MonkeyPatch()
    home = tmp_path_factory.mktemp("maml-home")
    patch.setenv("MAML_CONFIG_DIR", str(home / "config"))
    patch.setenv("MAML_STATE_DIR", str(home / "state"))
    yield
    patch.undo()
