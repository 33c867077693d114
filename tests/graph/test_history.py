"""`maml run --append-history`: a line per run in the History section, written atomically;
a signed document is reported as no longer matching unless --resign."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

from hypothesis import given, settings, strategies as st

from maml.graph.history import entry, with_entry

from graph_helpers import maml_cli

WHEN = dt.datetime(2026, 11, 30, 12, 0, 0, tzinfo=dt.timezone.utc)
LINE = entry("R1", "succeeded", "ab" * 32, "k" * 32, WHEN)


def test_the_entry_format():
    assert LINE == (f"- 2026-11-30T12:00:00Z: [EXECUTED] run R1 succeeded graph-head {'ab' * 32}"
                    f" by {'k' * 32}")


def test_appended_after_the_last_entry_before_the_next_section():
    doc = b"# T\n\n## History\n\n- old entry\n\n## Notes\n\ntext\n"
    assert with_entry(doc, LINE) == (b"# T\n\n## History\n\n- old entry\n" + LINE.encode()
                                     + b"\n\n## Notes\n\ntext\n")


def test_a_history_heading_inside_a_fence_is_not_the_section():
    doc = b"# T\n\n```md\n## History\n```\n"
    out = with_entry(doc, LINE)
    assert out.startswith(doc) and out.endswith(b"\n## History\n\n" + LINE.encode() + b"\n")


def test_crlf_documents_stay_crlf():
    out = with_entry(b"# T\r\n\r\n## History\r\n\r\n- a\r\n", LINE)
    assert out == b"# T\r\n\r\n## History\r\n\r\n- a\r\n" + LINE.encode() + b"\r\n"


@settings(max_examples=60)
@given(st.lists(st.sampled_from(["# T", "## History", "## Other", "- x", "", "```", "text"]),
                max_size=12))
def test_one_line_is_added_and_every_original_line_kept_in_order(parts):
    doc = ("\n".join(parts) + "\n").encode()
    out = with_entry(doc, LINE).splitlines()
    assert out.count(LINE.encode()) == 1
    remaining = iter(out)
    assert all(any(line == kept for kept in remaining) for line in doc.splitlines())


DOC = """---
maml_version: "1.0"
permissions: {execute: true}
---
# H

## Code_Blocks

```python {id=a}
result = 1
```

## History

- 2026-01-01: created
"""



_maml = maml_cli


def test_a_run_appends_its_line_and_a_signed_document_is_told_apart(tmp_path):
    doc = tmp_path / "h.maml.md"
    doc.write_text(DOC)
    _maml(tmp_path, "sign", str(doc))
    done = _maml(tmp_path, "run", str(doc), "--append-history", "--json", "-q")
    assert done.returncode == 0, done.stderr
    run_id = json.loads(done.stdout)["run_id"]
    lines = doc.read_text().splitlines()
    assert lines[-2] == "- 2026-01-01: created"
    assert f"[EXECUTED] run {run_id} succeeded graph-head " in lines[-1]
    assert "no longer matches its signature" in done.stderr
    assert _maml(tmp_path, "verify", str(doc)).returncode == 3

    again = _maml(tmp_path, "run", str(doc), "--append-history", "--resign", "-q")
    assert again.returncode == 0 and _maml(tmp_path, "verify", str(doc)).returncode == 0
    assert doc.read_text().count("[EXECUTED]") == 2
