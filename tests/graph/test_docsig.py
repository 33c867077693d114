"""Document signatures: maml sign / verify, keys trust / revoke / rotate, run --require-signed,
and the run record's document digest and signer."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

import maml.graph
from maml.graph import docsig, keys

from graph_helpers import maml_cli

DOC = """---
maml_version: "1.0"
permissions: {execute: true}
---
# Signed

## Code_Blocks

```python {id=a}
result = 41 + 1
```
"""


@pytest.fixture
def doc(tmp_path: Path) -> Path:
    path = tmp_path / "d.maml.md"
    path.write_text(DOC)
    return path



_maml = maml_cli


def test_a_signature_covers_every_byte(doc, key):
    docsig.sign(doc, key)
    trusted = keys.trusted_public_keys()
    assert docsig.verify(doc, trusted).status == "signed"
    data = doc.read_bytes()
    for at in (0, len(data) // 2, len(data) - 1):       # one byte flipped anywhere
        changed = bytearray(data)
        changed[at] ^= 0x01
        verdict = docsig.verify(doc, trusted, bytes(changed))
        assert verdict.status == "altered" and "changed since" in verdict.reason


def test_the_envelope_is_dsse_over_the_exact_bytes(doc, key):
    from securesystemslib.dsse import Envelope

    from maml.graph.dsse import sslib_key

    envelope = Envelope.from_dict(json.loads(docsig.sign(doc, key).read_text()))
    assert envelope.payload == doc.read_bytes()
    assert envelope.payload_type == docsig.PAYLOAD_TYPE
    assert list(envelope.verify([sslib_key(key.public, key.id)], 1)) == [key.id]


def test_unsigned_untrusted_and_revoked(doc, key, tmp_path):
    assert docsig.verify(doc, keys.trusted_public_keys()).status == "unsigned"
    stranger = keys.create_key(tmp_path / "stranger")
    docsig.sign(doc, stranger)
    assert docsig.verify(doc, keys.trusted_public_keys()).status == "untrusted"
    keys.trust_public_key(stranger.public)
    assert docsig.verify(doc, keys.trusted_public_keys()).key_id == stranger.id
    keys.revoke_key(stranger.id[:10])
    assert docsig.verify(doc, keys.trusted_public_keys()).status == "untrusted"


def test_rotate_keeps_old_signatures_verifying(doc, key, config_dir):
    docsig.sign(doc, key)
    new = keys.create_key(config_dir, force=True)
    assert new.id != key.id
    assert docsig.verify(doc, keys.trusted_public_keys()).key_id == key.id


def test_a_private_key_others_can_read_is_refused_with_the_fix(key):
    from maml.errors import GraphError

    os.chmod(key.path, 0o644)
    with pytest.raises(GraphError, match="chmod 600"):
        keys.load_key()


def test_require_signed_passes_signed_and_refuses_the_rest(doc, tmp_path, monkeypatch):
    assert _maml(tmp_path, "sign", str(doc)).returncode == 0
    ok = _maml(tmp_path, "run", str(doc), "--require-signed", "--json", "-q",
               "--graph", str(tmp_path / "graph"))
    assert ok.returncode == 0, ok.stderr
    run = json.loads(ok.stdout)
    monkeypatch.setenv("MAML_CONFIG_DIR", str(tmp_path / "config"))
    node = next(n for n in maml.graph.open(tmp_path / "graph").history(run["run_id"])
                if n["type"] == "run")
    assert node["document_sha256"] == hashlib.sha256(doc.read_bytes()).hexdigest()
    assert node["signer"] == keys.load_key().id

    other = tmp_path / "other-config"                       # a key this user does not trust
    assert _maml(tmp_path, "sign", str(doc), config=other).returncode == 0
    untrusted = _maml(tmp_path, "run", str(doc), "--require-signed", "--no-graph")
    assert untrusted.returncode == 3 and "untrusted" in untrusted.stderr

    _maml(tmp_path, "sign", str(doc))
    doc.write_bytes(doc.read_bytes().replace(b"41 + 1", b"41 + 2"))   # one byte
    altered = _maml(tmp_path, "run", str(doc), "--require-signed", "--no-graph")
    assert altered.returncode == 3 and "bytes changed since" in altered.stderr

    docsig.signature_path(doc).unlink()
    (tmp_path / "maml.toml").write_text("require_signed = true\n")     # a project setting
    unsigned = _maml(tmp_path, "run", str(doc), "--no-graph")
    assert unsigned.returncode == 3 and "unsigned" in unsigned.stderr
    assert "maml.toml" in unsigned.stderr


def test_verify_command_names_the_signer(doc, tmp_path):
    _maml(tmp_path, "sign", str(doc))
    trust = _maml(tmp_path, "keys", "list", "--json")
    own = json.loads(trust.stdout)["keys"][0]["key_id"]
    done = _maml(tmp_path, "verify", str(doc))
    assert done.returncode == 0 and own in done.stdout
    doc.write_text(DOC + "\n")
    assert _maml(tmp_path, "verify", str(doc)).returncode == 3
