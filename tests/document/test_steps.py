"""One reading of the steps: what `maml validate` accepts, `maml run` plans, and what the
planner refuses, validate reports at the same line."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from maml.document.parser import parse, parse_file
from maml.document.steps import read_steps
from maml.document.validate import validate
from maml.document.permissions import authorize_document
from maml.errors import DocumentError, RefusedError
from maml.runtime.plan import build_plan

ROOT = Path(__file__).resolve().parents[2]
CORPUS = sorted([*ROOT.glob("documents/**/*.maml.md"), *ROOT.glob("tests/fixtures/*.maml.md")])


def assert_agree(doc) -> None:
    """validate valid => plans; the planner refuses => validate has an error at that line
    (or, for a document with no step at all, its V315 warning there)."""
    errors = {(d.line, d.code) for d in validate(doc)
              if d.severity == "error" or d.code == "MAML-V315"}
    try:
        plan = build_plan(doc)
    except DocumentError as exc:
        assert exc.line in {line for line, _ in errors}, (exc.format(), sorted(errors))
        return
    assert set(plan.steps) == {s.id for s in read_steps(doc).steps}
    for step in plan.steps.values():   # the order is topological
        assert all(list(plan.steps).index(n) < list(plan.steps).index(step.id)
                   for n in step.needs)
    assert_gate_agrees(doc)


def assert_gate_agrees(doc) -> None:
    """What the run's document gate refuses whoever runs it (unreadable permissions, a code
    step nobody may run), validate reports as an error at that line (MAML-V320/V319); and
    validate reports neither when the gate lets the document through."""
    refused = {(d.line, d.code) for d in validate(doc)
               if d.code in ("MAML-V319", "MAML-V320") and d.severity == "error"}
    try:
        authorize_document(doc)
    except RefusedError as exc:
        assert (exc.line, exc.message.rsplit("[", 1)[1].rstrip("]")) in refused, exc.format()
        return
    assert not refused, sorted(refused)


@pytest.mark.parametrize("path", CORPUS, ids=lambda p: str(p.relative_to(ROOT)))
def test_validate_and_plan_agree_on_every_shipped_and_fixture_document(path):
    assert_agree(parse_file(path))


def _doc(front: dict, body: str = "") -> str:
    return "---\n" + yaml.safe_dump(front, sort_keys=False) + "---\n# t\n\n## Code_Blocks\n\n" + \
        textwrap.dedent(body)


IDS = st.sampled_from(["a", "b", "c", "d"])
POLICY = st.fixed_dictionaries({}, optional={
    "retries": st.sampled_from([0, 2, -1, "3", True]),
    "timeout": st.sampled_from(["10m", "0.5s", "none", None, "soon", 3, "1:30"]),
    "backoff": st.sampled_from(["0.5s", {"initial": "1s"}, {"factor": 0.5}, {"speed": 1}, 2]),
    "on": st.sampled_from([{"oom": ["cpu"]}, {"oom": "retry"}, {"oomm": ["cpu"]},
                           {"hang": ["pray"]}, ["retry"]]),
    "on_exhausted": st.sampled_from(["skip", "explode"]),
    "max_errors": st.sampled_from([0, 5, 2.5]),
    "breaker": st.sampled_from([{"failures": 2}, {"failures": 0}, {"open": 1}]),
    "retires": st.just(3)})
STEP = st.fixed_dictionaries({"id": st.one_of(IDS, st.sampled_from([1, True, "", None]))},
                             optional={
    "kind": st.sampled_from(["python", "shell", "quantm", 3]),
    "block": st.sampled_from(["a", "b", "zz", 7]),
    "needs": st.one_of(IDS, st.lists(st.one_of(IDS, st.just(5)), max_size=3)),
    "device": st.sampled_from(["cpu", "gpu:1", ["cuda", "cpu"], "tpu", [], 3]),
    "params": st.sampled_from([{}, {"batch_size": 2}, {"batch_size": 0}, [1], "x"]),
    "memory": st.sampled_from(["4GiB", "lots"]),
    "files": st.sampled_from([["*.csv"], "a.txt", [3]]),
    "policy": POLICY})
PERMISSIONS = st.sampled_from([{"execute": True}, None, {"execute": False}, ["read"],
                               {"execute": ["nobody-here"]}, {"Execute": True}])
FENCE_ATTRS = st.sampled_from(["", "{id=a}", "{id=b needs}", "{id=c needs=[a]}", "{#d}",
                               "{id=a needs=[zz]}", "{step=b needs=[]}", "{id=x needs=,}",
                               "{device=tpu}", "{id=b needs=[c]}", "{id=c needs=b}"])


@settings(max_examples=120)
@given(st.one_of(st.none(), st.lists(STEP, max_size=4), st.just("not a list")),
       st.lists(st.tuples(st.sampled_from(["python", "bash", "yaml", "{python}"]), FENCE_ATTRS),
                max_size=4),
       st.one_of(st.none(), POLICY), PERMISSIONS)
def test_validate_and_plan_agree_on_generated_pipelines(pipeline, fences, policy, permissions):
    front: dict = {"maml_version": "1.0", "permissions": permissions}
    if pipeline is not None:
        front["pipeline"] = pipeline
    if policy is not None:
        front["policy"] = policy
    body = "".join(f"```{lang} {attrs}\nresult = 1\n```\n\n" for lang, attrs in fences)
    assert_agree(parse(_doc(front, body), path="gen.maml.md"))


def errors_of(text: str) -> list[tuple[str, int]]:
    return [(d.code, d.line) for d in validate(parse(text)) if d.severity == "error"]


def test_a_bare_needs_attribute_is_reported_by_both():
    text = _doc({"maml_version": "1", "permissions": {"execute": True}}, """\
        ```python {id=first}
        result = 1
        ```

        ```python {id=second needs}
        result = 2
        ```
        """)
    assert errors_of(text) == [("MAML-V318", 14)]
    with pytest.raises(DocumentError, match="`needs` has no value") as caught:
        build_plan(parse(text))
    assert caught.value.line == 14


def test_a_bare_duration_backoff_is_one_grammar():
    text = _doc({"maml_version": "1", "permissions": {"execute": True}, "policy": {"backoff": "0.5s"},
                 "pipeline": [{"id": "a", "block": "a", "policy": {"backoff": "2s"}}]},
                "```python {id=a}\nresult = 1\n```\n")
    assert errors_of(text) == []
    assert build_plan(parse(text)).steps["a"].policy.backoff.initial == 2.0


def test_policy_problems_are_located_with_did_you_mean():
    text = _doc({"maml_version": "1", "policy": {"retires": 3, "backoff": {"factr": 2},
                                                 "on": {"oom": ["halve_bach"]}}})
    found = [d for d in validate(parse(text)) if d.severity == "error"]
    assert [(d.code, d.line) for d in found] == [("MAML-V316", 4), ("MAML-V316", 6),
                                                 ("MAML-V308", 9)]
    assert "did you mean 'retries'?" in found[0].message
    assert "did you mean 'factor'?" in found[1].message


def test_a_cycle_names_its_steps_in_needs_order_and_is_bounded():
    steps = [{"id": f"s{i}", "kind": "python", "needs": [f"s{(i + 1) % 30}"]} for i in range(30)]
    (cycle,) = [d for d in validate(parse(_doc({"maml_version": "1", "pipeline": steps})))
                if d.code == "MAML-V303"]
    assert cycle.message.startswith("the steps' needs form a cycle: s0 -> s1 -> s2 -> ")
    assert "... and 11 more" in cycle.message and cycle.line == 6


def test_duplicate_implicit_step_ids_are_an_error_in_both():
    text = _doc({"maml_version": "1", "permissions": {"execute": True}},
                "```python {id=a}\nresult = 1\n```\n\n"
                                       "```bash {id=a}\necho\n```\n")
    assert ("MAML-V301", 14) in errors_of(text)
    with pytest.raises(DocumentError, match="already used"):
        build_plan(parse(text))


TOY_KIND = '''
from maml.kinds import Kind


class ToyKind(Kind):
    name = "toy"
    params_schema = {"type": "object", "additionalProperties": False, "required": ["n"],
                     "properties": {"n": {"type": "integer", "minimum": 1}}}

    executes_code = False      # it runs no code from the document (the default fails closed)

    def run(self, ctx, step):
        return step.params["n"] * 2
'''


@pytest.fixture
def toy_kind(tmp_path, monkeypatch):
    """A plugin kind installed the way pip installs one: its module, and a dist-info whose
    entry_points.txt registers it in the `maml.kinds` group. Nothing in maml changes."""
    from maml import kinds

    (tmp_path / "maml_toy.py").write_text(TOY_KIND)
    dist = tmp_path / "maml_toy-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: maml-toy\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[maml.kinds]\ntoy = maml_toy:ToyKind\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    for cached in (kinds._plugins, kinds.get_kind):
        cached.cache_clear()
    yield
    sys.modules.pop("maml_toy", None)
    for cached in (kinds._plugins, kinds.get_kind):
        cached.cache_clear()


def test_a_plugin_kind_is_found_validated_and_planned_through_its_entry_point(toy_kind):
    from maml.kinds import get_kind, kind_names

    assert "toy" in kind_names() and get_kind("toy").__name__ == "ToyKind"
    good = _doc({"maml_version": "1", "pipeline": [{"id": "t", "kind": "toy",
                                                    "params": {"n": 3}}]})
    assert errors_of(good) == []
    assert build_plan(parse(good)).steps["t"].kind == "toy"
    bad = good.replace("n: 3", "n: 0\n    m: 1")
    found = {(d.code, d.line) for d in validate(parse(bad))}
    assert {("MAML-S201", 7), ("MAML-S202", 8)} <= found


def test_each_builtin_kind_has_one_params_schema_its_shipped_file():
    from maml.kinds import BUILTIN_KINDS, get_kind, params_schema
    from maml.schemas import load_schema

    for name in BUILTIN_KINDS:
        cls = get_kind(name)
        assert cls.params_schema == f"{name}.json"
        assert params_schema(cls) == load_schema(f"kinds/{name}")
