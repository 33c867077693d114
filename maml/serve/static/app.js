/* The dashboard's router and its one live connection. Views: #/ (runs), #/runs/ID (a run),
   #/graph (error graph), #/gpus (GPU panel), #/api (the
   OpenAPI document as a table). Live updates come from Server-Sent Events
   (EventSource sends the HttpOnly token cookie; no token is ever visible to scripts). */
"use strict";

const live = {
  source: null,
  route: 0,            // bumped on every navigation: a view that finished loading late
                       // checks it before it starts following events for a page now gone
  follow(runId, onEvent) {
    this.stop();
    const url = runId ? `/api/v1/runs/${runId}/events` : "/api/v1/events";
    const source = this.source = new EventSource(url);
    const dot = document.getElementById("live");
    source.onopen = () => dot.classList.add("on");
    source.onerror = () => dot.classList.remove("on");
    source.onmessage = null;
    const handle = (message) => {
      const event = JSON.parse(message.data);
      onEvent(event);
      if (runId && event.type === "run_finished") this.stop();
    };
    for (const type of ["run_queued", "run_requeued", "run_started", "step_started", "attempt_started",
                        "attempt_failed", "recovery_applied", "attempt_succeeded", "step_finished",
                        "step_skipped", "run_finished", "run_cancelled"]) {
      source.addEventListener(type, handle);
    }
  },
  stop() {
    if (this.source) this.source.close();
    this.source = null;
    document.getElementById("live").classList.remove("on");
  },
};

async function route() {
  live.stop();
  live.route += 1;
  const view = document.getElementById("view");
  const hash = location.hash || "#/";
  const [, page, id] = hash.split("/");
  for (const link of document.querySelectorAll("[data-nav]")) {
    link.classList.toggle("active", link.dataset.nav === (["graph", "gpus", "api"].includes(page) ? page : "runs"));
  }
  try {
    if (page === "runs" && id) await runView(view, live, decodeURIComponent(id));
    else if (page === "graph") await graphView(view);
    else if (page === "gpus") await gpuView(view);
    else if (page === "api") await apiView(view);
    else await runsView(view, live);
  } catch (error) {
    showError(view, error);
  }
}

window.addEventListener("hashchange", route);
window.addEventListener("DOMContentLoaded", route);
