// The distributed3 dashboard: one page, fed by server-sent events from /events.
// Nothing is fetched from anywhere but this server.
"use strict";

const state = {
  workers: [], totals: {}, tasks: [], transfers: [], history: new Map(), last: 0,
  tab: "cluster", worker: null, shownAt: 0, clockSkew: 0,
};
const STREAM_SECONDS = 60;
const SVG = "http://www.w3.org/2000/svg";

function $(sel) { return document.querySelector(sel); }
function el(tag, attrs, text) {
  const node = tag.startsWith("svg:") ? document.createElementNS(SVG, tag.slice(4))
                                      : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}
function bytes(n) {
  if (n === null || n === undefined) return "";
  const units = ["B", "kB", "MB", "GB", "TB"];
  let i = 0;
  while (n >= 1000 && i < units.length - 1) { n /= 1000; i++; }
  return (i ? n.toFixed(1) : n) + " " + units[i];
}
function colour(name) {  // FNV-1a, spread round the wheel by the golden angle
  let h = 2166136261;
  for (const c of name) h = Math.imul(h ^ c.charCodeAt(0), 16777619) >>> 0;
  return `hsl(${(h % 1000) * 137.508 % 360}, 65%, 50%)`;
}

// -- tabs ---------------------------------------------------------------------------

function show(tab) {
  state.tab = tab;
  for (const section of document.querySelectorAll(".tab"))
    section.classList.toggle("shown", section.id === "tab-" + tab);
  for (const a of document.querySelectorAll("nav a"))
    a.classList.toggle("active", a.dataset.tab === tab);
  render();
  if (tab === "data") loadBiggest();
  if (tab === "worker") loadWorker();
}
document.addEventListener("click", (e) => {
  const a = e.target.closest("a[data-tab]");
  if (a) { e.preventDefault(); history.replaceState(null, "", "#" + a.dataset.tab); show(a.dataset.tab); }
});

// -- the feed -----------------------------------------------------------------------

function connect() {
  const source = new EventSource("/events?after=" + state.last);
  source.onopen = () => { $("#status").textContent = "live"; $("#status").className = "status live"; };
  source.onerror = () => { $("#status").textContent = "reconnecting"; $("#status").className = "status lost"; };
  source.onmessage = (e) => take(JSON.parse(e.data));
}

function take(doc) {
  state.clockSkew = Date.now() / 1000 - doc.time;
  state.workers = doc.workers;
  state.totals = doc.totals;
  state.last = doc.last;
  $("#center").textContent = doc.center ? "center " + doc.center : "";
  const horizon = doc.time - STREAM_SECONDS;
  state.tasks = state.tasks.concat(doc.tasks).filter((t) => t[2] >= horizon).slice(-5000);
  state.transfers = state.transfers.concat(doc.transfers).filter((t) => t[2] >= horizon).slice(-2000);
  for (const [second, tasks, nbytes] of doc.throughput) state.history.set(second, [tasks, nbytes]);
  for (const second of state.history.keys()) if (second < doc.time - 300) state.history.delete(second);
  render();
}

// -- pages --------------------------------------------------------------------------

function render() {
  const t = state.totals;
  $("#workers-count").textContent = t.workers ?? 0;
  $("#cores-count").textContent = t.cores ?? 0;
  $("#running-count").textContent = t.running ?? 0;
  $("#queued-count").textContent = t.queued ?? 0;
  $("#done-count").textContent = t.tasks_done ?? 0;
  $("#keys-count").textContent = t.nkeys ?? 0;
  $("#bytes-count").textContent = bytes(t.nbytes ?? 0);
  const recent = [...state.history.entries()].sort((a, b) => a[0] - b[0]).slice(-6, -1);
  $("#rate").textContent = recent.length ? Math.round(recent.reduce((s, e) => s + e[1][0], 0) / recent.length) : 0;
  if (state.tab === "cluster") renderWorkers();
  if (state.tab === "tasks") renderStream();
  if (state.tab === "throughput") renderThroughput();
  if (state.tab === "worker" && Date.now() - state.shownAt > 1000) loadWorker();
}

function memoryCell(w) {
  if (w.rss === null || w.rss === undefined) return "";
  if (!w.memory_limit) return bytes(w.rss);
  const share = w.rss / w.memory_limit;
  const bar = el("span", { class: "bar" + (share > 0.8 ? " over" : ""),
                           style: `width:${Math.min(share, 1) * 5}em` });
  const cell = document.createElement("span");
  cell.append(bar, " " + bytes(w.rss) + " / " + bytes(w.memory_limit));
  return cell;
}

function renderWorkers() {
  const body = $("#workers tbody");
  body.replaceChildren();
  for (const w of state.workers) {
    const row = el("tr", { class: "clickable", "data-address": w.address });
    const cells = [w.address, w.name ?? "", w.ncores, w.running, w.queued, w.tasks_done,
      w.cpu === null || w.cpu === undefined ? "" : Math.round(w.cpu) + " %", memoryCell(w),
      w.nkeys, bytes(w.nbytes), bytes(w.peer_bytes_in), bytes(w.bytes_served)];
    for (const c of cells) {
      const td = el("td");
      if (c instanceof Node) td.append(c); else td.textContent = c;
      row.append(td);
    }
    row.addEventListener("click", () => { state.worker = w.address; history.replaceState(null, "", "#worker"); show("worker"); });
    body.append(row);
  }
}

function renderStream() {
  const lanes = new Map();  // "worker thread" -> lane number
  const workers = [...new Set(state.tasks.map((t) => t[0]).concat(state.workers.map((w) => w.address)))].sort();
  for (const w of workers) {
    const threads = [...new Set(state.tasks.filter((t) => t[0] === w).map((t) => t[4]))].sort((a, b) => a - b);
    for (const th of threads.length ? threads : [0]) lanes.set(w + " " + th, lanes.size);
    lanes.set(w + " transfers", lanes.size);
  }
  const width = Math.max(600, $("#stream").clientWidth - 10), lane = 16, left = 170;
  const height = Math.max(lanes.size * lane + 20, 60);
  // the last minute, or less while less has been seen: the bars stay readable
  const now = Date.now() / 1000 - state.clockSkew;
  const oldest = Math.min(...state.tasks.map((t) => t[1]), now);
  const span = Math.min(STREAM_SECONDS, Math.max(10, now - oldest + 1)), start = now - span;
  const x = (t) => left + (width - left) * (t - start) / span;
  const svg = el("svg:svg", { width, height, id: "stream-svg" });
  for (const [label, i] of lanes) {
    svg.append(el("svg:text", { x: 4, y: i * lane + 12, "font-size": 10 }, label));
  }
  const names = new Set();
  for (const [w, t0, t1, name, thread, failed] of state.tasks) {
    const i = lanes.get(w + " " + thread);
    if (i === undefined) continue;
    names.add(name);
    svg.append(el("svg:rect", { class: "task", x: x(t0), y: i * lane + 2, height: lane - 4,
      width: Math.max(x(t1) - x(t0), 1), fill: failed ? "#111" : colour(name),
      "data-name": name }));
  }
  for (const [w, t0, t1] of state.transfers) {
    const i = lanes.get(w + " transfers");
    if (i === undefined) continue;
    svg.append(el("svg:rect", { class: "transfer", x: x(t0), y: i * lane + 4, height: lane - 8,
      width: Math.max(x(t1) - x(t0), 1), fill: "#999" }));
  }
  $("#stream").replaceChildren(svg);
  $("#legend").replaceChildren(...[...names].sort().map((n) => {
    const s = el("span"); s.append(el("i", { style: "background:" + colour(n) }), n); return s;
  }));
}

function lineChart(target, points, label) {
  const width = Math.max(600, target.clientWidth - 10), height = 160, pad = 40;
  const max = Math.max(1, ...points.map((p) => p[1]));
  const t0 = points.length ? points[0][0] : 0, t1 = points.length ? points[points.length - 1][0] : 1;
  const x = (t) => pad + (width - pad - 5) * (t - t0) / Math.max(t1 - t0, 1);
  const y = (v) => height - 20 - (height - 30) * v / max;
  const svg = el("svg:svg", { width, height });
  const d = points.map((p, i) => (i ? "L" : "M") + x(p[0]).toFixed(1) + "," + y(p[1]).toFixed(1)).join(" ");
  svg.append(el("svg:path", { d: d || "M0,0", fill: "none", stroke: "#36c", "stroke-width": 2 }));
  svg.append(el("svg:text", { x: 2, y: 12, "font-size": 10 }, label(max)));
  svg.append(el("svg:text", { x: 2, y: height - 4, "font-size": 10 }, `the last ${Math.round(t1 - t0)} s`));
  target.replaceChildren(svg);
}

function renderThroughput() {
  const entries = [...state.history.entries()].sort((a, b) => a[0] - b[0]);
  lineChart($("#tasks-chart"), entries.map(([s, v]) => [s, v[0]]), (m) => m + " tasks/s");
  lineChart($("#bytes-chart"), entries.map(([s, v]) => [s, v[1]]), (m) => bytes(m) + "/s");
}

// -- data and a worker's page ---------------------------------------------------------

function keyRows(target, keys) {
  target.replaceChildren(...keys.map((k) => {
    const row = el("tr");
    row.append(el("td", {}, k.key), el("td", {}, bytes(k.nbytes)), el("td", {}, k.holders.join(", ")));
    return row;
  }));
}
async function json(url) {
  const r = await fetch(url, { credentials: "same-origin" });
  if (!r.ok) throw new Error(url + ": " + r.status);
  return r.json();
}
$("#key-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const keys = await json("/api/keys?prefix=" + encodeURIComponent($("#key-search").value));
  keyRows($("#key-results tbody"), keys);
  $("#key-results").dataset.searched = $("#key-search").value;
});
async function loadBiggest() { keyRows($("#biggest tbody"), await json("/api/biggest?n=20")); }

async function loadWorker() {
  state.shownAt = Date.now();
  const address = state.worker || (state.workers[0] && state.workers[0].address);
  if (!address) return;
  const page = await json("/api/worker?address=" + encodeURIComponent(address));
  $("#worker-title").textContent = "worker " + page.address + (page.worker ? "" : " (gone)");
  const body = $("#worker-gauges tbody");
  body.replaceChildren(...Object.entries(page.worker || {}).map(([k, v]) => {
    const row = el("tr"); row.append(el("th", {}, k), el("td", {}, v === null ? "" : String(v))); return row;
  }));
  const when = (t) => new Date(t * 1000).toLocaleTimeString();
  $("#worker-errors").textContent = page.errors.map(([t, name, text]) => `${when(t)} ${name}: ${text}`)
    .concat(page.deaths.map((d) => `${when(d.time)} died: ${d.cause}`)).join("\n") || "none";
  $("#worker-log").textContent = page.log.map(([t, level, text]) => `${when(t)} ${level} ${text}`).join("\n") || "none";
}

show((location.hash || "#cluster").slice(1));
connect();
