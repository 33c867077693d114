/* Small DOM and fetch helpers shared by the dashboard's views. Text always goes in through
   textContent (never innerHTML), so nothing a document or an error message says can become
   markup. */
"use strict";

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

function svg(tag, attrs, ...children) {
  const el = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [key, value] of Object.entries(attrs || {})) el.setAttribute(key, String(value));
  for (const child of children.flat()) if (child) el.append(child);
  return el;
}

function badge(status) {
  return h("span", {class: `badge s-${status}`, "data-status": status}, status);
}

async function api(path, options) {
  const answer = await fetch(`/api/v1${path}`, Object.assign({credentials: "same-origin"}, options));
  const body = await answer.json().catch(() => ({}));
  if (!answer.ok) {
    const error = body.error || {code: `HTTP ${answer.status}`, message: answer.statusText};
    throw Object.assign(new Error(`${error.message}`), {code: error.code, detail: error});
  }
  return body;
}

function when(seconds) {
  return seconds ? new Date(seconds * 1000).toLocaleString() : "–";
}

function took(start, end) {
  if (!start) return "–";
  const s = (end || Date.now() / 1000) - start;
  return s < 60 ? `${s.toFixed(1)} s` : `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`;
}

function gib(bytes) {
  return bytes === null || bytes === undefined ? "–" : `${(bytes / 2 ** 30).toFixed(1)} GiB`;
}

function showError(where, error) {
  where.replaceChildren(h("p", {class: "error"}, `${error.code || "error"}: ${error.message}`));
}
