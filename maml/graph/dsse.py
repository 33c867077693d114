"""DSSE envelopes signed and checked with the maml key, through securesystemslib.

    envelope = sign(payload_bytes, PAYLOAD_TYPE, key)       # a dict, DSSE's JSON form
    payload, key_id = open_(envelope, PAYLOAD_TYPE, trusted) # or EnvelopeError saying why

DSSE (github.com/secure-systems-lab/dsse) signs `PAE(payloadType, payload)`, so a signature
over a document can never be replayed as a signature over an attestation or a graph head.
Signing and verifying go through securesystemslib's `Envelope` and `CryptoSigner`/`SSlibKey`
(the library in-toto uses), with the signature's `keyid` set to maml's key id
(sha256 of the raw public key, 32 hex digits), so `maml keys list` names the same key.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from maml.graph.keys import SigningKey


class EnvelopeError(ValueError):
    """An envelope that is malformed, of another payload type, or signed by no trusted key."""


def sslib_key(public: Ed25519PublicKey, key_id: str) -> Any:
    """The securesystemslib form of a maml public key."""
    from securesystemslib.signer import SSlibKey

    return SSlibKey.from_crypto(public, keyid=key_id)


def sign(payload: bytes, payload_type: str, key: SigningKey) -> dict[str, Any]:
    """A DSSE envelope of `payload` with one Ed25519 signature by `key`."""
    from securesystemslib.dsse import Envelope
    from securesystemslib.signer import CryptoSigner

    envelope = Envelope(payload, payload_type, {})
    envelope.sign(CryptoSigner(key.private, sslib_key(key.public, key.id)))
    return envelope.to_dict()


def parse(data: bytes | str | dict[str, Any]) -> Any:
    """A securesystemslib Envelope from its JSON form; EnvelopeError if it is not one."""
    from securesystemslib.dsse import Envelope

    try:
        value = data if isinstance(data, dict) else json.loads(data)
        return Envelope.from_dict(dict(value))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise EnvelopeError(f"not a DSSE envelope: {exc}") from None


def open_(data: bytes | str | dict[str, Any], payload_type: str,
          trusted: dict[str, Ed25519PublicKey]) -> tuple[bytes, str]:
    """(payload, id of the trusted key that signed it); EnvelopeError naming what failed."""
    from securesystemslib.exceptions import VerificationError

    envelope = parse(data)
    if envelope.payload_type != payload_type:
        raise EnvelopeError(f"payload type {envelope.payload_type!r}, expected {payload_type!r}")
    signers = sorted(sig.keyid for sig in envelope.signatures.values())
    keys = [sslib_key(public, key_id) for key_id, public in trusted.items()
            if key_id in signers]
    if not keys:
        raise EnvelopeError(f"signed by {', '.join(signers) or 'no key'}, which is not a "
                            "trusted key (maml keys trust PUB to trust it)")
    try:
        accepted = envelope.verify(keys, 1)
    except VerificationError:
        raise EnvelopeError(f"the signature by {', '.join(k.keyid for k in keys)} does not "
                            "verify: the envelope was changed after signing") from None
    return envelope.payload, next(iter(accepted))
