// The sparkd dashboard (embedded in the binary; plain JS, no build step). It starts from the history the page
// carries, then follows /events. Everything it shows is also written to data-* attributes of #summary and of
// each namespace card, which the browser test reads.
"use strict";

const MAX_SAMPLES = 600;
const CHART_SAMPLES = 300;
const token = new URLSearchParams(location.search).get("token");
const samples = JSON.parse(document.getElementById("initial-history").textContent).samples || [];
let updates = 0;

function el(tag, attrs, text) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

function svgEl(tag, attrs) {
  const e = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  return e;
}

function bytes(n) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(1) : n) + " " + units[i];
}

function nsOf(sample, name) {
  return (sample.namespaces || []).find((n) => n.name === name);
}

// Polyline points for values in [0, max] (null = gap in data: skipped), x by sample index.
function points(values, max, width, height) {
  const out = [];
  const step = values.length > 1 ? width / (values.length - 1) : width;
  values.forEach((v, i) => {
    if (v === null) return;
    out.push([(i * step).toFixed(1), (height - (v / max) * height).toFixed(1)]);
  });
  if (out.length === 1) out.push([(+out[0][0] + 4).toFixed(1), out[0][1]]);
  return out;
}

function drawLine(svg, cls, pts) {
  let line = svg.querySelector("polyline." + cls);
  if (!line) { line = svgEl("polyline", { class: cls }); svg.appendChild(line); }
  line.setAttribute("points", pts.map((p) => p.join(",")).join(" "));
}

// Per-interval and cumulative hit rate of one namespace over the recent samples.
function hitRates(name, recent) {
  const interval = [];
  const cumulative = [];
  recent.forEach((s, i) => {
    const n = nsOf(s, name);
    if (!n) { interval.push(null); cumulative.push(null); return; }
    const all = n.hits + n.misses;
    cumulative.push(all > 0 ? n.hits / all : null);
    const p = i > 0 ? nsOf(recent[i - 1], name) : null;
    const dh = p ? n.hits - p.hits : 0;
    const dm = p ? n.misses - p.misses : 0;
    interval.push(dh + dm > 0 ? dh / (dh + dm) : null);
  });
  return { interval, cumulative };
}

function bar(label, used, budget) {
  const wrap = el("div");
  const pct = budget > 0 ? Math.min(100, (used / budget) * 100) : 0;
  const b = el("div", { class: "bar" });
  b.appendChild(el("span", { style: "width:" + pct.toFixed(1) + "%" }));
  wrap.appendChild(el("div", { class: "bar-label" },
    label + ": " + bytes(used) + " of " + (budget > 0 ? bytes(budget) : "unbounded")));
  wrap.appendChild(b);
  return wrap;
}

function renderNamespace(n, recent) {
  const root = document.getElementById("namespaces");
  let card = root.querySelector('[data-namespace="' + n.name + '"]');
  if (!card) {
    card = el("div", { class: "ns", "data-namespace": n.name });
    root.appendChild(card);
  }
  card.replaceChildren();
  const all = n.hits + n.misses;
  card.appendChild(el("h3", {}, n.name));
  const nums = el("div", { class: "nums" });
  for (const [k, v] of [["hit rate", all ? ((100 * n.hits) / all).toFixed(1) + "%" : "–"],
    ["hits", n.hits], ["misses", n.misses], ["entries", n.entries], ["evictions", n.evictions]]) {
    const s = el("span", {}, k + " ");
    s.appendChild(el("b", {}, String(v)));
    nums.appendChild(s);
  }
  card.appendChild(nums);
  const svg = svgEl("svg", { class: "chart", viewBox: "0 0 600 100", preserveAspectRatio: "none" });
  const rates = hitRates(n.name, recent);
  const cum = points(rates.cumulative, 1, 600, 100);
  drawLine(svg, "cumulative", cum);
  drawLine(svg, "rate", points(rates.interval, 1, 600, 100));
  svg.setAttribute("data-points", String(rates.cumulative.filter((v) => v !== null).length));
  card.appendChild(svg);
  card.appendChild(bar("memory", n.bytes_in_memory, n.memory_budget));
  card.appendChild(bar("disk", n.bytes_on_disk, n.disk_budget));
  card.dataset.hits = n.hits;
  card.dataset.misses = n.misses;
  card.dataset.evictions = n.evictions;
  card.dataset.points = svg.getAttribute("data-points");
}

function requestRates(recent) {
  return recent.map((s, i) => {
    if (i === 0) return null;
    const p = recent[i - 1];
    const dt = (s.t_ms - p.t_ms) / 1000;
    const dr = s.socket_requests + s.http_requests - p.socket_requests - p.http_requests;
    return dt > 0 ? dr / dt : null;
  });
}

function render() {
  const summary = document.getElementById("summary");
  summary.dataset.js = "loaded";
  summary.dataset.css = getComputedStyle(document.documentElement).getPropertyValue("--sparkd-css").trim() || "missing";
  summary.dataset.samples = String(samples.length);
  summary.dataset.updates = String(updates);
  if (!samples.length) return;
  const recent = samples.slice(-CHART_SAMPLES);
  const last = recent[recent.length - 1];
  document.getElementById("uptime").textContent = "up " + Math.round(last.uptime_seconds) + " s";
  document.getElementById("conns").textContent = String(last.connections);
  const rps = requestRates(recent);
  const lastRate = rps[rps.length - 1];
  document.getElementById("rps").textContent = lastRate === null || lastRate === undefined ? "–" : lastRate.toFixed(1);
  const max = Math.max(1, ...rps.filter((v) => v !== null));
  drawLine(document.getElementById("rps-chart"), "rps", points(rps, max, 600, 120));
  let chartPoints = 0;
  for (const n of last.namespaces) {
    renderNamespace(n, recent);
    chartPoints += +document.querySelector('[data-namespace="' + n.name + '"]').dataset.points;
  }
  const tbody = document.querySelector("#clients tbody");
  tbody.replaceChildren();
  for (const c of last.clients) {
    const tr = el("tr");
    for (const v of [c.connection, c.name, c.pid]) tr.appendChild(el("td", {}, String(v)));
    tbody.appendChild(tr);
  }
  summary.dataset.namespaces = last.namespaces.map((n) => n.name).join(",");
  summary.dataset.chartPoints = String(chartPoints);
  summary.dataset.clients = String(last.clients.length);
  summary.dataset.requests = String(last.socket_requests + last.http_requests);
}

function follow() {
  const src = new EventSource("events" + (token ? "?token=" + encodeURIComponent(token) : ""));
  const live = document.getElementById("live");
  src.onopen = () => { live.textContent = "live"; };
  src.onerror = () => { live.textContent = "reconnecting…"; };
  src.onmessage = (e) => {
    const s = JSON.parse(e.data);
    const prev = samples[samples.length - 1];
    if (prev && prev.t_ms === s.t_ms) return;
    samples.push(s);
    if (samples.length > MAX_SAMPLES) samples.shift();
    updates++;
    render();
  };
}

render();
// After the load event, so a page that is only dumped once loaded is complete without the live stream.
window.addEventListener("load", () => setTimeout(follow, 0));
