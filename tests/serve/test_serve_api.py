"""The HTTP API against a real `maml serve` on a loopback port (see serve_helpers)."""

from __future__ import annotations

import json

import httpx

from serve_helpers import ROOT, doc

CHAIN = doc("""
- {id: first, block: first}
- {id: second, block: second, needs: [first]}
""", {"first": "def run(inputs, params, ctx):\n    return {'n': params.get('n', 2)}",
     "second": "def run(inputs, params, ctx):\n    return inputs['first']['n'] * 10"})

FLAKY = doc("""
- {id: train, block: train, params: {batch_size: 64}}
""", {"train": "def run(inputs, params, ctx):\n    return {'batch': params['batch_size']}"},
    policy="policy:\n  retries: 3\n  backoff: {initial: 0.01s, max: 0.05s}\n"
           "  on: {transient: [halve_batch]}\n")


def test_a_run_goes_through_the_queue_and_ends_as_maml_run_json(server):
    run_id = server.submit(CHAIN, params={"first.n": 4})
    run = server.wait(run_id)
    assert run["status"] == "succeeded"
    assert run["run_id"] == run_id
    assert {"run_id", "status", "steps", "errors", "recoveries", "graph"} <= set(run)
    assert run["steps"]["first"]["output"] == {"n": 4}
    assert run["steps"]["second"]["output"] == 40
    assert run["steps"]["second"]["status"] == "succeeded"
    assert run["dag"][1]["needs"] == ["first"]
    listed = server.client.get("/api/v1/runs").json()["runs"]
    assert listed[0]["run_id"] == run_id and listed[0]["status"] == "succeeded"


def _sse_events(server, run_id: str) -> list[tuple[str, dict]]:
    events = []
    with server.client.stream("GET", f"/api/v1/runs/{run_id}/events") as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        kind = None
        for line in stream.iter_lines():
            if line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: "):
                events.append((kind, json.loads(line[6:])))
    return events


def test_sse_streams_failure_recovery_and_the_end_of_a_run(server):
    run_id = server.submit(FLAKY, inject=["train:transient@1"])
    events = _sse_events(server, run_id)         # the stream ends with run_finished
    kinds = [kind for kind, _ in events]
    assert kinds[-1] == "run_finished" and events[-1][1]["status"] == "succeeded"
    failed = next(e for k, e in events if k == "attempt_failed")
    assert failed["error_class"] == "transient" and failed["device"] == "cpu" and failed["injected"]
    recovery = next(e for k, e in events if k == "recovery_applied")
    assert recovery["action"] == "halve_batch" and recovery["changes"]
    order = [k for k in kinds if k in ("step_started", "attempt_failed", "recovery_applied",
                                       "step_finished", "run_finished")]
    assert order == ["step_started", "attempt_failed", "recovery_applied", "step_finished",
                     "run_finished"]
    run = server.client.get(f"/api/v1/runs/{run_id}").json()
    assert run["steps"]["train"]["output"] == {"batch": 32}
    assert run["recoveries"] == 1 and run["errors"] == 1
    history = run["steps"]["train"]["history"]
    assert history[0]["error"]["class"] == "transient" and history[0]["recovery"]["action"] == "halve_batch"
    # a second reader, resuming after the first failure, gets only what came after it
    again = server.client.get(f"/api/v1/runs/{run_id}/events",
                              headers={"Last-Event-ID": str(failed["seq"])})
    later = [json.loads(l[6:])["type"] for l in again.text.splitlines() if l.startswith("data: ")]
    assert later[0] == "recovery_applied" and later[-1] == "run_finished"


def test_every_request_needs_the_token(server):
    bare = httpx.get(f"{server.url}/api/v1/runs")
    assert bare.status_code == 401 and bare.json()["error"]["code"] == "MAML-E300"
    wrong = httpx.get(f"{server.url}/api/v1/runs", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    page = httpx.get(f"{server.url}/", headers={"Accept": "text/html"})
    assert page.status_code == 401 and "maml serve --show-token" in page.text
    login = httpx.get(f"{server.url}/?token={server.token}")
    assert login.status_code == 303 and "HttpOnly" in login.headers["set-cookie"]
    with httpx.Client(base_url=server.url, cookies=login.cookies) as browser:
        assert browser.get("/api/v1/health").status_code == 200
    assert "access-control-allow-origin" not in server.client.options(
        "/api/v1/runs", headers={"Origin": "http://evil.example",
                                 "Access-Control-Request-Method": "POST"}).headers


def test_caller_mistakes_are_4xx_with_maml_codes(server):
    bad = doc("- {id: a, block: missing}", {"b": "def run(inputs, params, ctx):\n    return 1"})
    answer = server.client.post("/api/v1/runs", json={"document": bad})
    assert answer.status_code == 422
    error = answer.json()["error"]
    assert error["code"] == "MAML-E100" and error["diagnostics"]
    assert error["diagnostics"][0]["line"] is not None
    both = server.client.post("/api/v1/runs", json={"document": CHAIN, "path": "x"})
    assert both.status_code == 400 and both.json()["error"]["code"] == "MAML-E002"
    outside = server.client.post("/api/v1/runs", json={"path": "/etc/passwd"})
    assert outside.status_code == 400 and "outside" in outside.json()["error"]["message"]
    unknown = server.client.get("/api/v1/runs/nope")
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "MAML-E002"
    inject = server.client.post("/api/v1/runs", json={"document": CHAIN, "inject": ["first:"]})
    assert inject.status_code == 400
    typed = server.client.post("/api/v1/runs", json={"document": CHAIN, "params": [1]})
    assert typed.status_code == 422 and typed.json()["error"]["code"] == "MAML-E002"
    unsigned = server.client.post("/api/v1/runs", json={
        "path": str(ROOT / "documents" / "fanout.maml.md"), "require_signed": True})
    assert unsigned.status_code == 403 and unsigned.json()["error"]["code"] == "MAML-E300"
    assert "fanout.maml.md" in unsigned.json()["error"]["message"]


def test_a_document_over_the_size_limit_is_refused_unread(server):
    huge = CHAIN + "\n" + "x" * (3 * 2**20)
    answer = server.client.post("/api/v1/runs", json={"document": huge})
    assert answer.status_code == 413 and answer.json()["error"]["code"] == "MAML-E002"

    def chunks():
        for _ in range(40):
            yield b"x" * 2**17
    streamed = server.client.post("/api/v1/validate", content=chunks(),
                                  headers={"content-type": "application/json"})
    assert streamed.status_code == 413


def test_validate_logs_devices_and_graph_queries(server):
    valid = server.client.post("/api/v1/validate", json={"document": CHAIN}).json()
    assert valid["documents"][0]["valid"] is True
    by_path = server.client.post("/api/v1/validate", json={"path": "bad.maml.md"})
    assert by_path.status_code == 400
    run_id = server.submit(doc("- {id: talk, block: talk}", {"talk": (
        "def run(inputs, params, ctx):\n    print('hello from the step')\n    return 1")}))
    server.wait(run_id)
    logs = server.client.get(f"/api/v1/runs/{run_id}/steps/talk/logs").json()
    assert [a["attempt"] for a in logs["attempts"]] == [1]
    assert "hello from the step" in logs["attempts"][0]["text"]
    assert server.client.get(f"/api/v1/runs/{run_id}/steps/nope/logs").status_code == 404
    devices = server.client.get("/api/v1/devices").json()
    gpus = [d for d in devices["devices"] if d["kind"] == "cuda"]
    assert len(gpus) == 2 and gpus[1]["health"]["temperature"] == 91
    assert gpus[1]["state"] in ("warning", "critical") and gpus[0]["state"] == "healthy"
    failures = server.client.get("/api/v1/graph/failures", params={"error_class": "oom"}).json()
    assert all(f["error_class"] == "oom" for f in failures["failures"])
    assert server.client.get("/api/v1/graph/rates").status_code == 200
    assert server.client.get("/api/v1/graph/patterns", params={"min_count": 1}).status_code == 200
    verify = server.client.get("/api/v1/graph/verify").json()
    assert verify["ok"] is True and verify["nodes"] > 0
    assert server.client.get("/api/v1/openapi.json").json()["info"]["title"] == "maml"


# silent for a minute: cancelling must not wait for the step to say anything
SLOW = doc("- {id: slow, block: slow}", {"slow": (
    "import time\ndef run(inputs, params, ctx):\n    time.sleep(60)\n    return 1")})


def test_cancel_stops_a_running_run_and_leaves_an_ended_one_alone(server):
    import time

    run_id = server.submit(SLOW)
    deadline = time.monotonic() + 60
    while not server.client.get(f"/api/v1/runs/{run_id}").json()["steps"].get(
            "slow", {}).get("history"):          # its first attempt is on a worker
        assert time.monotonic() < deadline
        time.sleep(0.05)
    answer = server.client.post(f"/api/v1/runs/{run_id}/cancel").json()
    assert answer == {"run_id": run_id, "cancelled": True, "was": "running"}
    run = server.wait(run_id, timeout=10)
    assert run["status"] == "cancelled" and run["steps"]["slow"]["status"] == "cancelled"
    again = server.client.post(f"/api/v1/runs/{run_id}/cancel").json()
    assert again["cancelled"] is False and again["was"] == "cancelled"
