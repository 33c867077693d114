"""The dashboard in a real browser: Playwright driving the distribution's Chromium.

Nothing is downloaded: Playwright launches /usr/bin/chromium (Debian's `chromium` package,
which .ci/run installs). Screenshots of the run page, the error-graph view and the GPU panel
are kept under the test's tmp dir.
"""

from __future__ import annotations

import shutil

import pytest

from serve_helpers import doc

sync_api = pytest.importorskip("playwright.sync_api", reason="the dashboard test needs playwright")
CHROMIUM = next(filter(None, map(shutil.which, ("chromium", "chromium-browser"))), None)
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no Chromium installed (Debian: apt-get "
                                "install chromium); Playwright must not download one")

TRAIN = doc("- {id: train, block: train, params: {batch_size: 64}}",
            {"train": "def run(inputs, params, ctx):\n    print('training with', params['batch_size'])"
                      "\n    return {'batch': params['batch_size']}"},
            policy="policy:\n  retries: 3\n  backoff: {initial: 0.01s, max: 0.05s}\n"
                   "  on: {oom: [halve_batch]}\n")

# records every status the DAG node of step `train` shows, as the page changes it
WATCH_TRAIN = """
window.__seen = [];
new MutationObserver(() => {
  const node = document.querySelector('#dag [data-step="train"]');
  const status = node && node.getAttribute('data-status');
  if (status && window.__seen[window.__seen.length - 1] !== status) window.__seen.push(status);
}).observe(document, {subtree: true, childList: true, attributes: true});
"""


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM,
                                              args=["--no-sandbox", "--disable-gpu"])
        yield launched
        launched.close()


def test_a_run_recovers_from_oom_live_and_the_graph_and_gpu_views_render(server, browser,
                                                                          tmp_path):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    page.on("pageerror", lambda error: pytest.fail(f"script error on the page: {error}"))
    page.add_init_script(WATCH_TRAIN)
    page.goto(f"{server.url}/?token={server.token}")       # sets the cookie, then the runs list
    page.wait_for_selector("#runs")
    page.fill("#document", TRAIN)
    page.fill("#inject", "train:oom@1")
    page.click("#submit")
    page.wait_for_url("**/#/runs/*")
    page.wait_for_selector("#run-status [data-status=succeeded]", timeout=90_000)
    seen = page.evaluate("window.__seen")
    assert [s for s in seen if s in ("failed", "recovered", "succeeded")] == [
        "failed", "recovered", "succeeded"], seen
    assert "failed → recovered → running → succeeded" in page.inner_text("#trail")
    first = page.locator("#attempts tr[data-attempt='1']").inner_text()
    assert "oom" in first and "halve_batch" in first and "cpu" in first
    page.wait_for_selector("#logs pre:has-text('training with 32')")
    page.screenshot(path=str(tmp_path / "run.png"), full_page=True)

    page.click("[data-nav=graph]")
    page.wait_for_selector("#verify .s-succeeded:has-text('verified')")
    page.wait_for_selector("canvas#by-class")
    assert page.evaluate("Chart.getChart('by-class').data.labels").count("oom") == 1
    page.screenshot(path=str(tmp_path / "graph.png"), full_page=True)

    page.click("[data-nav=gpus]")
    hot = page.wait_for_selector("[data-gpu='cuda:1'] [data-status]")
    assert hot.get_attribute("data-status") in ("warning", "critical")
    assert page.inner_text("[data-gpu='cuda:1'] [data-field=temperature]").startswith("91")
    page.screenshot(path=str(tmp_path / "gpus.png"), full_page=True)
    page.click("[data-nav=api]")
    assert "/api/v1/runs/{run_id}/events" in page.inner_text("#api")
    assert all(url.startswith(server.url) for url in requests), "a request left the server"
    assert all((tmp_path / name).stat().st_size > 10_000 for name in ("run.png", "graph.png",
                                                                     "gpus.png"))
    page.close()
