/* The runs list (with a submit form) and the run page: the DAG laid out by dagre, live
   through the run's Server-Sent Events, each step's attempts (error class, device,
   recovery) and logs. */
"use strict";

const EXAMPLE = `---
maml_version: "1.0"
id: urn:maml:example:dashboard
permissions: {execute: true}
pipeline:
  - {id: hello, block: hello}
---
## Code_Blocks
\`\`\`python {id=hello}
def run(inputs, params, ctx):
    return {"hello": "world"}
\`\`\`
`;

async function runsView(view, live) {
  const route = live.route;
  const table = h("table", {id: "runs"});
  const form = submitForm();
  view.replaceChildren(h("h1", {}, "Runs"), table, h("h2", {}, "Run a document"), form);
  const refresh = async () => {
    const {runs} = await api("/runs?limit=200");
    table.replaceChildren(
      h("tr", {}, ["run", "status", "document", "submitted", "duration", "steps",
                   "failures", "recoveries"].map((t) => h("th", {}, t))),
      ...runs.map((r) => h("tr", {"data-run": r.run_id},
        h("td", {}, h("a", {href: `#/runs/${r.run_id}`, class: "mono"}, r.run_id)),
        h("td", {}, badge(r.status)),
        h("td", {class: "mono"}, (r.document || "").split("/").pop()),
        h("td", {}, when(r.submitted_at)),
        h("td", {}, took(r.started_at, r.finished_at)),
        h("td", {}, `${r.steps_done}/${r.steps}`),
        h("td", {}, r.errors), h("td", {}, r.recoveries))));
  };
  await refresh();
  if (live.route !== route) return;       // the user moved on while the list loaded
  let pending = null;
  live.follow(null, () => { pending = pending || setTimeout(() => { pending = null; refresh(); }, 250); });
}

function submitForm() {
  const text = h("textarea", {id: "document", spellcheck: "false"}, EXAMPLE);
  const inject = h("input", {type: "text", id: "inject", placeholder: "faults, e.g. hello:oom@1"});
  const out = h("div");
  const go = async (event) => {
    event.preventDefault();
    try {
      const faults = inject.value.split(/[\s,]+/).filter((f) => f.includes(":"));
      const {run_id} = await api("/runs", {method: "POST", headers: {"content-type": "application/json"},
        body: JSON.stringify({document: text.value, inject: faults})});
      location.hash = `#/runs/${run_id}`;
    } catch (error) {
      const lines = (error.detail && error.detail.diagnostics || [])
        .map((d) => `line ${d.line}: ${d.severity} ${d.code} ${d.message}`);
      out.replaceChildren(h("p", {class: "error"}, [`${error.code}: ${error.message}`, ...lines].join("\n")));
    }
  };
  return h("form", {class: "card", onsubmit: go}, text,
           h("p", {}, h("label", {}, "Inject faults ", inject)),
           h("button", {type: "submit", id: "submit"}, "Run"), out);
}

async function runView(view, live, runId) {
  const route = live.route;
  const run = await api(`/runs/${runId}`);
  if (live.route !== route) return;
  const state = {run, selected: null, trails: {}};
  const header = h("div");
  const dag = h("div", {id: "dag"});
  const steps = h("div", {id: "step"});
  view.replaceChildren(header, dag, steps);
  for (const [id, step] of Object.entries(run.steps)) state.trails[id] = [step.status];
  const draw = () => {
    renderHeader(header, state.run);
    renderDag(dag, state, (id) => { state.selected = id; draw(); });
    renderStep(steps, state);
  };
  draw();
  if (["queued", "running"].includes(run.status)) {
    live.follow(runId, async (event) => {
      applyEvent(state, event);
      if (["run_finished", "run_cancelled"].includes(event.type)) {
        state.run = await api(`/runs/${runId}`);
      }
      draw();
    });
  }
}

function applyEvent(state, e) {
  const steps = state.run.steps;
  const step = (id) => steps[id] || (steps[id] = {status: "pending", attempts: 0, history: []});
  const move = (id, status) => {
    step(id).status = status;
    const trail = state.trails[id] || (state.trails[id] = []);
    if (trail[trail.length - 1] !== status) trail.push(status);
  };
  if (e.type === "run_started") { state.run.status = "running"; state.run.dag = e.steps; }
  if (e.type === "step_started") move(e.step, "waiting");
  if (e.type === "attempt_started") {
    move(e.step, "running");
    Object.assign(step(e.step), {attempts: e.attempt, device: e.device, params: e.params});
    step(e.step).history.push({attempt: e.attempt, device: e.device, status: "running"});
  }
  if (e.type === "attempt_failed") {
    move(e.step, "failed");
    state.run.errors += 1;
    const error = {class: e.error_class, type: e.exception_type, message: e.message, device: e.device};
    step(e.step).error = error;
    Object.assign(lastAttempt(step(e.step), e.attempt), {status: "failed", error});
  }
  if (e.type === "recovery_applied") {
    move(e.step, "recovered");
    state.run.recoveries += 1;
    lastAttempt(step(e.step), e.attempt).recovery = {action: e.action, changes: e.changes};
  }
  if (e.type === "attempt_succeeded") lastAttempt(step(e.step), e.attempt).status = "succeeded";
  if (e.type === "step_finished") move(e.step, e.status);
  if (e.type === "step_skipped") move(e.step, "skipped");
  if (e.type === "run_finished") state.run.status = e.status;
}

function lastAttempt(step, attempt) {
  step.history = step.history || [];
  let entry = step.history.find((a) => a.attempt === attempt);
  if (!entry) step.history.push(entry = {attempt, status: "running"});
  return entry;
}

function renderHeader(header, run) {
  const cancel = ["queued", "running"].includes(run.status)
    ? h("button", {id: "cancel", onclick: () => api(`/runs/${run.run_id}/cancel`, {method: "POST"})}, "Cancel")
    : null;
  header.replaceChildren(
    h("h1", {}, "Run ", h("span", {class: "mono"}, run.run_id), " ", h("span", {id: "run-status"}, badge(run.status)), " ", cancel),
    h("dl", {class: "facts"},
      h("dt", {}, "document"), h("dd", {class: "mono"}, run.document || "–"),
      h("dt", {}, "submitted"), h("dd", {}, when(run.submitted_at)),
      h("dt", {}, "duration"), h("dd", {}, took(run.started_at, run.finished_at)),
      h("dt", {}, "failures / recoveries"), h("dd", {}, `${run.errors} / ${run.recoveries}`)),
    ...(run.problems || []).map((p) => h("p", {class: "error"}, p)));
}

function renderDag(where, state, select) {
  const nodes = state.run.dag && state.run.dag.length ? state.run.dag
    : Object.keys(state.run.steps).map((id) => ({id, kind: "", needs: []}));
  const g = new dagre.graphlib.Graph();
  g.setGraph({rankdir: "LR", nodesep: 24, ranksep: 60, marginx: 16, marginy: 16});
  g.setDefaultEdgeLabel(() => ({}));
  for (const n of nodes) g.setNode(n.id, {width: Math.max(110, 9 * n.id.length + 30), height: 44});
  for (const n of nodes) for (const need of n.needs || []) if (g.hasNode(need)) g.setEdge(need, n.id);
  dagre.layout(g);
  const {width, height} = g.graph();
  const marker = svg("defs", {}, svg("marker", {id: "arrow", viewBox: "0 0 10 10", refX: 9, refY: 5,
    markerWidth: 7, markerHeight: 7, orient: "auto"}, svg("path", {d: "M0,0 L10,5 L0,10 z", fill: "#9aa0a8"})));
  const edges = g.edges().map((e) => svg("path", {d: "M" + g.edge(e).points.map((p) => `${p.x},${p.y}`).join(" L")}));
  const boxes = nodes.map((n) => {
    const at = g.node(n.id);
    const step = state.run.steps[n.id] || {status: "pending"};
    const trail = (state.trails[n.id] || []).join(" → ");
    return svg("g", {class: `node${state.selected === n.id ? " selected" : ""}`, "data-step": n.id,
                     "data-status": step.status, transform: `translate(${at.x - at.width / 2},${at.y - at.height / 2})`},
      svg("title", {}, document.createTextNode(`${n.id} (${n.kind}): ${step.status}\n${trail}`)),
      svg("rect", {width: at.width, height: at.height}),
      svg("text", {x: at.width / 2, y: 16}, document.createTextNode(n.id)),
      svg("text", {x: at.width / 2, y: 32, "font-size": 11, fill: "#6a6f78"}, document.createTextNode(step.status)));
  });
  const drawing = svg("svg", {class: "dag", viewBox: `0 0 ${width} ${height}`, height: Math.min(height, 420)}, marker, ...edges, ...boxes);
  drawing.addEventListener("click", (event) => {
    const node = event.target.closest(".node");
    if (node) select(node.dataset.step);
  });
  where.replaceChildren(drawing);
}

function renderStep(where, state) {
  const id = state.selected || Object.keys(state.run.steps)[0];
  const step = id && state.run.steps[id];
  if (!step) return where.replaceChildren();
  const rows = (step.history || []).map((a) => h("tr", {"data-attempt": a.attempt},
    h("td", {}, a.attempt), h("td", {class: "mono"}, a.device || "–"), h("td", {}, badge(a.status)),
    h("td", {class: "mono"}, a.error ? a.error.class : ""),
    h("td", {}, a.error ? `${a.error.type}: ${a.error.message}` : ""),
    h("td", {class: "mono"}, a.recovery ? recoveryText(a.recovery) : "")));
  const key = `${id}:${step.status}:${step.attempts}`;
  const logs = state.logs && state.logs.key === key ? state.logs.node
    : h("div", {id: "logs"}, h("p", {class: "muted"}, "loading logs…"));
  where.replaceChildren(h("div", {class: "card"},
    h("h2", {}, "Step ", h("span", {class: "mono"}, id), " ", badge(step.status)),
    h("p", {class: "trail", id: "trail"}, (state.trails[id] || []).join(" → ")),
    h("table", {id: "attempts"}, h("tr", {}, ["attempt", "device", "status", "error class", "error", "recovery"].map((t) => h("th", {}, t))), ...rows),
    step.reason ? h("p", {class: "muted"}, step.reason) : null,
    step.error && step.error.traceback ? h("details", {open: true}, h("summary", {},
      `error${placeOf(step.error.location)}`), h("pre", {}, step.error.traceback)) : null,
    step.output !== undefined && step.output !== null ? h("details", {}, h("summary", {}, "output"), h("pre", {}, JSON.stringify(step.output, null, 1))) : null,
    h("h2", {}, "Logs"), logs));
  if (state.logs && state.logs.key === key) return;
  state.logs = {key, node: logs};
  api(`/runs/${state.run.run_id}/steps/${encodeURIComponent(id)}/logs`).then(({attempts}) => {
    logs.replaceChildren(...(attempts.length ? attempts.map((a) => h("div", {},
      h("p", {class: "muted"}, `attempt ${a.attempt}`), h("pre", {}, a.text || "(empty)")))
      : [h("p", {class: "muted"}, "no log lines")]));
  }).catch((error) => showError(logs, error));
}

function recoveryText(recovery) {
  const changes = Object.entries(recovery.changes || {})
    .map(([key, value]) => Array.isArray(value) && value.length === 2 ? `${key} ${value[0]} → ${value[1]}` : `${key}: ${JSON.stringify(value)}`);
  return changes.length ? `${recovery.action} (${changes.join(", ")})` : recovery.action;
}

function placeOf(location) {
  if (!location || !location.line) return "";
  return ` at ${(location.path || "").split("/").pop()}:${location.line}${location.in ? ` (${location.in})` : ""}`;
}
