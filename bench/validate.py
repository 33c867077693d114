"""Validation speed: maml against the hand-rolled check a user would otherwise write.

    .venv/bin/python bench/validate.py            # --rounds N --cold-runs N --steps N

The peer: python-frontmatter to split the document, jsonschema on the front matter only,
the validator built once (against maml's own front-matter schema, so both check the same
rules for the front matter). It reads no Markdown body, checks no pipeline graph, and gives
no line numbers: it does strictly less work than maml.

1. Throughput: documents validated per second, in-process, over every document under
   documents/ and tests/fixtures/ (held in memory as bytes), median of --rounds rounds.
   Both sides reuse their validators. The alias-bomb fixture is left out of both sets:
   the peer never finishes it (jsonschema walks the 9^9-item expansion); maml refuses it
   in milliseconds (timed separately).
2. Cold start: one fresh process validating one document, median of --cold-runs runs:
   `maml validate X`, the peer as a script, and `python -c pass` as the floor.

3. Scale: parse + validate of a generated document of --steps python steps in a chain (one
   shared block), in-process, median of 3 after a warm-up (issue 12: <= 1 s for 10,000).

What the numbers say (2-core shared machine, see the report for a run): maml's full
validation is ~0.3x the peer's rate because it does ~3x the work; the largest single item is
checking Input_Schema/Output_Schema against the Draft 2020-12 metaschema (~2.7 ms per schema:
jsonschema follows the metaschema's $dynamicRefs), then markdown-it and the bounded YAML
(an extra event pass that refuses alias bombs and deep nesting before any node is built).
Done already: validators built once, the shipped schemas validated from an inlined
(dereferenced) copy (halves jsonschema's time on a front matter), entry points read once.
Cold start is import-bound (python -X importtime): jsonschema ~0.13 s, click ~0.05 s,
markdown-it ~0.045 s, PyYAML ~0.015 s; networkx (0.27 s) is not imported at all (the cycle
check is a 20-line DFS).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
MAML = str(Path(PYTHON).with_name("maml"))
COLD_DOC = ROOT / "documents" / "dialects" / "canonical.maml.md"

PEER = r'''
import sys, json, datetime
import frontmatter
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012
from pathlib import Path

def load_validator(root):
    schemas = [json.loads(p.read_text()) for p in Path(root, "schemas").rglob("*.json")]
    registry = Registry().with_resources(
        (s["$id"], Resource.from_contents(s, DRAFT202012)) for s in schemas)
    main = next(s for s in schemas if s["$id"].endswith("/front-matter.json"))
    return Draft202012Validator(main, registry=registry)

def jsonable(value):
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [jsonable(v) for v in value]
    if isinstance(value, (datetime.date, datetime.datetime)):
        return value.isoformat()
    return value

def check(validator, data):
    try:
        post = frontmatter.loads(data.decode("utf-8", errors="replace"))
        return [e.message for e in validator.iter_errors(jsonable(post.metadata))]
    except Exception as exc:  # what a hand-rolled checker does with bad YAML
        return [str(exc)]
'''


def documents() -> list[tuple[str, bytes]]:
    paths = sorted(ROOT.glob("documents/**/*.md")) + sorted(ROOT.glob("tests/fixtures/*.maml.md"))
    return [(str(p.relative_to(ROOT)), p.read_bytes()) for p in paths
            if p.name != "alias_bomb.maml.md"]


def throughput(docs: list[tuple[str, bytes]], rounds: int) -> dict[str, float]:
    from maml.document.parser import parse
    from maml.document.validate import validate

    peer: dict = {}
    systems = {
        "maml (parse + validate, API)": lambda data, path: validate(parse(data, path=path)),
        "maml, front matter only": front_matter_only,
    }
    try:
        exec(PEER, peer)
    except ImportError:   # python-frontmatter is in the `bench` extra
        print("python-frontmatter is not installed (pip install 'maml-engine[bench]'): "
              "the peer is left out")
    else:
        validator = peer["load_validator"](ROOT)
        systems["python-frontmatter + jsonschema"] = \
            lambda data, path: peer["check"](validator, data)
    for fn in systems.values():  # warm-up: validators built, caches filled
        for path, data in docs:
            fn(data, path)
    rates: dict[str, list[float]] = {name: [] for name in systems}
    for _ in range(rounds):
        for name, fn in systems.items():  # interleaved, so load on the machine hits both
            start = time.perf_counter()
            for path, data in docs:
                fn(data, path)
            rates[name].append(len(docs) / (time.perf_counter() - start))
    return {name: statistics.median(values) for name, values in rates.items()}


def front_matter_only(data: bytes, path: str) -> list:
    """maml doing the peer's job: split, bounded YAML with positions, front-matter schema."""
    from maml.document import layout, source, yamlload
    from maml.schemas import validator

    text, _ = source.decode(data)
    parts = layout.split(text, scan_body=False)
    if parts.yaml_text is None:
        return []
    loaded = yamlload.load(parts.yaml_text, parts.yaml_first_line)
    if not isinstance(loaded.data, dict):
        return loaded.diagnostics
    instance = yamlload.json_view(loaded.data)
    return [e.message for e in validator("front-matter").iter_errors(instance)]


def alias_bomb_ms() -> float:
    from maml.document.parser import parse_file
    from maml.document.validate import validate

    start = time.perf_counter()
    validate(parse_file(ROOT / "tests" / "fixtures" / "alias_bomb.maml.md"))
    return (time.perf_counter() - start) * 1000


def big_document(steps: int) -> str:
    """`steps` python steps, each needing the one before, sharing one block."""
    lines = ['---', 'maml_version: "1.0"', "permissions: {execute: true}", "pipeline:",
             "  - {id: s0, block: b}"]
    lines += [f"  - {{id: s{i}, block: b, needs: [s{i - 1}]}}" for i in range(1, steps)]
    lines += ["---", "## Code_Blocks", "```python {id=b}", "def run(inputs, params, ctx):",
              "    return 1", "```", ""]
    return "\n".join(lines)


def scale(steps: int) -> float:
    from maml.document.parser import parse
    from maml.document.validate import validate

    text = big_document(steps)
    errors = [d for d in validate(parse(text)) if d.severity == "error"]
    if errors:
        raise SystemExit(f"the generated document is invalid: {errors[0].format()}")
    times = []
    for _ in range(3):
        start = time.perf_counter()
        validate(parse(text))
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def cold(command: list[str], runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(command, cwd=ROOT, capture_output=True, check=False)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def peer_script() -> list[str]:
    code = PEER + (f"\nv = load_validator({str(ROOT)!r})\n"
                   "errors = check(v, open(sys.argv[1], 'rb').read())\n"
                   "print(*errors, sep='\\n')\nsys.exit(1 if errors else 0)\n")
    return [PYTHON, "-c", code, str(COLD_DOC)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--cold-runs", type=int, default=15)
    parser.add_argument("--steps", type=int, default=10_000)
    args = parser.parse_args()
    docs = documents()
    rates = throughput(docs, args.rounds)
    floor = cold([PYTHON, "-c", "pass"], args.cold_runs)
    cold_maml = cold([MAML, "validate", str(COLD_DOC)], args.cold_runs)
    has_peer = "python-frontmatter + jsonschema" in rates
    cold_peer = cold(peer_script(), args.cold_runs) if has_peer else float("nan")
    size = sum(len(d) for _, d in docs) / 1024
    print(f"\n{len(docs)} documents ({size:.0f} KiB) from documents/ and tests/fixtures/, "
          f"median of {args.rounds} rounds; cold start: median of {args.cold_runs} runs of "
          f"`{COLD_DOC.relative_to(ROOT)}`\n")
    m, f = rates["maml (parse + validate, API)"], rates["maml, front matter only"]
    p = rates.get("python-frontmatter + jsonschema", float("nan"))
    print("| | maml validate (everything) | maml, front matter only | "
          "python-frontmatter + jsonschema | `python -c pass` |")
    print("|---|---:|---:|---:|---:|")
    print(f"| throughput (documents/s, validators reused) | {m:,.0f} | {f:,.0f} | {p:,.0f} | |")
    print(f"| cold start, one document (s) | {cold_maml:.3f} | | {cold_peer:.3f} | {floor:.3f} |")
    print(f"| alias bomb (9 aliases x 9 levels) | refused in {alias_bomb_ms():.1f} ms | | "
          "does not finish | |")
    print(f"| {args.steps:,} steps in one document, parse + validate (s) | {scale(args.steps):.3f} "
          "| | | |")
    print(f"\nthroughput vs the peer: maml {m / p:.2f}x, maml front matter only {f / p:.2f}x; "
          f"cold start above the interpreter floor: maml {cold_maml - floor:.3f} s, "
          f"peer {cold_peer - floor:.3f} s")


if __name__ == "__main__":
    main()
