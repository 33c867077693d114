"""Opening a record verified: `maml.graph.open()`, `verify_path()`, the keys to trust, the
witness (rollback) check. From a path to a verified ErrorGraph, or to a report of what is wrong."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from maml.errors import VerifyError
from maml.graph import keys, store, witness
from maml.graph.load import Problem, VerifyReport, read_log
from maml.graph.queries import ErrorGraph

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey


def trusted_keys(public_key: Any = None) -> dict[str, Ed25519PublicKey]:
    """Key id -> public key to accept: the ones given (a key, PEM path/bytes, or a list of
    them, or a ready dict), else the user's own key and the config dir's trusted/ keys."""
    if isinstance(public_key, dict):
        return public_key
    if public_key is None:
        return keys.trusted_public_keys()
    given = public_key if isinstance(public_key, (list, tuple)) else [public_key]
    found = {}
    for item in given:
        if isinstance(item, (str, bytes, os.PathLike)):
            item = keys.load_public_key(item)
        found[keys.key_id(item)] = item
    return found


def verify_path(path: str | os.PathLike[str] | None = None, public_key: Any = None, *,
                expect_head: str | None = None) -> VerifyReport:
    """Check every record of a graph, and the log against this user's witness (and against
    `expect_head`, a head hash published earlier); the report names each problem."""
    log_path = store.resolve_log_path(path)
    seen = witness.read(log_path)
    report = read_log(log_path, trusted_keys(public_key),
                      witness_count=seen.count if seen else None)[1]
    compare_witness(report, seen)
    if expect_head and not report.problems and report.head != expect_head.lower():
        report.problems.append(Problem(0, None, f"the last signed head is {report.head}, not "
                                                f"the expected {expect_head}"))
    return report


def compare_witness(report: VerifyReport, seen: witness.Witnessed | None) -> None:
    """Add a rollback problem when the log is behind, beside or other than what was
    witnessed (see maml.graph.witness)."""
    if seen is None or report.problems:
        return
    report.witnessed = seen.describe()
    if report.log is None:
        reason = f"the log is empty or gone; witnessed {seen.describe()}"
    elif report.log != seen.log:
        reason = (f"the log holds graph {report.log}, but this path was witnessed holding "
                  f"graph {seen.log} ({seen.describe()}): the log was replaced")
    elif report.nodes < seen.count:
        reason = (f"the log's signed history ends at {report.nodes} records, but "
                  f"{seen.describe()} was witnessed: {seen.count - report.nodes} signed "
                  "record(s) were removed")
    elif report.witness_chain != seen.chain:
        reason = (f"the log diverges from the witness: its head at {seen.count} records is "
                  f"{report.witness_chain or 'missing'}, witnessed {seen.chain}")
    else:
        return
    report.problems.append(Problem(0, None, f"rollback: {reason}"))


def open(path: str | os.PathLike[str] | None = None, *, verify: bool = True,
         public_key: Any = None) -> ErrorGraph:
    """Load a graph (default `.maml/graph/`, or $MAML_GRAPH).

    With verify (the default) every hash, chain link and signature is checked and the first
    bad record raises VerifyError naming its line and node. With verify=False signatures are
    not checked and bad records are loaded; `graph.report` lists what was wrong.
    Uncommitted records (a torn last line, a batch no signed head covers) are never loaded.
    """
    log_path = store.resolve_log_path(path)
    trusted = trusted_keys(public_key) if verify else None
    seen = witness.read(log_path)
    index, report = read_log(log_path, trusted, stop_at_first=verify,
                             witness_count=seen.count if seen else None)
    compare_witness(report, seen)
    if verify and report.problems:
        first = report.problems[0]
        raise VerifyError(f"{first.reason}" + (f" (node {first.node})" if first.node else ""),
                          path=str(log_path), line=first.line)
    for note in report.warnings():
        store.warn(note)
    return ErrorGraph(index, report, trusted)


__all__ = ["open", "trusted_keys", "verify_path"]
