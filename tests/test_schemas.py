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
