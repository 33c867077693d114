"""The parser: sections, blocks, spans, history, schemas, and content that must never raise."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from maml.document.body import section_name
from maml.document.model import Diagnostic, Document
from maml.document.parser import parse
from maml.document.validate import validate

DOC = """---
maml_version: "1.0"
pipeline:
  - id: bell
    kind: quantum
    params: {shots: 10}
  - id: post
    needs: [bell]
---
# A title

## 🧠 Intent
Measure a Bell pair.

## Code-Blocks
```qasm {id=bell_qasm step=bell}
OPENQASM 2.0;
```

```python {#post needs=[bell] device="cuda:0"}
def run(inputs, params, ctx):
    return inputs
```

## Input_Schema
{"type": "object",
 "properties": {"shots": {"type": "integer"}}}

## History
- 2025-03-01T10:00:00Z: [CREATE] first
- 2025-03-02: [RUN] second
"""


def test_sections_blocks_and_spans():
    doc = parse(DOC, path="x.maml.md")
    assert doc.title == "A title"
    assert [s.name for s in doc.sections] == ["Intent", "Code_Blocks", "Input_Schema", "History"]
    assert doc.sections[0].title == "🧠 Intent" and doc.sections[0].span.line == 12
    qasm, post = doc.code_blocks
    assert (qasm.lang, qasm.id, qasm.attrs["step"], qasm.span.line) == ("qasm", "bell_qasm",
                                                                        "bell", 16)
    assert qasm.executable_kind == "quantum" and qasm.body == "OPENQASM 2.0;\n"
    assert post.id == "post" and post.attrs["needs"] == ["bell"]
    assert post.attrs["device"] == "cuda:0" and post.body_line == 21
    assert doc.input_schema == {"type": "object", "properties": {"shots": {"type": "integer"}}}
    assert [(h.timestamp, h.event, h.text, h.span.line) for h in doc.history] == [
        ("2025-03-01T10:00:00Z", "CREATE", "first", 30), ("2025-03-02", "RUN", "second", 31)]
    assert doc.key_spans[("pipeline", 1, "needs")].line == 8
    assert doc.key_spans[("pipeline", 0, "params", "shots")].line == 6
    assert doc.key_spans[("pipeline", 1, "needs", 0)].column == 13
    # no `permissions`: the python step is one `maml run` refuses, at its line
    assert [(d.code, d.line) for d in validate(doc) if d.severity != "info"] == [("MAML-V319", 7)]


@pytest.mark.parametrize("title, name", [
    ("Code Blocks", "Code_Blocks"), ("code_blocks", "Code_Blocks"), ("💻 Code-Blocks", "Code_Blocks"),
    ("📥 Input Schema", "Input_Schema"), ("Output_Schema:", "Output_Schema"),
    ("📜 History", "History"), ("Deployment notes", "Deployment notes")])
def test_section_names(title, name):
    assert section_name(title) == name


def test_policy_on_key_is_not_a_boolean():
    doc = parse('---\nmaml_version: "1"\npolicy:\n  on:\n    oom: [cpu]\n---\n')
    assert doc.meta["policy"] == {"on": {"oom": ["cpu"]}}
    assert doc.key_spans[("policy", "on", "oom")].line == 5


def test_crlf_and_bom_keep_line_numbers():
    text = "\ufeff---\r\nmaml_version: \"1.0\"\r\npolicy:\r\n  timeout: soon\r\n---\r\n"
    diagnostics = validate(parse(text.encode("utf-8")))
    assert ("MAML-V306", 4) in {(d.code, d.line) for d in diagnostics}
    assert {"MAML-P102", "MAML-P103"} <= {d.code for d in diagnostics}


def test_non_utf8_names_offset_and_line():
    data = b'---\nmaml_version: "1.0"\n---\n## Context\nna\xefve\n'
    doc = parse(data)
    (bad,) = [d for d in doc.diagnostics if d.code == "MAML-P101"]
    offset = data.index(b"\xef")
    assert bad.line == 5 and f"byte offset {offset}" in bad.message
    assert "\ufffd" in doc.source


def test_alias_bomb_is_refused_before_any_node_is_built(monkeypatch):
    from maml.document import yamlload

    class NoComposer:
        def __init__(self, *args):
            raise AssertionError("the alias bomb reached the composer")
    monkeypatch.setattr(yamlload, "_SpanLoader", NoComposer)
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for prev, name in zip("abcdefgh", "bcdefghi"):
        lines.append(f"{name}: &{name} [" + ",".join([f"*{prev}"] * 9) + "]")
    doc = parse("---\n" + "\n".join(lines) + "\n---\n")
    diagnostics = validate(doc)
    assert "MAML-P115" in {d.code for d in diagnostics}
    assert doc.front_matter == {}


def test_deep_nesting_does_not_crash_libyaml():
    # 30 000 nested brackets make libyaml's C composer overflow the stack (a segfault)
    doc = parse("---\na: " + "[" * 30000 + "]" * 30000 + "\n---\n")
    assert [d.code for d in doc.diagnostics if d.severity == "error"] == ["MAML-P115"]


def test_fifty_megabyte_document_is_bounded(tmp_path, monkeypatch):
    from maml.document import body

    def no_body(*args):
        raise AssertionError("the body of a 50 MB document was parsed")
    monkeypatch.setattr(body, "read_body", no_body)
    path = tmp_path / "big.maml.md"
    chunk = "## Context\nSome text with `code` and more words.\n\n```python\nprint(1)\n```\n\n"
    with open(path, "w") as handle:
        handle.write('---\nmaml_version: "1.0"\nid: big\n---\n')
        handle.write(chunk * (50_000_000 // len(chunk)))
    from maml.document.parser import parse_file
    doc = parse_file(path)
    diagnostics = validate(doc)
    assert "MAML-P106" in {d.code for d in diagnostics if d.severity == "error"}
    assert doc.meta["id"] == "big" and doc.blocks == []


def _assert_only_diagnostics(doc: Document) -> None:
    assert isinstance(doc, Document)
    assert all(isinstance(d, Diagnostic) for d in validate(doc))


@settings(max_examples=150)
@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=400)
       | st.binary(max_size=300))
def test_random_text_never_raises(data):
    _assert_only_diagnostics(parse(data))
    _assert_only_diagnostics(parse(b"---\n" + (data if isinstance(data, bytes) else
                                               data.encode()) + b"\n---\n## Code_Blocks\n"))


JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=10), children, max_size=4), max_leaves=20)
FRONT_KEYS = st.sampled_from(["maml_version", "id", "permissions", "policy", "pipeline",
                              "faults", "requires", "created_at", "schema", "version", "x"])


@settings(max_examples=150)
@given(st.dictionaries(FRONT_KEYS, JSONISH, max_size=6) | JSONISH)
def test_random_yaml_never_raises(value):
    text = "---\n" + yaml.safe_dump(value, allow_unicode=True) + "---\n## Code_Blocks\n"
    _assert_only_diagnostics(parse(text))


@settings(max_examples=60)
@given(st.lists(st.fixed_dictionaries({"id": st.sampled_from(["a", "b", "c", 1, ""])}, optional={
    "needs": st.lists(st.sampled_from(["a", "b", "c", "z"]), max_size=3) | st.text(max_size=3),
    "kind": st.sampled_from(["python", "llm", "nope", 3]), "block": st.text(max_size=3),
    "device": JSONISH, "memory": JSONISH, "policy": JSONISH, "params": JSONISH}), max_size=4))
def test_random_pipelines_never_raise(pipeline):
    text = "---\n" + yaml.safe_dump({"maml_version": "1", "pipeline": pipeline}) + "---\n"
    _assert_only_diagnostics(parse(text))


def test_toml_front_matter_means_what_the_yaml_form_means():
    toml = ('+++\nmaml_version = "1.0"\n[permissions]\nexecute = true\n[policy]\nretries = 0\n'
            'on = {oom = ["cpu"]}\n[[pipeline]]\nid = "a"\nblock = "a"\n+++\n'
            '## Code_Blocks\n```python {id=a}\nresult = 1\n```\n')
    yaml_text = ('---\nmaml_version: "1.0"\npermissions: {execute: true}\npolicy:\n  retries: 0\n'
                 '  "on": {oom: [cpu]}\npipeline:\n  - {id: a, block: a}\n---\n'
                 '## Code_Blocks\n```python {id=a}\nresult = 1\n```\n')
    from_toml, from_yaml = parse(toml), parse(yaml_text)
    assert from_toml.meta == from_yaml.meta and validate(from_toml) == []
    assert from_toml.key_spans[("policy", "retries")].line == 6
    assert from_toml.key_spans[("pipeline", 0, "block")].line == 10
    from maml.runtime.plan import build_plan
    assert build_plan(from_toml).steps["a"].policy.retries == 0   # not the default 3


def test_bad_toml_is_located():
    doc = parse('+++\nmaml_version = "1.0"\nretries = zero\n+++\n')
    (bad,) = [d for d in doc.diagnostics if d.severity == "error"]
    assert (bad.code, bad.line) == ("MAML-P113", 3) and "TOML" in bad.message


def test_a_large_plain_front_matter_is_not_an_alias_bomb():
    steps = "".join(f"  - {{id: s{i}, kind: python}}\n" for i in range(20_000))
    doc = parse(f'---\nmaml_version: "1.0"\npipeline:\n{steps}---\n')
    assert not [d for d in doc.diagnostics if d.severity == "error"]
    assert len(doc.meta["pipeline"]) == 20_000


def test_one_large_scalar_aliased_many_times_is_refused():
    big = "x" * 200_000
    text = f'---\nbig: &b "{big}"\nmany: [' + ", ".join(["*b"] * 200) + "]\n---\n"
    doc = parse(text)
    assert [d.code for d in doc.diagnostics if d.severity == "error"] == ["MAML-P115"]


CORPUS = sorted(p.read_text(encoding="utf-8", errors="replace") for pattern in
                ("documents/**/*.maml.md", "tests/fixtures/*.maml.md")
                for p in Path(__file__).resolve().parents[2].glob(pattern))
MUTATION = st.tuples(st.integers(0, 10_000), st.integers(0, 40),
                     st.sampled_from(["", "{", "}", "[", "]", ":", "=", ",", "\t", "\n", "---",
                                      "+++", "```", "~~~", "&a ", "*a", "needs", '"', "'", "#",
                                      "{id=x needs=,}", "\x00", "\ufeff", "- ", "  "]))


@settings(max_examples=120)
@given(st.sampled_from(CORPUS), st.lists(MUTATION, min_size=1, max_size=6))
def test_mutated_documents_never_raise(text, mutations):
    """A bounded mutation fuzz of the shipped documents and fixtures: parse + validate
    return diagnostics whatever the bytes (bench/fuzz.py runs it for longer)."""
    for position, cut, insert in mutations:
        position %= len(text) + 1
        text = text[:position] + insert + text[position + cut:]
    _assert_only_diagnostics(parse(text, path="fuzz.maml.md"))


@settings(max_examples=150)
@given(st.dictionaries(st.text(max_size=8).filter(lambda k: k.lower() not in (
    "y", "n", "yes", "no", "on", "off", "true", "false")), JSONISH, max_size=6))
def test_the_fast_constructor_builds_what_pyyaml_builds(value):
    from maml.document.yamlload import load

    plain = "when: 2025-01-02T03:04:05Z\nsexa: 1:30\nhex: 0x1F\nnone: ~\n" + \
        (yaml.safe_dump(value, allow_unicode=True) if value else "")
    for text in (plain, "merged:\n  <<: {a: 1}\n  b: 2\n" + plain):   # fast path, PyYAML's
        loaded = load(text, 1)
        assert loaded.ok and loaded.data == yaml.safe_load(text)
