/* The error-graph view (failure distribution, recovery success, recurring patterns) and the
   GPU panel (live temperature, memory, utilisation, power, health per GPU), with Chart.js. */
"use strict";

const PALETTE = ["#2f6fdb", "#d64545", "#1f9d55", "#d98a00", "#8e44ad", "#16a2b8", "#6a6f78", "#c2185b"];

function countBy(rows, key) {
  const counts = {};
  for (const row of rows) {
    const value = typeof key === "function" ? key(row) : row[key];
    counts[value ?? "unknown"] = (counts[value ?? "unknown"] || 0) + 1;
  }
  return counts;
}

function barChart(canvas, title, counts, options) {
  const labels = Object.keys(counts);
  return new Chart(canvas, {
    type: "bar",
    data: {labels, datasets: [{label: title, data: labels.map((l) => counts[l]),
                                backgroundColor: labels.map((_, i) => PALETTE[i % PALETTE.length])}]},
    options: Object.assign({responsive: true, maintainAspectRatio: false, animation: false,
                            scales: {y: {beginAtZero: true, ticks: {precision: 0}}},
                            plugins: {legend: {display: false}, title: {display: true, text: title}}}, options || {}),
  });
}

async function graphView(view) {
  const charts = h("div", {class: "row", id: "graph-charts"});
  const patterns = h("div", {id: "patterns"});
  const verdict = h("p", {id: "verify"});
  view.replaceChildren(h("h1", {}, "Error graph"), verdict, charts, h("h2", {}, "Recurring patterns"), patterns);
  let failures, rates, found, report;
  try {
    [failures, rates, found, report] = await Promise.all([
      api("/graph/failures?limit=100000"), api("/graph/rates"), api("/graph/patterns?min_count=2"), api("/graph/verify")]);
  } catch (error) {
    return showError(charts, error);
  }
  verdict.replaceChildren(h("span", {class: `badge s-${report.ok ? "succeeded" : "failed"}`},
                                report.ok ? "verified" : "NOT verified"),
    ` signatures and hash links: ${report.ok ? "verified" : report.reason} (${report.nodes} nodes)`);
  const panel = (id) => { const c = h("canvas", {id}); charts.append(h("div", {class: "card grow"}, h("div", {class: "chart"}, c))); return c; };
  const rows = failures.failures;
  barChart(panel("by-class"), `Failures by error class (${failures.count})`, countBy(rows, "error_class"));
  barChart(panel("by-device"), "Failures by device", countBy(rows, (r) => r.device && r.device.id || r.device_class));
  barChart(panel("by-kind"), "Failures by step kind", countBy(rows, (r) => r.kind || r.step_kind));
  const tried = rates.rates.filter((r) => r.rate !== null);
  barChart(panel("rates"), "Recovery success rate (%) by error class × action",
    Object.fromEntries(tried.map((r) => [`${r.error_class} → ${r.action}`, Math.round(100 * r.rate)])),
    {scales: {y: {min: 0, max: 100}}});
  patterns.replaceChildren(found.patterns.length ? h("table", {},
    h("tr", {}, ["pattern", "key", "count", "runs", "last seen", "recommended action", "because"].map((t) => h("th", {}, t))),
    ...found.patterns.map((p) => h("tr", {}, h("td", {}, p.type), h("td", {class: "mono"}, JSON.stringify(p.key)),
      h("td", {}, p.count), h("td", {}, p.runs), h("td", {}, when(p.last_seen)),
      h("td", {}, h("strong", {}, p.recommended_action || "–")), h("td", {class: "muted"}, p.basis || ""))))
    : h("p", {class: "muted"}, "no failure has recurred yet"));
}

const HISTORY = 60;   // samples kept per GPU for the charts (two minutes at one per 2 s)

async function gpuView(view) {
  const grid = h("div", {class: "row", id: "gpus"});
  const note = h("p", {class: "muted"});
  view.replaceChildren(h("h1", {}, "GPUs"), note, grid);
  const cards = {};
  const tick = async () => {
    if (!grid.isConnected) return clearInterval(timer);
    let snapshot;
    try { snapshot = await api("/devices"); } catch (error) { return showError(note, error); }
    note.textContent = `${snapshot.note} (source: ${snapshot.source})`;
    for (const device of snapshot.devices) {
      if (device.kind === "cpu") continue;
      const card = cards[device.id] || (cards[device.id] = gpuCard(grid, device));
      updateGpu(card, device);
    }
    if (!snapshot.devices.some((d) => d.kind !== "cpu") && !grid.children.length) {
      grid.append(h("p", {class: "muted"}, "no GPU on this machine"));
    }
  };
  const timer = setInterval(tick, 2000);
  await tick();
}

function gpuCard(grid, device) {
  const canvas = h("canvas");
  const card = {facts: h("dl", {class: "facts"}), state: h("span"), reasons: h("ul", {class: "muted"}),
                memory: h("div"), samples: []};
  card.chart = new Chart(canvas, {type: "line", data: {labels: [], datasets: [
      {label: "temperature °C", data: [], borderColor: "#d64545", tension: .2, pointRadius: 2},
      {label: "utilisation %", data: [], borderColor: "#2f6fdb", tension: .2, pointRadius: 2},
      {label: "memory %", data: [], borderColor: "#1f9d55", tension: .2, pointRadius: 2}]},
    options: {responsive: true, maintainAspectRatio: false, animation: false,
              scales: {y: {min: 0, max: 100}, x: {display: false}}}});
  grid.append(h("div", {class: "card gpu", "data-gpu": device.id},
    h("h2", {}, `${device.id} · ${device.name} `, card.state), card.facts, card.memory,
    card.reasons, h("div", {class: "chart"}, canvas)));
  return card;
}

function updateGpu(card, device) {
  const s = device.health || {};
  const total = device.total_memory || s.memory_total;
  const memoryPct = total && s.memory_used !== undefined ? 100 * s.memory_used / total : null;
  card.state.replaceChildren(badge(device.state || "unknown"));
  card.facts.replaceChildren(
    h("dt", {}, "temperature"), h("dd", {"data-field": "temperature"}, s.temperature ?? "–", " °C"),
    h("dt", {}, "utilisation"), h("dd", {"data-field": "utilization"}, s.utilization_gpu ?? "–", " %"),
    h("dt", {}, "memory"), h("dd", {}, `${gib(s.memory_used)} / ${gib(total)}`),
    h("dt", {}, "power"), h("dd", {}, s.power_w ? `${Math.round(s.power_w)} / ${Math.round(s.power_limit_w || 0)} W` : "–"));
  card.memory.replaceChildren(h("div", {class: "meter"}, h("div", {style: `width:${memoryPct ?? 0}%`})));
  card.reasons.replaceChildren(...(s.reasons || []).map((r) => h("li", {}, r)));
  const data = card.chart.data;
  data.labels.push(new Date().toLocaleTimeString());
  [s.temperature, s.utilization_gpu, memoryPct].forEach((v, i) => data.datasets[i].data.push(v ?? null));
  if (data.labels.length > HISTORY) { data.labels.shift(); data.datasets.forEach((d) => d.data.shift()); }
  card.chart.update();
}

async function apiView(view) {
  const answer = await fetch("/api/v1/openapi.json", {credentials: "same-origin"});
  const spec = await answer.json();
  const rows = [];
  for (const [path, methods] of Object.entries(spec.paths)) {
    for (const [method, op] of Object.entries(methods)) {
      const params = (op.parameters || []).map((p) => `${p.name}${p.required ? "" : "?"} (${p.in})`);
      const body = op.requestBody ? Object.values(op.requestBody.content)[0].schema.$ref : null;
      rows.push(h("tr", {}, h("td", {class: "mono"}, method.toUpperCase()), h("td", {class: "mono"}, path),
        h("td", {}, op.summary || ""), h("td", {class: "mono muted"}, [...params, body ? `body: ${body.split("/").pop()}` : ""].filter(Boolean).join(", "))));
    }
  }
  view.replaceChildren(h("h1", {}, `API ${spec.info.version}`),
    h("p", {class: "muted"}, "Every request needs the bearer token: Authorization: Bearer <token> (maml serve --show-token). ",
      h("a", {href: "/api/v1/openapi.json"}, "openapi.json")),
    h("table", {id: "api"}, h("tr", {}, ["method", "path", "what", "parameters"].map((t) => h("th", {}, t))), ...rows));
}
