"""Semantic checks and schema-error placement."""

from __future__ import annotations

from maml.document.parser import parse
from maml.document.validate import validate


def found(text: str) -> set[tuple[str, int]]:
    return {(d.code, d.line) for d in validate(parse(text))}


def messages(text: str, code: str) -> list[str]:
    return [d.message for d in validate(parse(text)) if d.code == code]


def test_cycle_is_named():
    text = ('---\nmaml_version: "1"\npipeline:\n  - {id: a, kind: python, needs: [c]}\n'
            '  - {id: b, kind: python, needs: [a]}\n  - {id: c, kind: python, needs: [b]}\n---\n')
    (message,) = messages(text, "MAML-V303")
    assert "a -> c -> b -> a" in message


def test_vague_schema_error_gives_way_to_the_precise_one():
    text = '---\nmaml_version: "1"\npolicy:\n  on:\n    oom: [halve_bach]\n    hang: retri\n---\n'
    diagnostics = [d for d in validate(parse(text)) if d.severity == "error"]
    assert [(d.code, d.line) for d in diagnostics] == [
        ("MAML-V308", 5), ("MAML-V308", 6)]
    assert "did you mean 'halve_batch'?" in diagnostics[0].message


def test_step_is_attached_to_step_diagnostics():
    text = '---\nmaml_version: "1"\npipeline:\n  - id: s1\n    kind: quantum\n    params: {shots: -1}\n---\n'
    (d,) = [d for d in validate(parse(text)) if d.severity == "error"]
    assert (d.code, d.line, d.step) == ("MAML-S201", 6, "s1")
    assert d.to_dict()["step"] == "s1"


def test_params_of_an_inferred_kind_are_checked():
    text = ('---\nmaml_version: "1"\npipeline:\n  - id: q\n    block: bell\n    params: {shots: -5}\n'
            '---\n## Code_Blocks\n```qasm {id=bell}\nOPENQASM 2.0;\n```\n')
    assert ("MAML-S201", 6) in found(text)


def test_step_without_kind_or_code():
    text = '---\nmaml_version: "1"\npipeline:\n  - id: lonely\n---\n'
    assert ("MAML-V313", 4) in found(text)
    text_yaml_block = text.replace("  - id: lonely\n", "  - {id: s, block: cfg}\n") + \
        "```yaml {id=cfg}\na: 1\n```\n"
    assert ("MAML-V313", 4) in found(text_yaml_block)


def test_block_needs_without_pipeline():
    text = ('---\nmaml_version: "1"\n---\n## Code_Blocks\n```python {id=a}\nx = 1\n```\n'
            '```python {id=b needs=[a, ghost]}\ny = 2\n```\n')
    assert ("MAML-V302", 8) in found(text)


CODE = "## Code_Blocks\n```python\nx = 1\n```\n"


def test_permissions_warn_and_say_who():
    only_ops = '---\nmaml_version: "1"\npermissions:\n  execute: [agent://ops]\n---\n'
    (message,) = messages(only_ops + CODE, "MAML-V311")
    assert "agent://ops" in message and "refuses any other OS user" in message
    assert ("MAML-V311", 4) in found(only_ops + CODE)
    assert not messages(only_ops, "MAML-V311")     # no code step: `execute` decides nothing
    assert not messages('---\nmaml_version: "1"\npermissions: {execute: [public]}\n---\n' + CODE,
                        "MAML-V311")


BELL = "```qasm\nOPENQASM 2.0;\ninclude \"qelib1.inc\";\nqreg q[1];\nh q[0];\n```\n"


def test_code_steps_nobody_may_run_are_errors_at_each_step_saying_how_to_allow_them():
    body = "## Code_Blocks\n```python\ndef run(i, p, c):\n    return 1\n```\n" + BELL + \
        "```bash\necho hi\n```\n"
    for front, fix in [("", "add `permissions: {execute: true}`"),
                       ("permissions: [read]\n", "add `permissions: {execute: true}`"),
                       ("permissions: {execute: false}\n", "set `permissions: {execute: true}`")]:
        text = f'---\nmaml_version: "1"\n{front}---\n' + body
        refused = [d for d in validate(parse(text)) if d.code == "MAML-V319"]
        lines = front.count("\n") + 4
        assert [(d.step, d.line, d.severity) for d in refused] == [
            ("step1", lines + 1, "error"), ("step3", lines + 11, "error")]   # not the QASM step
        assert all(fix in d.message and "`maml run` refuses it" in d.message for d in refused)
    granted = '---\nmaml_version: "1"\npermissions: {execute: true}\n---\n' + body
    assert not messages(granted, "MAML-V319")
    assert not messages('---\nmaml_version: "1"\npermissions: {execute: false}\n---\n' + BELL,
                        "MAML-V319")   # a QASM circuit runs no document code
    assert not messages(CODE, "MAML-V319")   # no front matter: P110 says so, permissions unknown


def test_durations_sizes_and_devices():
    text = ('---\nmaml_version: "1"\npolicy:\n  heartbeat_timeout: 5 sec\n  breaker: {failures: 2, '
            'cooldown: 1.5m}\npipeline:\n  - id: s\n    kind: python\n    device: GPU:1\n'
            '    memory: 4GiB\n---\n')
    assert {c for c, _ in found(text)} & {"MAML-V306", "MAML-V307", "MAML-V310"} == {"MAML-V306"}


def test_nothing_to_run_is_a_warning():
    assert ("MAML-V315", 1) in found('---\nmaml_version: "1"\n---\n# Only prose\n')
