"""`maml graph attest RUN`: an in-toto Statement v1 in a DSSE envelope, checked here with
securesystemslib (the library in-toto uses), not with maml's own verifier."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

from securesystemslib.dsse import Envelope
from securesystemslib.signer import SSlibKey

from graph_helpers import maml_cli

DOC = """---
maml_version: "1.0"
permissions: {execute: true}
policy: {retries: 2, backoff: {initial: 0s}}
pipeline:
  - {id: a, block: a}
  - {id: b, block: b, needs: [a]}
---
# Attested

## Code_Blocks

```python {id=a}
result = 21
```

```python {id=b}
def run(inputs, params, ctx):
    return inputs["a"] * 2
```
"""



_maml = maml_cli


def test_the_attestation_verifies_with_securesystemslib_and_names_the_outputs(tmp_path):
    doc = tmp_path / "d.maml.md"
    doc.write_text(DOC)
    assert _maml(tmp_path, "sign", str(doc)).returncode == 0
    ran = _maml(tmp_path, "run", str(doc), "--json", "-q", "--inject", "a:transient@1")
    assert ran.returncode == 0, ran.stderr
    run_id = json.loads(ran.stdout)["run_id"]
    out = tmp_path / "att.json"
    done = _maml(tmp_path, "graph", "attest", run_id, "-o", str(out))
    assert done.returncode == 0, done.stderr

    pem = (tmp_path / "config" / "signing_key.pub").read_bytes()
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    public = load_pem_public_key(pem)
    envelope = Envelope.from_dict(json.loads(out.read_text()))
    key_id = envelope.signatures[next(iter(envelope.signatures))].keyid
    accepted = envelope.verify([SSlibKey.from_crypto(public, keyid=key_id)], 1)
    assert list(accepted) == [key_id]
    assert envelope.payload_type == "application/vnd.in-toto+json"

    statement = json.loads(envelope.payload)
    assert statement["_type"] == "https://in-toto.io/Statement/v1"
    run_dir = tmp_path / ".maml" / "runs" / run_id
    for subject in statement["subject"]:
        assert set(subject["digest"]) == {"sha256"}
        data = (run_dir / subject["name"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == subject["digest"]["sha256"]
    assert "steps.log" in {s["name"] for s in statement["subject"]}   # the committed outputs
    predicate = statement["predicate"]
    assert predicate["document"]["digest"]["sha256"] == hashlib.sha256(doc.read_bytes()).hexdigest()
    assert predicate["signer"] == key_id
    assert predicate["attempts"] == 3 and predicate["status"] == "succeeded"
    assert [e["error_class"] for e in predicate["errors"]] == ["transient"]
    assert [r["step"] for r in predicate["recoveries"]] == ["a"]
    assert predicate["devices"] and predicate["graph"]["head"]

    tampered = json.loads(out.read_text())
    changed = dict(statement, predicate={**predicate, "status": "failed"})
    tampered["payload"] = base64.b64encode(json.dumps(changed).encode()).decode()
    bad = Envelope.from_dict(tampered)
    try:
        bad.verify([SSlibKey.from_crypto(public, keyid=key_id)], 1)
    except Exception as exc:          # securesystemslib's VerificationError
        assert "threshold" in str(exc) or "signature" in str(exc).lower()
    else:
        raise AssertionError("a changed statement verified")


def test_attest_of_an_unknown_run_is_a_clear_error(tmp_path):
    doc = tmp_path / "d.maml.md"
    doc.write_text(DOC)
    assert _maml(tmp_path, "run", str(doc), "-q").returncode == 0
    done = _maml(tmp_path, "graph", "attest", "20990101T000000.000000-abcdef")
    assert done.returncode == 1 and "no run" in done.stderr and "Traceback" not in done.stderr
