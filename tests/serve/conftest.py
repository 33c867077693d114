"""`server`: one real `maml serve` for the whole test session (see serve_helpers)."""

from __future__ import annotations

import pytest

from serve_helpers import Server, serve_process


@pytest.fixture(scope="session")
def server(tmp_path_factory) -> Server:
    running = serve_process(tmp_path_factory.mktemp("serve"))
    yield running
    running.stop()
