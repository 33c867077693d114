"""Every fixture in tests/fixtures/ gets exactly its expected diagnostics: the whole set of
(code, line), nothing missing and nothing extra."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from maml.document.codes import CODES
from maml.document.parser import parse_file
from maml.document.validate import validate

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
NAMES = sorted(p.name.removesuffix(".maml.md") for p in FIXTURES.glob("*.maml.md"))


def test_every_fixture_has_expectations():
    assert len(NAMES) >= 15
    for name in NAMES:
        assert (FIXTURES / f"{name}.expected.json").is_file(), name


@pytest.mark.parametrize("name", NAMES)
def test_fixture_diagnostics(name):
    expected = json.loads((FIXTURES / f"{name}.expected.json").read_text())
    diagnostics = validate(parse_file(FIXTURES / f"{name}.maml.md"))
    found = sorted({(d.code, d.line) for d in diagnostics})
    assert found == sorted({(item["code"], item["line"]) for item in expected["diagnostics"]})
    errors = [d for d in diagnostics if d.severity == "error"]
    assert (not errors) == expected["valid"], (name, errors)
    for d in diagnostics:
        assert d.code in CODES and d.severity == CODES[d.code][0]
        assert d.path and d.path.endswith(f"{name}.maml.md")
        assert d.message and d.line >= 1 and d.column >= 1
    assert [d.line for d in diagnostics] == sorted(d.line for d in diagnostics)
