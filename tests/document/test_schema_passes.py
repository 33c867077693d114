"""The schema-pass cache (maml.document.schema_passes): a remembered pass never changes what
`validate` reports, only whether jsonschema runs; errors are never remembered."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import maml
from maml.document import schema_passes

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTS = sorted([*ROOT.joinpath("documents").rglob("*.maml.md"),
                    *ROOT.joinpath("tests", "fixtures").rglob("*.maml.md")])


def _report(path: Path) -> list[tuple]:
    return [(d.code, d.severity, d.line, d.message) for d in maml.validate(maml.load(path))]


@pytest.fixture
def state(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("MAML_STATE_DIR", str(tmp_path / "state"))
    return tmp_path / "state" / "schema-passes"


def test_every_document_reports_the_same_with_a_cold_and_a_warm_cache(state, monkeypatch):
    cold = {path: _report(path) for path in DOCUMENTS}
    assert state.is_file()                                  # some passed, and were noted
    warm = {path: _report(path) for path in DOCUMENTS}
    monkeypatch.setattr(schema_passes, "passed", lambda key: False)
    uncached = {path: _report(path) for path in DOCUMENTS}
    assert warm == cold == uncached
    assert any(codes for codes in uncached.values())         # the fixtures do have errors


def test_only_passes_are_remembered(state, tmp_path):
    bad = tmp_path / "bad.maml.md"
    bad.write_text('---\nmaml_version: "1.0"\npolicy: {retries: "many"}\n---\n# Bad\n\n'
                   "```python {id=a}\nx = 1\n```\n")
    first = _report(bad)                     # the schema's error, stated by a V-code
    assert any(code == "MAML-V316" for code, *_ in first)
    assert not state.exists() or state.read_bytes() == b""
    assert _report(bad) == first
    io = ROOT / "tests" / "fixtures" / "bad_io_schemas.maml.md"        # S203: metaschema
    assert any(code == "MAML-S203" for code, *_ in _report(io))
    assert not state.exists() or state.read_bytes() == b""


def test_a_changed_front_matter_is_checked_again(state, tmp_path):
    doc = tmp_path / "doc.maml.md"
    doc.write_text('---\nmaml_version: "1.0"\npermissions: {execute: true}\n'
                   'policy: {retries: 2}\n---\n# Doc\n\n'
                   "```python {id=a}\nx = 1\n```\n")
    assert not [d for d in _report(doc) if d[1] == "error"]
    assert len(state.read_bytes().split()) == 1
    doc.write_text(doc.read_text().replace("retries: 2", 'retries: "many"'))
    assert any(code == "MAML-V316" for code, *_ in _report(doc))


def test_a_warm_validate_does_not_import_jsonschema(state, tmp_path):
    doc = ROOT / "documents" / "chain.maml.md"
    probe = ("import sys, maml; d = maml.validate(maml.load(sys.argv[1])); "
             "print(len(d), 'jsonschema' in sys.modules)")
    env = dict(os.environ, MAML_STATE_DIR=str(state.parent))
    runs = [subprocess.run([sys.executable, "-c", probe, str(doc)], capture_output=True,
                           text=True, env=env, timeout=120, check=True).stdout.split()
            for _ in range(2)]
    assert runs[0] == [runs[0][0], "True"] and runs[1] == [runs[0][0], "False"]


def test_a_broken_or_unwritable_cache_is_only_a_miss(state, tmp_path):
    doc = ROOT / "documents" / "chain.maml.md"
    expected = _report(doc)
    state.write_bytes(b"\x00garbage\nnot a key\n")
    assert _report(doc) == expected
    state.unlink()
    state.mkdir()                                     # neither readable nor writable as a file
    assert _report(doc) == expected


def test_the_key_covers_what_is_checked_and_what_it_is_checked_against(state, monkeypatch,
                                                                       tmp_path):
    one = schema_passes.key({"front_matter": {"a": 1}})
    assert one == schema_passes.key({"front_matter": {"a": 1}})
    assert one != schema_passes.key({"front_matter": {"a": 2}})
    assert schema_passes.key({"x": float("nan")}) is None           # never a key: runs
    import shutil

    from maml import schemas

    copy = tmp_path / "schemas"
    shutil.copytree(schemas.schemas_dir(), copy)
    (copy / "policy.json").write_text((copy / "policy.json").read_text().replace(
        '"retries"', '"retries_"', 1))
    monkeypatch.setattr(schemas, "schemas_dir", lambda: copy)
    schema_passes._against.cache_clear()
    try:
        assert schema_passes.key({"front_matter": {"a": 1}}) != one
    finally:
        schema_passes._against.cache_clear()


def test_the_cache_stays_bounded(state):
    for n in range(schema_passes.MAX_KEYS + 10):
        schema_passes.remember(f"{n:064x}")
    keys, last = state.read_bytes().split(), f"{schema_passes.MAX_KEYS + 9:064x}"
    assert len(keys) <= schema_passes.MAX_KEYS and keys[-1] == last.encode()
    assert schema_passes.passed(last) and not schema_passes.passed(f"{0:064x}")
