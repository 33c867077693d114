"""`maml graph ...` and `maml keys ...` from the command line."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from maml.cli import cli
from maml.graph import keys
from maml.graph.record import Recorder

from graph_helpers import CPU, GPU0, play_run


@pytest.fixture
def graph_dir(tmp_path: Path, key) -> Path:
    with Recorder(tmp_path / "g", key=key) as recorder:
        for n in range(4):
            play_run(recorder, f"run-{n}", {"train": [(GPU0, "oom", "halve_batch"), (GPU0, None)],
                                            "post": [(CPU, None)]})
    return tmp_path / "g"


def _invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return result.exit_code, result.output


def _maml(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "maml", *args], capture_output=True, text=True,
                          env=os.environ.copy(), timeout=120)


def test_show_lists_runs_and_one_run(graph_dir):
    code, out = _invoke("graph", "show", "--graph", str(graph_dir), "--json")
    runs = json.loads(out)["runs"]
    assert code == 0 and [r["run"] for r in runs] == [f"run-{n}" for n in range(4)]
    assert {(r["status"], r["errors"], r["recoveries"]) for r in runs} == {("succeeded", 1, 1)}
    code, out = _invoke("graph", "show", "run-2", "--graph", str(graph_dir))
    assert code == 0 and "error oom in train attempt 1" in out and "recovery halve_batch" in out


def test_patterns_and_rates(graph_dir):
    code, out = _invoke("graph", "patterns", "--min-count", "4", "--graph", str(graph_dir),
                        "--json")
    patterns = json.loads(out)["patterns"]
    assert code == 0 and {(p["type"], p["key"]) for p in patterns} >= {("error_class", "oom"),
                                                                      ("device", "cuda:0")}
    assert all(p["count"] == 4 and p["recommended_action"] == "halve_batch" for p in patterns)
    code, out = _invoke("graph", "rates", "--graph", str(graph_dir))
    assert code == 0 and "halve_batch" in out and "100%" in out


def test_verify_passes_then_names_the_tampered_node(graph_dir, tmp_path):
    done = _maml("graph", "verify", "--graph", str(graph_dir))
    assert done.returncode == 0 and "signatures checked" in done.stdout
    log = graph_dir / "log.jsonl"
    lines = log.read_bytes().splitlines(keepends=True)
    at = next(i for i, line in enumerate(lines) if b'"type":"recovery"' in line)
    lines[at] = lines[at].replace(b"halve_batch", b"halve_bench")
    log.write_bytes(b"".join(lines))
    done = _maml("graph", "verify", "--graph", str(graph_dir))
    node = json.loads(lines[at])["id"]
    assert done.returncode == 1
    assert f"log.jsonl:{at + 1}" in done.stderr and node in done.stderr
    assert "Traceback" not in done.stderr


def test_verify_with_someone_elses_key_refuses(graph_dir, tmp_path):
    other = keys.create_key(tmp_path / "other")
    public = other.path.with_name(keys.PUBLIC_NAME)
    done = _maml("graph", "verify", "--graph", str(graph_dir), "--key", str(public), "--json")
    assert done.returncode == 1 and "not trusted" in json.loads(done.stdout)["reason"]


@pytest.mark.parametrize("fmt", ["json", "graphml", "dot"])
def test_export(graph_dir, tmp_path, fmt):
    out = tmp_path / f"graph.{fmt}"
    code, _ = _invoke("graph", "export", "--format", fmt, "-o", str(out), "--graph",
                      str(graph_dir))
    assert code == 0
    import maml.graph

    graph = maml.graph.open(graph_dir)
    edges = graph.nx.number_of_edges()
    if fmt == "json":
        data = json.loads(out.read_text())
        assert (len(data["nodes"]), len(data["edges"])) == (len(graph), edges)
    elif fmt == "graphml":
        import networkx

        back = networkx.read_graphml(out)
        assert (back.number_of_nodes(), back.number_of_edges()) == (len(graph), edges)
    else:
        assert out.read_text().count(" -> ") == edges


def test_report_is_one_self_contained_page(graph_dir, tmp_path):
    out = tmp_path / "report.html"
    code, _ = _invoke("graph", "report", "-o", str(out), "--graph", str(graph_dir))
    page = out.read_text()
    assert code == 0 and page.count("<svg") == 3
    assert not re.findall(r'(?:src|href)="(?!#|data:)', page)      # nothing to fetch
    assert "<script" not in page
    assert "halve_batch" in page


def test_keys_init_show_export(config_dir):
    code, out = _invoke("keys", "init", "--json")
    created = json.loads(out)
    assert code == 0 and Path(created["path"]).parent == config_dir
    done = _maml("keys", "init")
    assert done.returncode == 1 and "--force" in done.stderr
    code, out = _invoke("keys", "show", "--json")
    assert json.loads(out)["key_id"] == created["key_id"]
    code, out = _invoke("keys", "export", "--public")
    assert keys.key_id(keys.load_public_key(out.encode())) == created["key_id"]
    code, out = _invoke("keys", "init", "--force", "--json")
    assert json.loads(out)["key_id"] != created["key_id"]
    assert created["key_id"] in json.loads(_invoke("keys", "show", "--json")[1])["trusted"]


def test_verify_without_a_graph_says_so(tmp_path):
    done = _maml("graph", "verify", "--graph", str(tmp_path / "none"))
    assert done.returncode == 1 and "no error graph at" in done.stderr


def test_reading_commands_accept_a_public_key(graph_dir, config_dir):
    public = config_dir / keys.PUBLIC_NAME
    moved = config_dir.parent / "elsewhere.pub"
    public.rename(moved)
    (config_dir / keys.PRIVATE_NAME).unlink()        # this machine has no key of its own
    done = _maml("graph", "rates", "--graph", str(graph_dir))
    assert done.returncode == 1 and "no trusted public key" in done.stderr
    code, out = _invoke("graph", "rates", "--graph", str(graph_dir), "--key", str(moved), "--json")
    assert code == 0 and json.loads(out)["rates"][0]["action"] == "halve_batch"
