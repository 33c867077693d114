"""The parsed form of a MAML document.

`parse()` always returns a `Document`; nothing in here raises on content. Every part
carries a `SourceSpan` (1-based line and column) into the original text, so a diagnostic
can point at the exact place in the file.

`Document.meta` is the *normalised* front matter, whatever the dialect. Its keys:

    maml_version   str | None          (a YAML float 1.0 becomes "1.0", with a warning)
    id, type, origin, encryption, verification, quantum_security_flag: as given
    requires       {"libs": [...], "apis": [...]}
    permissions    {"read": P, "write": P, "execute": P}  with P = True | False | list[str] | None
    created_at     ISO-8601 str | None  (a YAML datetime becomes its isoformat())
    policy         dict | None          the engine extension, as written
    pipeline       list[dict] | None    the engine extension, as written
    faults         list | None          declared fault injections, as written
    extra          dict                 every key the engine does not know, kept verbatim

`Document.front_matter` is the mapping exactly as YAML loaded it (raw keys, raw types).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Severity = Literal["error", "warning", "info"]

#: languages a Code_Blocks fence may be run as, mapped to the step kind that runs it
EXECUTABLE_LANGS: dict[str, str] = {
    "python": "python", "py": "python", "python3": "python", "qiskit": "python",
    "bash": "shell", "sh": "shell", "shell": "shell",
    "qasm": "quantum", "openqasm": "quantum", "qasm2": "quantum", "qasm3": "quantum",
}


@dataclass(frozen=True, slots=True)
class SourceSpan:
    """Where a part of the document is: 1-based line and column; end is inclusive line."""

    line: int
    column: int = 1
    end_line: int | None = None

    def __str__(self) -> str:
        return f"{self.line}:{self.column}"


@dataclass(frozen=True, slots=True)
class Diagnostic:
    """One finding about a document. `code` is stable (e.g. "MAML-V203")."""

    code: str
    severity: Severity
    message: str
    span: SourceSpan | None = None
    path: str | None = None
    step: str | None = None

    @property
    def line(self) -> int:
        return self.span.line if self.span else 1

    @property
    def column(self) -> int:
        return self.span.column if self.span else 1

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"code": self.code, "severity": self.severity,
                             "message": self.message, "line": self.line, "column": self.column}
        if self.step:
            d["step"] = self.step
        return d

    def format(self) -> str:
        """`file:line:col: severity code message`, the text form of `maml validate`."""
        return f"{self.path or '<string>'}:{self.line}:{self.column}: {self.severity} {self.code} {self.message}"


@dataclass(slots=True)
class Block:
    """A fenced code block. `attrs` come from the info string: ```python {id=x needs=[a,b]}."""

    lang: str
    body: str
    span: SourceSpan
    info: str = ""
    attrs: dict[str, Any] = field(default_factory=dict)
    section: str | None = None
    closed: bool = True

    @property
    def id(self) -> str | None:
        value = self.attrs.get("id")
        return str(value) if value is not None else None

    @property
    def executable_kind(self) -> str | None:
        """The step kind that runs this block, or None for documentation fences."""
        return EXECUTABLE_LANGS.get(self.lang.lower())

    @property
    def body_line(self) -> int:
        """Line of the first body line (the fence itself is `span.line`)."""
        return self.span.line + 1


@dataclass(slots=True)
class Section:
    """A body section opened by an H2 heading. `name` is normalised: `Code_Blocks`."""

    title: str
    name: str
    level: int
    span: SourceSpan
    text: str = ""
    blocks: list[Block] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    timestamp: str
    event: str
    text: str
    span: SourceSpan


@dataclass(slots=True)
class Document:
    path: str | None
    source: str
    dialect: str = "unknown"
    front_matter: dict[str, Any] = field(default_factory=dict)
    front_matter_span: SourceSpan | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    #: position of every front-matter key and list item, by its path: ("pipeline", 0, "kind")
    key_spans: dict[tuple[Any, ...], SourceSpan] = field(default_factory=dict)
    #: plain YAML scalars that YAML 1.1 reads unlike they look (`no` -> False, `1:30` -> 90),
    #: by path -> the text as written; validate's hints come from here
    yaml_literals: dict[tuple[Any, ...], str] = field(default_factory=dict)
    title: str | None = None
    sections: list[Section] = field(default_factory=list)
    blocks: list[Block] = field(default_factory=list)
    input_schema: dict[str, Any] | None = None
    input_schema_span: SourceSpan | None = None
    output_schema: dict[str, Any] | None = None
    output_schema_span: SourceSpan | None = None
    history: list[HistoryEntry] = field(default_factory=list)
    #: what parsing itself found (unclosed fences, bad YAML, ...); validate() adds the rest
    diagnostics: list[Diagnostic] = field(default_factory=list)

    def block(self, block_id: str) -> Block | None:
        return next((b for b in self.blocks if b.id == block_id), None)

    def section(self, name: str) -> Section | None:
        return next((s for s in self.sections if s.name == name), None)

    def span_of(self, *path: Any) -> SourceSpan | None:
        """The span of a front-matter key path, or of its nearest known parent."""
        while path:
            if path in self.key_spans:
                return self.key_spans[path]
            path = path[:-1]
        return self.front_matter_span

    @property
    def code_blocks(self) -> list[Block]:
        """Fenced blocks under the Code_Blocks section (all blocks if there is none)."""
        section = self.section("Code_Blocks")
        return list(section.blocks) if section else list(self.blocks)
