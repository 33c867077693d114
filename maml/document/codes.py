"""Every diagnostic code maml reports about a document, with its severity and meaning.

Codes are stable: tools and tests match on them, so a code is never reused for another
meaning. The families:

    MAML-P1xx  parsing: bytes, front-matter fences, YAML, Markdown structure
    MAML-D4xx  dialects: what was recognised, normalised or kept without being used
    MAML-S2xx  schemas: the front matter against schemas/*.json
    MAML-V3xx  semantics: the pipeline graph, the vocabulary, permissions, placeholders

`diagnostic(code, message, span)` builds a Diagnostic with the severity from this table, so
a code's severity is decided in one place.
"""

from __future__ import annotations

from typing import Any

from maml.document.model import Diagnostic, Severity, SourceSpan

#: code -> (severity, what it means)
CODES: dict[str, tuple[Severity, str]] = {
    # parsing
    "MAML-P101": ("error", "bytes that are not UTF-8 (replaced by U+FFFD)"),
    "MAML-P102": ("info", "a UTF-8 byte-order mark was removed"),
    "MAML-P103": ("info", "CRLF or CR line ends were read as LF"),
    "MAML-P104": ("error", "the document is empty"),
    "MAML-P105": ("error", "the document looks binary (NUL bytes)"),
    "MAML-P106": ("error", "the document is larger than maml parses"),
    "MAML-P110": ("error", "no front matter: not a MAML document"),
    "MAML-P111": ("error", "front-matter keys without the --- fences"),
    "MAML-P112": ("error", "front matter opened with --- but never closed"),
    "MAML-P113": ("error", "the front matter is not valid YAML"),
    "MAML-P114": ("error", "the front matter is not a mapping of keys"),
    "MAML-P115": ("error", "the front matter is too large or expands too far (alias bomb)"),
    "MAML-P116": ("error", "a YAML alias refers to itself"),
    "MAML-P117": ("warning", "a front-matter key appears twice; YAML keeps the last"),
    "MAML-P118": ("error", "a second front-matter block"),
    "MAML-P119": ("warning", "text pasted from a chat transcript"),
    "MAML-P120": ("error", "the whole document is wrapped in a ``` fence"),
    "MAML-P121": ("error", "a code fence is never closed"),
    "MAML-P122": ("warning", "a fence's {attributes} cannot be read"),
    "MAML-P123": ("warning", "two fenced blocks share an id"),
    "MAML-P124": ("warning", "a History line is not `- <ISO time>: [EVENT] text`"),
    "MAML-P125": ("error", "Input_Schema or Output_Schema is not valid JSON"),
    # dialects
    "MAML-D401": ("info", "the document's dialect"),
    "MAML-D402": ("warning", "a version written as a YAML number"),
    "MAML-D403": ("info", "a key maml keeps but does not use"),
    "MAML-D404": ("info", "a YAML timestamp was read as an ISO-8601 string"),
    "MAML-D405": ("info", "a value maml records but does not act on"),
    "MAML-D406": ("warning", "a key with a value maml cannot interpret"),
    "MAML-D407": ("warning", "an unknown top-level key close to a known one (a typo?)"),
    "MAML-D408": ("warning", "a value YAML 1.1 read as a base-60 number (1:30 is 90)"),
    # schemas
    "MAML-S201": ("error", "the front matter does not match schemas/front-matter.json"),
    "MAML-S202": ("warning", "a step's params hold a key its kind does not know"),
    "MAML-S203": ("error", "Input_Schema or Output_Schema is not a valid JSON Schema"),
    "MAML-S204": ("error", "a JSON Schema $ref to something maml does not hold (it never fetches)"),
    # semantics
    "MAML-V301": ("error", "two steps share an id"),
    "MAML-V302": ("error", "`needs` names a step that does not exist"),
    "MAML-V303": ("error", "the steps' `needs` form a cycle"),
    "MAML-V304": ("error", "`block` names a fenced block that does not exist"),
    "MAML-V305": ("error", "an unknown step kind"),
    "MAML-V306": ("error", "a malformed duration"),
    "MAML-V307": ("error", "a malformed size"),
    "MAML-V308": ("error", "an unknown recovery action"),
    "MAML-V309": ("error", "an unknown error class"),
    "MAML-V310": ("error", "an unknown device"),
    "MAML-V311": ("warning", "code steps run only for the principals permissions.execute names"),
    "MAML-V312": ("error", "a placeholder left in the document"),
    "MAML-V313": ("error", "a step has no kind and no executable block to infer it from"),
    "MAML-V314": ("error", "a fault names an unknown step or error"),
    "MAML-V315": ("warning", "nothing to run: no pipeline and no executable code block"),
    "MAML-V316": ("error", "a policy value the engine cannot use"),
    "MAML-V317": ("error", "a pipeline step that cannot be read (not a mapping, no id, ...)"),
    "MAML-V318": ("error", "`needs` without step names (a bare `needs` attribute, a number)"),
    "MAML-V319": ("error", "a step runs document code; `permissions` grant `execute` to no one"),
    "MAML-V320": ("error", "`permissions` maml cannot read (an unknown right, a bad value): refused"),
    "MAML-V321": ("error", "a python block that does not compile"),
    "MAML-V322": ("error", "an OpenQASM block that does not parse (syntax, gate, qubit, include)"),
    "MAML-V323": ("error", "a python block another step needs defines no run/execute_skill/result"),
    "MAML-V324": ("info", "code that could not be checked here (qiskit not installed)"),
    "MAML-V325": ("warning", "a last python step defines no run/execute_skill/result (returns None)"),
}


def diagnostic(code: str, message: str, span: SourceSpan | None = None, *,
               step: str | None = None, path: str | None = None,
               severity: Severity | None = None) -> Diagnostic:
    """A Diagnostic whose severity comes from CODES unless given (e.g. --strict downgrades)."""
    return Diagnostic(code, severity or CODES[code][0], message, span, path=path, step=step)


def sort_key(d: Diagnostic) -> tuple[Any, ...]:
    """Order of `validate()`'s result: by line, then column, then code."""
    return (d.line, d.column, d.code, d.message)


def did_you_mean(word: Any, choices: Any) -> str:
    """`; did you mean 'x'?` for the closest known word, else `; known: a, b, c`."""
    import difflib  # only when something is misspelt

    choices = [str(c) for c in choices]
    close = difflib.get_close_matches(str(word), choices, n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else f"; known: {name_list(choices)}"


def name_list(names: Any, limit: int = 20, sep: str = ", ") -> str:
    """`a, b, c` with at most `limit` names, then `... and N more` (a 10,000-step cycle must
    not become one 89 kB message)."""
    names = [str(n) for n in names]
    shown = sep.join(names[:limit])
    return shown + (f"{sep}... and {len(names) - limit} more" if len(names) > limit else "")
