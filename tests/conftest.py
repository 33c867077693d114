"""Fixtures for the whole suite.

Every test session gets its own maml config and state directories, so no test writes keys,
trusted keys or graph witnesses into the real user's directories; subprocesses and spawned
workers inherit the variables. Tests that need their own directories set them again.
"""

from __future__ import annotations

import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

# No per-example deadline and no "too slow" health check: both measure this machine's speed
# (a loaded 2-core CI box is 3x slower than a quiet one), which is not what any test asserts.
settings.register_profile("maml", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("maml")


@pytest.fixture(autouse=True, scope="session")
def _private_maml_dirs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    patch = pytest.MonkeyPatch()
    home = tmp_path_factory.mktemp("maml-home")
    patch.setenv("MAML_CONFIG_DIR", str(home / "config"))
    patch.setenv("MAML_STATE_DIR", str(home / "state"))
    yield
    patch.undo()


@dataclass
class CliResult:
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch):
    """`maml ARGS...` in this process, through the console script's own entry point
    `maml.cli.main(argv)` (the same error handling and exit codes), as
    `cli(*args, cwd=None, env=None) -> CliResult(returncode, stdout, stderr)`. An exception
    that escapes (only with --debug) is printed as the interpreter would, exit 1. What only a
    real process shows (signals, a traceback never printed) stays with subprocess tests."""
    from maml.cli import main

    def invoke(*args: str, cwd: Path | None = None,
               env: dict[str, str] | None = None) -> CliResult:
        if cwd is not None:
            monkeypatch.chdir(cwd)
        for name, value in (env or {}).items():
            monkeypatch.setenv(name, value)
        capsys.readouterr()
        try:
            main(list(args))
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except Exception:  # noqa: BLE001 - what the interpreter does with an uncaught error
            traceback.print_exc()
            code = 1
        out, err = capsys.readouterr()
        return CliResult(code, out, err)
    return invoke
