"""Signed heads: one Ed25519 signature per group commit, covering the whole log through the chain.

A node's id is `sha256(canonical node)`; every node record also carries the chain hash
`c_i = sha256(c_{i-1} || id_i)` (raw 32-byte digests), with `c_0 = sha256(log header line)`.
At each commit the writer appends a *head*:

    {"head": {"chain": c_n, "count": n, "key": KEY_ID, "log": LOG_ID, "t": UNIX_TIME},
     "sig": base64(Ed25519(PAE("application/vnd.maml.graph.head+json", canonical(head))))}

PAE is DSSE's pre-authentication encoding, so a maml head signature can never be mistaken for
a signature over anything else. Signing the chain head authenticates every record before it:
changing, deleting or reordering any of them changes `c_n`. One signature per commit instead of
per node is what lets the record run at hashing speed rather than at Ed25519's ~20k signs/s.
A Merkle root per batch would add inclusion proofs; nothing in maml needs them, so there is none.
"""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING, Any

from maml.graph import canonical

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from maml.graph.keys import SigningKey

HEAD_TYPE = "application/vnd.maml.graph.head+json"


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE v1 pre-authentication encoding."""
    kind = payload_type.encode("utf-8")
    return b"DSSEv1 %d %s %d %s" % (len(kind), kind, len(payload), payload)


def head_line(payload: dict[str, Any], key: SigningKey) -> bytes:
    """The log line of a signed head, newline included."""
    body = canonical.dumps(payload)
    signature = key.private.sign(pae(HEAD_TYPE, body))
    return b'{"head":' + body + b',"sig":"' + base64.b64encode(signature) + b'"}\n'


def split_head_line(line: bytes) -> tuple[bytes, bytes]:
    """(canonical head payload bytes, raw signature) from a head line; ValueError if malformed."""
    if not line.startswith(b'{"head":'):
        raise ValueError("not a head record")
    cut = line.rfind(b',"sig":"')
    if cut < 0 or not line.rstrip(b"\n").endswith(b'"}'):
        raise ValueError("head record without a signature")
    body = line[8:cut]
    signature = base64.b64decode(line[cut + 8:line.rstrip(b"\n").rfind(b'"')], validate=True)
    return body, signature


def verify_signature(public_key: Ed25519PublicKey, body: bytes, signature: bytes) -> bool:
    from cryptography.exceptions import InvalidSignature

    try:
        public_key.verify(signature, pae(HEAD_TYPE, body))
        return True
    except InvalidSignature:
        return False
