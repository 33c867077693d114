"""maml/schemas.py: finding, naming and validating with the shipped schemas."""

from __future__ import annotations

import pytest

from maml import schemas, vocabulary
from maml.errors import UsageError


def test_names_and_resolution():
    names = schemas.schema_names()
    for name in ("front-matter", "policy", "pipeline", "faults", "kinds/python", "kinds/shell",
                 "kinds/llm", "kinds/quantum", "kinds/video"):
        assert name in names
    assert schemas.resolve_name("llm") == schemas.resolve_name("kinds/llm.json") == "kinds/llm"
    with pytest.raises(UsageError, match="no schema named"):
        schemas.resolve_name("nope")


def test_every_schema_is_valid_draft_2020_12_with_its_id():
    from jsonschema import Draft202012Validator

    for name in schemas.schema_names():
        schema = schemas.load_schema(name)
        Draft202012Validator.check_schema(schema)
        assert schema["$id"] == f"https://maml.dev/schemas/{name}.json"


def test_validators_are_built_once():
    assert schemas.validator("policy") is schemas.validator("policy.json")


def test_refs_resolve_across_files():
    errors = list(schemas.validator("pipeline").iter_errors(
        [{"id": "s", "kind": "llm", "params": {"model": "m", "precision": "fp64"},
          "policy": {"timeout": "forever", "backoff": "0.5s"}}]))
    # params are the kind's business (maml.kinds), not the pipeline schema's
    assert sorted(tuple(e.absolute_path) for e in errors) == [(0, "policy", "timeout")]


def test_kind_params_are_checked_through_the_registry():
    from maml.kinds import get_kind

    llm = schemas.params_validator(get_kind("llm"))
    assert [tuple(e.absolute_path) for e in llm.iter_errors({"model": "m", "precision": "fp64"})] \
        == [("precision",)]
    assert schemas.params_validator(get_kind("python")) is schemas.validator("kinds/python")


def test_schema_vocabulary_matches_the_engine():
    policy = schemas.load_schema("policy")
    assert tuple(policy["properties"]["on"]["propertyNames"]["enum"]) == vocabulary.ERROR_CLASSES
    assert tuple(policy["$defs"]["action"]["enum"]) == vocabulary.RECOVERY_ACTIONS
    assert tuple(policy["properties"]["on_exhausted"]["enum"]) == vocabulary.ON_EXHAUSTED
    faults = schemas.load_schema("faults")
    assert tuple(faults["items"]["anyOf"][1]["properties"]["error"]["enum"]) == \
        vocabulary.INJECTABLE_ERRORS


@pytest.mark.parametrize("value, ok", [("10m", True), ("0.5s", True), ("250ms", True), (3, True),
                                       ("10 minutes", False), (-1, False)])
def test_duration_pattern_agrees_with_parse_duration(value, ok):
    common = schemas.validator("common")
    from jsonschema import Draft202012Validator

    duration = Draft202012Validator(common.schema["$defs"]["duration"])
    assert duration.is_valid(value) is ok
    try:
        vocabulary.parse_duration(value)
        parsed = True
    except ValueError:
        parsed = False
    assert parsed is ok


def test_dereferenced_validator_reports_what_the_registry_one_does():
    """The cached validators use an inlined copy of the schemas; it must agree with $refs."""
    from pathlib import Path

    from jsonschema import Draft202012Validator

    from maml.document.parser import parse_file
    from maml.document.yamlload import json_view

    with_refs = Draft202012Validator(schemas.load_schema("front-matter"),
                                     registry=schemas.registry())
    fixtures = Path(__file__).resolve().parent / "fixtures"
    instances = [json_view(parse_file(p).front_matter) for p in sorted(fixtures.glob("*.maml.md"))]
    instances.append({"pipeline": [{"id": "v", "kind": "video", "params": {
        "ops": [{"op": "sobel", "ksize": 2}], "sink": {"codec": "x"}}}],
        "policy": {"backoff": {"jitter": 2}, "on": {"oom": "nope"}}, "faults": [3]})
    for instance in instances:
        def errors(validator):
            return sorted((tuple(e.absolute_path), e.message) for e in validator.iter_errors(instance))
        assert errors(schemas.validator("front-matter")) == errors(with_refs)
    assert errors(with_refs)  # the last instance really is invalid


def _serve_once(tmp_path):
    """A loopback HTTP server that records every request it gets (and answers none)."""
    import socket
    import threading

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.settimeout(0.2)
    seen: list[bytes] = []
    stop = threading.Event()

    def accept():
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            seen.append(conn.recv(1024))   # never answers: a fetch would hang here
    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    return server, seen, stop


def test_remote_and_file_refs_are_located_errors_and_nothing_is_fetched(tmp_path):
    from maml.document.parser import parse
    from maml.document.validate import validate

    server, seen, stop = _serve_once(tmp_path)
    url = f"http://127.0.0.1:{server.getsockname()[1]}/s.json"
    text = ('---\nmaml_version: "1.0"\n---\n## Input_Schema\n```json\n{"type": "object",\n'
            f' "properties": {{"a": {{"$ref": "{url}"}},\n'
            '                "b": {"$ref": "file:///etc/hostname"},\n'
            '                "c": {"$ref": "#/$defs/ok"},\n'
            '                "d": {"$ref": "https://maml.dev/schemas/common.json#/$defs/duration"}},\n'
            ' "$defs": {"ok": {"type": "string"}}}\n```\n')
    try:
        found = [(d.code, d.line) for d in validate(parse(text)) if d.severity == "error"]
        assert found == [("MAML-S204", 7), ("MAML-S204", 8)]
        with pytest.raises(ValueError, match="does not fetch"):
            schemas.instance_errors(parse(text).input_schema, {"a": 1})
    finally:
        stop.set()
        server.close()
    assert seen == []
    ok = {"properties": {"c": {"$ref": "#/$defs/ok"}}, "$defs": {"ok": {"type": "string"}}}
    assert [e.message for e in schemas.instance_errors(ok, {"c": 3})] == \
        ["3 is not of type 'string'"]
