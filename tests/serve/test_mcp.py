"""MCP tools through the SDK's own client: `maml mcp` over stdio, and /mcp over HTTP."""

from __future__ import annotations

import json
import sys
import time

import anyio
import httpx
import pytest

from serve_helpers import FAKE_GPUS, ROOT, TOKEN, doc

mcp = pytest.importorskip("mcp", reason="the MCP tests need the serve extra")

TOOLS = {"validate_document", "run_document", "get_run", "list_runs", "get_step_logs",
         "cancel_run", "query_failures", "failure_patterns", "recovery_success_rates",
         "verify_graph", "list_devices"}
FLAKY = doc("- {id: fetch, block: fetch}",
            {"fetch": "def run(inputs, params, ctx):\n    return {'rows': params.get('rows', 3)}"},
            policy="policy:\n  retries: 2\n  backoff: {initial: 0.01s, max: 0.02s}\n"
                   "  on: {transient: [retry]}\n")


def data(result):
    assert not result.is_error, result.content
    return result.structured_content


async def _stdio_session(tmp_path):
    (tmp_path / "fake.json").write_text(json.dumps(FAKE_GPUS))
    params = mcp.StdioServerParameters(
        command=sys.executable, args=["-m", "maml", "mcp", "--state-dir", str(tmp_path / "state")],
        cwd=str(tmp_path), env={"PYTHONPATH": str(ROOT), "MAML_CONFIG_DIR": str(tmp_path / "cfg"),
                                "MAML_GRAPH": str(tmp_path / "graph"),
                                "MAML_FAKE_NVML": str(tmp_path / "fake.json")})
    async with mcp.Client(params, read_timeout_seconds=60) as client:
        tools = await client.list_tools()
        assert {tool.name for tool in tools.tools} == TOOLS
        schema = next(t for t in tools.tools if t.name == "run_document").input_schema
        assert schema["required"] == ["document"] and "inject" in schema["properties"]

        assert data(await client.call_tool("validate_document", {"document": FLAKY}))[
            "documents"][0]["valid"] is True
        bad = await client.call_tool("run_document", {"document": FLAKY.replace(
            "block: fetch", "block: nowhere")})
        # maml's own error reaches the client as it is: its code first, the API's body
        assert bad.is_error and bad.content[0].text.startswith("MAML-E100: ")
        body = bad.structured_content["error"]
        assert body["code"] == "MAML-E100" and body["diagnostics"][0]["code"]
        assert body["message"].endswith(" [MAML-E100]") and bad.content[0].text.startswith(
            "MAML-E100: " + body["message"].removesuffix(" [MAML-E100]"))
        wrong_type = await client.call_tool("run_document", {"document": FLAKY, "params": "x"})
        assert wrong_type.is_error

        run_id = data(await client.call_tool("run_document", {
            "document": FLAKY, "params": {"rows": 7}, "inject": ["fetch:transient@1"]}))["run_id"]
        deadline = time.monotonic() + 60
        while (run := data(await client.call_tool("get_run", {"run_id": run_id})))[
                "status"] in ("queued", "running"):
            assert time.monotonic() < deadline, run
            await anyio.sleep(0.1)
        assert run["status"] == "succeeded" and run["steps"]["fetch"]["output"] == {"rows": 7}
        assert run["errors"] == 1 and run["recoveries"] == 1
        assert data(await client.call_tool("list_runs", {}))["runs"][0]["run_id"] == run_id
        failures = data(await client.call_tool("query_failures", {"error_class": "transient"}))
        assert failures["count"] == 1 and failures["failures"][0]["injected"] is True
        rates = data(await client.call_tool("recovery_success_rates", {}))["rates"]
        assert [(r["error_class"], r["action"], r["worked"]) for r in rates] == [
            ("transient", "retry", 1)]
        assert data(await client.call_tool("failure_patterns", {"min_count": 1}))["patterns"]
        assert data(await client.call_tool("verify_graph", {}))["ok"] is True
        gpus = [d for d in data(await client.call_tool("list_devices", {}))["devices"]
                if d["kind"] == "cuda"]
        assert len(gpus) == 2
        assert "attempts" in data(await client.call_tool("get_step_logs", {
            "run_id": run_id, "step": "fetch"}))
        missing = await client.call_tool("get_run", {"run_id": "nope"})
        assert missing.is_error
        assert missing.content[0].text == "MAML-E002: no run 'nope' on this server"
        assert missing.structured_content == {"error": {
            "code": "MAML-E002", "message": "no run 'nope' on this server [MAML-E002]"}}

        resources = {str(r.uri) for r in (await client.list_resources()).resources}
        assert "maml://schemas/front-matter" in resources
        read = await client.read_resource("maml://schemas/pipeline")
        assert "$schema" in json.loads(read.contents[0].text)


def test_maml_mcp_over_stdio_validates_runs_polls_and_queries(tmp_path):
    anyio.run(_stdio_session, tmp_path)


async def _http_session(server):
    import httpx2
    from mcp.client.streamable_http import streamable_http_client

    async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {TOKEN}"},
                                  timeout=30) as http:
        transport = streamable_http_client(f"{server.url}/mcp", http_client=http)
        async with mcp.Client(transport) as client:
            assert {t.name for t in (await client.list_tools()).tools} == TOOLS
            checked = data(await client.call_tool("validate_document", {"document": FLAKY}))
            assert checked["documents"][0]["valid"] is True


def test_the_same_tools_over_streamable_http_need_the_token(server):
    anyio.run(_http_session, server)
    refused = httpx.post(f"{server.url}/mcp", json={"jsonrpc": "2.0", "id": 1,
                                                    "method": "tools/list"})
    assert refused.status_code == 401
