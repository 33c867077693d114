"""Document signatures: a detached DSSE envelope `DOC.sig` over the document's exact bytes.

    maml sign doc.maml.md            -> doc.maml.md.sig
    maml verify doc.maml.md          -> "signed by <key id> (<name>)", or why not

The envelope's payload is the document's bytes (payload type
`application/vnd.maml.document+markdown`), signed with Ed25519 over DSSE's PAE. Keeping the
payload in the envelope means `verify` can say *how* a document differs from what was signed
(any byte, whitespace included, is a change). A detached file rather than an embedded block:
signing leaves the document byte-for-byte as its author wrote it, and a signature can be
added, replaced or removed without touching the document (or its git history).

A signature proves that a holder of the private key signed exactly these bytes; which keys
you accept is yours to decide (`maml keys trust|revoke`). It does not prove the document is
safe, and it does not bind the file name: a signed document copied elsewhere stays signed.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from maml._files import write_atomic
from maml.graph import dsse

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from maml.graph.keys import SigningKey

PAYLOAD_TYPE = "application/vnd.maml.document+markdown"
SUFFIX = ".sig"

Status = Literal["signed", "unsigned", "untrusted", "altered", "invalid"]


@dataclass(frozen=True)
class Verdict:
    """What `verify` found. `ok` only for status "signed"."""

    path: str
    status: Status
    sha256: str                    # of the document's bytes as they are now
    key_id: str | None = None      # the trusted key that signed them
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "signed"

    def to_dict(self) -> dict[str, object]:
        return {"path": self.path, "ok": self.ok, "status": self.status, "sha256": self.sha256,
                "key_id": self.key_id, "reason": self.reason}


def signature_path(document: str | os.PathLike[str]) -> Path:
    return Path(os.fspath(document) + SUFFIX)


def sign(document: str | os.PathLike[str], key: SigningKey) -> Path:
    """Write `DOC.sig` (atomically) over the document's current bytes; returns its path."""
    import json

    data = Path(document).read_bytes()
    envelope = dsse.sign(data, PAYLOAD_TYPE, key)
    target = signature_path(document)
    write_atomic(target, (json.dumps(envelope, indent=1) + "\n").encode("utf-8"))
    return target


def verify(document: str | os.PathLike[str], trusted: dict[str, Ed25519PublicKey],
           data: bytes | None = None) -> Verdict:
    """Check `DOC.sig` against the document's bytes (read now unless `data` is given)."""
    data = Path(document).read_bytes() if data is None else data
    digest = hashlib.sha256(data).hexdigest()
    where = signature_path(document)
    try:
        envelope = where.read_bytes()
    except FileNotFoundError:
        return Verdict(str(document), "unsigned", digest,
                       reason=f"no signature ({where.name}); sign it with: maml sign {document}")
    try:
        parsed = dsse.parse(envelope)
    except dsse.EnvelopeError as exc:
        return Verdict(str(document), "invalid", digest, reason=f"{where}: {exc}")
    try:
        payload, key_id = dsse.open_(envelope, PAYLOAD_TYPE, trusted)
    except dsse.EnvelopeError as exc:
        status: Status = "untrusted" if "not a trusted key" in str(exc) else "invalid"
        return Verdict(str(document), status, digest, reason=f"{where.name}: {exc}")
    if payload != data:
        signed = hashlib.sha256(parsed.payload).hexdigest()
        return Verdict(str(document), "altered", digest, key_id,
                       f"the document's bytes changed since {key_id} signed it "
                       f"({_first_difference(payload, data)}; signed sha256 {signed[:16]}…, "
                       f"now {digest[:16]}…)")
    return Verdict(str(document), "signed", digest, key_id, f"signed by {key_id}")


def _first_difference(signed: bytes, now: bytes) -> str:
    cut = next((i for i, (a, b) in enumerate(zip(signed, now)) if a != b),
               min(len(signed), len(now)))
    line = now[:cut].count(b"\n") + 1
    return f"first difference at line {line}, byte {cut}"
