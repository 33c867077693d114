"""The fence info-string attribute parser."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from maml.document.attrs import parse_attrs, split_info


@pytest.mark.parametrize("info, lang, attrs", [
    ("python {id=post step=post needs=[bell, enc]}", "python",
     {"id": "post", "step": "post", "needs": ["bell", "enc"]}),
    ("python{id=x}", "python", {"id": "x"}),
    ('bash {#setup .slow title="two words" needs=["a b", c] dry}', "bash",
     {"id": "setup", "classes": ["slow"], "title": "two words", "needs": ["a b", "c"], "dry": True}),
    ("qasm id=bell", "qasm", {"id": "bell"}),
    ("{id=only}", "", {"id": "only"}),
    ("json", "json", {}),
    ("python {needs=[]}", "python", {"needs": []}),
])
def test_reads_attributes(info, lang, attrs):
    found_lang, text = split_info(info)
    assert found_lang == lang
    assert parse_attrs(text) == (attrs, [])


@pytest.mark.parametrize("text, problem", [
    ("needs=[a, b", "no closing ']'"), ('title="open', "no closing"), ("id=", "no value"),
    ("=x", "is not key=value"), ("# x", "not followed by a name")])
def test_reports_what_it_cannot_read(text, problem):
    _, problems = parse_attrs(text)
    assert any(problem in p for p in problems), problems


@given(st.text(max_size=80))
def test_never_raises(text):
    attrs, problems = parse_attrs(split_info(text)[1])
    assert isinstance(attrs, dict) and all(isinstance(p, str) for p in problems)
