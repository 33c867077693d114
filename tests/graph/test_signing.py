"""Signed heads: DSSE PAE, signatures bound to the payload and the key."""

from __future__ import annotations

from maml.graph import keys, signing


def test_pae_matches_the_dsse_spec_example():
    assert signing.pae("http://example.com/HelloWorld", b"hello world") == \
        b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"


def test_head_line_round_trips_and_verifies(key):
    payload = {"chain": "ab" * 32, "count": 3, "key": key.id, "log": "l", "t": 1.5}
    line = signing.head_line(payload, key)
    body, signature = signing.split_head_line(line)
    assert body == b'{"chain":"' + b"ab" * 32 + b'","count":3,"key":"' + key.id.encode() + \
        b'","log":"l","t":1.5}'
    assert signing.verify_signature(key.public, body, signature)
    assert not signing.verify_signature(key.public, body.replace(b'"count":3', b'"count":4'),
                                        signature)


def test_signature_is_domain_separated(key):
    body = b'{"count":1}'
    bare = key.private.sign(body)   # a signature over the bare payload is not a head signature
    assert not signing.verify_signature(key.public, body, bare)


def test_another_key_does_not_verify(key, tmp_path):
    other = keys.create_key(tmp_path / "other")
    line = signing.head_line({"count": 1}, key)
    body, signature = signing.split_head_line(line)
    assert not signing.verify_signature(other.public, body, signature)
