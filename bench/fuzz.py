"""A longer mutation fuzz of `maml.load` + `maml.validate` than the test suite's bounded one.

    python bench/fuzz.py [--seconds 600] [--seed N]

Takes every document under documents/ and tests/fixtures/, applies 1-6 random mutations
(cuts, and insertions of the tokens that broke parsers before: fences, braces, `needs=,`,
tabs, aliases, NUL, BOM, `+++`), and parses + validates the result. The parser must never
raise on content: the first input that raises is written to fuzz-crash.maml.md and the
traceback printed (exit 1). Prints inputs tried per second.
"""

from __future__ import annotations

import argparse
import random
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TOKENS = ["", "{", "}", "[", "]", ":", "=", ",", "\t", "\n", "---", "+++", "```", "~~~", "&a ",
          "*a", "needs", '"', "'", "#", "{id=x needs=,}", "\x00", "\ufeff", "- ", "  ", "1:30",
          "no", "$ref", "include \"../x.inc\";", "OPENQASM 3.0;", "/*", "*/"]


def mutate(text: str, rng: random.Random) -> str:
    for _ in range(rng.randint(1, 6)):
        at = rng.randint(0, len(text))
        text = text[:at] + rng.choice(TOKENS) + text[at + rng.randint(0, 40):]
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=600)
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args()
    from maml.document.parser import parse
    from maml.document.validate import validate

    corpus = [p.read_text(encoding="utf-8", errors="replace")
              for pattern in ("documents/**/*.maml.md", "tests/fixtures/*.maml.md")
              for p in sorted(ROOT.glob(pattern))]
    rng = random.Random(args.seed)
    tried, start = 0, time.perf_counter()
    while time.perf_counter() - start < args.seconds:
        text = mutate(rng.choice(corpus), rng)
        try:
            validate(parse(text, path="fuzz.maml.md"))
        except Exception:
            Path("fuzz-crash.maml.md").write_text(text, encoding="utf-8", errors="replace")
            traceback.print_exc()
            raise SystemExit(f"raised after {tried} inputs; the input is in fuzz-crash.maml.md")
        tried += 1
    elapsed = time.perf_counter() - start
    print(f"{tried} inputs in {elapsed:.0f} s ({tried / elapsed:.0f}/s): nothing raised")


if __name__ == "__main__":
    main()
