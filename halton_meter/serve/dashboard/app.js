// Halton Meter dashboard: plain ES module, no dependencies, no build step. Reads only the meter's own
// loopback API (same origin, session cookie); charts are hand-drawn SVG. Money arrives as decimal strings
// and is shown as given (rounded for display only); the exact value stays in data-usd attributes.

const TZ = Intl.DateTimeFormat().resolvedOptions().timeZone;
const SVG = "http://www.w3.org/2000/svg";
const DIMS = ["project", "model", "provider", "client", "branch", "key"];
const DIM_LABEL = { project: "project", model: "model", provider: "provider", client: "tool", branch: "branch",
  key: "key" };
const PERIODS = [["today", "Today"], ["week", "This week"], ["month", "This month"], ["last_month", "Last month"]];
const SERIES_MAX = 7;
const PAGE = 50;

const $ = (sel, root = document) => root.querySelector(sel);
const $$ = (sel, root = document) => [...root.querySelectorAll(sel)];

// ---- DOM helpers ----------------------------------------------------------------------------------

function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  setAttrs(el, attrs);
  el.append(...children.flat().filter((c) => c !== null && c !== undefined && c !== false));
  return el;
}

function s(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG, tag);
  setAttrs(el, attrs);
  el.append(...children.flat().filter((c) => c !== null && c !== undefined && c !== false));
  return el;
}

function setAttrs(el, attrs) {
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "text") el.textContent = value;
    else if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
    else el.setAttribute(name, value === true ? "" : String(value));
  }
}

// ---- formatting -----------------------------------------------------------------------------------

const intFmt = new Intl.NumberFormat();
const compactFmt = new Intl.NumberFormat(undefined, { notation: "compact", maximumFractionDigits: 1 });
const dateTimeFmt = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "medium" });
const shortTimeFmt = new Intl.DateTimeFormat(undefined, { month: "short", day: "numeric", hour: "2-digit",
  minute: "2-digit", second: "2-digit" });

function usd(value) {
  if (value === null || value === undefined) return "—";
  const n = Number(value);
  const abs = Math.abs(n);
  const digits = abs === 0 || abs >= 1 ? 2 : abs >= 0.1 ? 3 : 4;
  return new Intl.NumberFormat(undefined, { style: "currency", currency: "USD", minimumFractionDigits: 2,
    maximumFractionDigits: digits }).format(n);
}

function tokens(n) {
  if (n === null || n === undefined) return "—";
  return n < 10000 ? intFmt.format(n) : compactFmt.format(n);
}

function ms(n) {
  if (n === null || n === undefined) return "—";
  return n < 1000 ? `${intFmt.format(Math.round(n))} ms` : `${(n / 1000).toFixed(n < 10000 ? 2 : 1)} s`;
}

function pct(n) {
  if (n === null || n === undefined) return null;
  return `${n > 0 ? "+" : ""}${n.toFixed(1)}%`;
}

function parseInstant(iso) {
  // Python writes microseconds; keep milliseconds so every engine parses it.
  return new Date(String(iso).replace(/(\.\d{3})\d+/, "$1"));
}

function when(iso, fmt = dateTimeFmt) {
  if (!iso) return "—";
  const d = parseInstant(iso);
  return Number.isNaN(d.getTime()) ? String(iso) : fmt.format(d);
}

// A local calendar day from the API ("2026-12-03"): already a day in our zone, so format it as a date,
// never as an instant (which would shift it by the UTC offset).
function dayLabel(date, opts = { month: "short", day: "numeric" }) {
  const [y, m, d] = date.split("-").map(Number);
  return new Intl.DateTimeFormat(undefined, { ...opts, timeZone: "UTC" }).format(new Date(Date.UTC(y, m - 1, d)));
}

function dimValue(dim, group) {
  const v = group[dim];
  if (dim === "key") return group.key_label || v || "(none)";
  if (v === null || v === undefined || v === "") return dim === "model" ? "(unknown)" : "(none)";
  return String(v);
}

function callStatus(c) {
  if (c.incomplete_reason === "in_progress") return "in progress";
  if (c.error_type) return "error";
  if (!c.complete) return "incomplete";
  return "ok";
}

function callFlags(c) {
  const flags = [];
  if (c.estimated) flags.push("estimated");
  if (c.billing === "subscription") flags.push("subscription");
  else if (c.billable && !c.priced) flags.push("unpriced");
  return flags;
}

// ---- API --------------------------------------------------------------------------------------------

class ApiError extends Error {}

function apiUrl(path, params = {}) {
  const url = new URL(path, location.origin);
  for (const [name, value] of Object.entries(params)) {
    if (value === null || value === undefined || value === "") continue;
    for (const v of Array.isArray(value) ? value : [value]) url.searchParams.append(name, v);
  }
  url.searchParams.set("tz", TZ);
  return url.pathname + url.search;
}

async function api(path, params) {
  let res;
  try {
    res = await fetch(apiUrl(path, params), { credentials: "same-origin", headers: { accept: "application/json" } });
  } catch {
    throw new ApiError("the meter does not answer (is it running?)");
  }
  if (res.status === 401 || res.status === 403) {
    $("#signed-out").hidden = false;
    setLive(false, false);
    throw new ApiError("not signed in");
  }
  let body = null;
  try {
    body = await res.json();
  } catch {
    body = null;
  }
  if (!res.ok) throw new ApiError((body && body.error) || `${path}: HTTP ${res.status}`);
  return body;
}

function showError(where, err) {
  const text = err instanceof ApiError ? err.message : `unexpected: ${err && err.message}`;
  if (where) {
    where.replaceChildren(h("p", { class: "error", role: "alert", text }));
  } else {
    const banner = $("#error");
    banner.textContent = text;
    banner.hidden = false;
  }
}

// ---- state --------------------------------------------------------------------------------------------

const state = {
  range: { since: "30d", until: null },
  stack: "project",
  topDim: "project",
  topSort: { key: "cost_usd", dir: "desc" },
  topReport: null,
  calls: [],
  cursor: null,
  filters: {},
  callsLoaded: false,
  live: null,
};

// ---- overview: periods ------------------------------------------------------------------------------

async function loadOverview() {
  const box = $("#periods");
  try {
    const data = await api("/v1/overview");
    box.replaceChildren(...PERIODS.map(([id, label]) => periodCard(id, label, data.periods[id])));
  } catch (err) {
    showError(box, err);
  }
}

function periodCard(id, label, report) {
  if (!report) return h("article", { class: "card", "data-period": id }, h("h2", { text: label }), h("p", { text: "—" }));
  const t = report.totals;
  const change = t.change && t.change.cost_usd ? t.change.cost_usd.pct : null;
  const changeText = pct(change);
  const cost = h("p", { class: "big cost", "data-usd": t.cost_usd, title: `${t.cost_usd} USD` }, usd(t.cost_usd));
  if (!t.cost_complete) cost.append(h("span", { class: "mark", title: `${t.unpriced_calls} unpriced calls not included`, text: "*" }));
  const sub = Number(t.subscription_list_price_usd) > 0
    ? h("p", { class: "sub", "data-usd": t.subscription_list_price_usd },
      `† ${usd(t.subscription_list_price_usd)} list price on subscription`) : null;
  const stats = h("dl", { class: "stats" },
    h("dt", { text: "calls" }), h("dd", { class: "calls", "data-value": t.calls, text: intFmt.format(t.calls) }),
    h("dt", { text: "tokens in / out" }),
    h("dd", { class: "tokens", title: `${intFmt.format(t.input_tokens)} in, ${intFmt.format(t.output_tokens)} out, `
      + `${intFmt.format(t.cache_read_tokens)} cache read, ${intFmt.format(t.cache_write_tokens)} cache write` },
    `${tokens(t.input_tokens)} / ${tokens(t.output_tokens)}`),
    h("dt", { text: "cache read" }), h("dd", { text: tokens(t.cache_read_tokens) }),
    h("dt", { text: "cache savings" }),
    h("dd", { class: "savings", "data-usd": t.cache_savings_usd, text: usd(t.cache_savings_usd) }));
  const notes = (report.notes || []).map((n) => h("li", { "data-kind": n.kind, text: n.text }));
  return h("article", { class: "card", "data-period": id, "aria-label": label },
    h("h2", { text: label }),
    cost,
    h("p", { class: `change ${change > 0 ? "up" : change < 0 ? "down" : ""}`, "data-pct": change ?? "" },
      changeText ? `${changeText} vs the same stretch before` : "no earlier spend to compare"),
    sub, stats,
    notes.length ? h("ul", { class: "notes" }, notes) : null);
}

// ---- budgets: spent against the limit -----------------------------------------------------------------

async function loadBudgets() {
  const panel = $("#budgets-panel");
  const list = $("#budgets-list");
  try {
    const data = await api("/v1/budgets");
    panel.hidden = data.budgets.length === 0;
    list.replaceChildren(...data.budgets.map(budgetRow));
  } catch (err) {
    panel.hidden = false;
    showError(list, err);
  }
}

function budgetRow(b) {
  const share = Math.max(0, Number(b.share) || 0) * 100;
  const meter = h("meter", { min: "0", max: "100", low: "80", high: "100", optimum: "0",
    value: String(Math.min(share, 100)), "aria-label": `${b.name}: ${share.toFixed(0)}% of the limit` });
  const resets = b.period_end ? ` · resets ${timeFmt(b.period_end)}` : ` · ${b.period}`;
  const note = b.state === "overridden" && b.override_until ? ` · let through until ${timeFmt(b.override_until)}` : "";
  const amount = b.plan_window
    ? ` ${b.utilization === null ? "not seen yet" : `${(b.utilization * 100).toFixed(0)}%`} of `
      + `${(b.limit_plan * 100).toFixed(0)}% of the ${b.plan_window} window`
    : ` ${b.spent_usd === null ? "spend unknown" : usd(b.spent_usd)} of ${usd(b.limit_usd)}`;
  return h("li", { class: `budget ${b.state}`, "data-name": b.name, "data-state": b.state,
    "data-spent": b.spent_usd, "data-limit": b.limit_usd },
  h("p", {}, h("strong", { text: b.name }), amount,
    h("span", { class: "muted", text: ` · ${b.action} · ${b.state}${resets}${note}` })),
  meter);
}

// ---- plan limits: a gauge per window ------------------------------------------------------------------

const PLAN_WINDOWS = ["unified", "overage"]; // account-wide rows: shown as notes, not gauges

async function loadPlan() {
  const panel = $("#plan-panel");
  const box = $("#plan-gauges");
  try {
    const data = await api("/v1/plan");
    const windows = data.windows.filter((w) => !PLAN_WINDOWS.includes(w.window) && w.utilization !== null);
    panel.hidden = windows.length === 0;
    box.replaceChildren(...windows.map(gauge));
  } catch (err) {
    panel.hidden = false;
    showError(box, err);
  }
}

function gauge(w) {
  const used = Math.max(0, w.utilization) * 100;
  // the levels of `plan` and the statusline: red when rejected or at 90 % and more, yellow from 75 %
  const level = (w.status || "").startsWith("rejected") || used >= 90 ? "rejected"
    : used >= 75 || w.status === "allowed_warning" ? "warn" : "ok";
  const name = `${w.provider} ${w.window}`;
  const meter = h("meter", { min: "0", max: "100", low: "75", high: "90", optimum: "0",
    value: String(Math.min(used, 100)), "aria-label": `${name}: ${used.toFixed(0)}% used` });
  const lines = [];
  if (w.resets_at && !w.reset) lines.push(`resets ${timeFmt(w.resets_at)} (in ${until(w.resets_at)})`);
  if (w.reset) lines.push("reset since the last call");
  if (w.burn_per_hour !== null && w.burn_per_hour !== undefined) {
    lines.push(`${(w.burn_per_hour * 100).toFixed(1)} %/h`
      + (w.runs_out_at ? ` · runs out ${timeFmt(w.runs_out_at)}` : w.outlasts_reset ? " · lasts until the reset" : ""));
  }
  const top = (w.by && w.by.project ? w.by.project : []).filter((s) => s.points > 0).slice(0, 3)
    .map((s) => `${s.name} ${s.points.toFixed(1)} pp`).join(", ");
  if (top) lines.push(top);
  return h("article", { class: `gauge ${level}`, "data-window": w.window, "data-provider": w.provider,
    "data-utilization": String(w.utilization) },
  h("h3", { text: name + (w.account_label ? ` · ${w.account_label}` : "") }),
  h("p", { class: "big", text: `${used.toFixed(0)}%` }), meter,
  ...lines.map((text) => h("p", { class: "muted", text })));
}

function timeFmt(iso) {
  const d = new Date(iso);
  const sameDay = d.toDateString() === new Date().toDateString();
  const far = Math.abs(d - Date.now()) > 6 * 86400000;
  return d.toLocaleString(undefined, sameDay ? { hour: "2-digit", minute: "2-digit", timeZone: TZ }
    : far ? { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", timeZone: TZ }
      : { weekday: "short", hour: "2-digit", minute: "2-digit", timeZone: TZ });
}

function until(iso) {
  const minutes = Math.max(0, Math.round((new Date(iso) - Date.now()) / 60000));
  if (minutes < 60) return `${minutes}m`;
  if (minutes < 48 * 60) return `${Math.floor(minutes / 60)}h ${minutes % 60}m`;
  return `${Math.floor(minutes / 1440)}d ${Math.floor((minutes % 1440) / 60)}h`;
}

// ---- charts -----------------------------------------------------------------------------------------

function niceMax(v) {
  if (!(v > 0)) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

// columns: [{label, long, parts: [{series, value, text}], total, totalText}]; series names index colours.
function barChart(container, readout, { columns, series, yFormat, empty, height = 220 }) {
  container.replaceChildren();
  if (!columns.length || columns.every((c) => !(c.total > 0))) {
    container.append(h("p", { class: "muted empty", text: empty }));
    readout.textContent = "";
    return;
  }
  const W = Math.max(300, container.clientWidth || 600);
  const H = height;
  const pad = { l: 56, r: 8, t: 10, b: 26 };
  const iw = W - pad.l - pad.r;
  const ih = H - pad.t - pad.b;
  const max = niceMax(Math.max(...columns.map((c) => c.total)));
  const step = iw / columns.length;
  const bw = Math.max(1, Math.min(40, step * 0.72));
  const y = (v) => pad.t + ih - (v / max) * ih;
  const svg = s("svg", { viewBox: `0 0 ${W} ${H}`, width: W, height: H, class: "svg", tabindex: 0, role: "img",
    "aria-label": `${columns.length} bars; use the arrow keys to read each` });
  for (let i = 0; i <= 4; i++) {
    const v = (max * i) / 4;
    svg.append(s("line", { class: "grid", x1: pad.l, x2: W - pad.r, y1: y(v), y2: y(v) }),
      s("text", { class: "axis", x: pad.l - 6, y: y(v) + 4, "text-anchor": "end" }, yFormat(v)));
  }
  const every = Math.max(1, Math.ceil(columns.length / Math.max(1, Math.floor(iw / 56))));
  const cols = columns.map((col, i) => {
    const x = pad.l + i * step + (step - bw) / 2;
    let acc = 0;
    const g = s("g", { class: "col", "data-label": col.label, "data-total": col.total });
    g.append(s("title", {}, `${col.long}: ${col.totalText}${col.parts.filter((p) => p.value > 0).length > 1
      ? "\n" + col.parts.filter((p) => p.value > 0).map((p) => `${p.series}: ${p.text}`).join("\n") : ""}`));
    g.append(s("rect", { class: "hit", x: pad.l + i * step, y: pad.t, width: step, height: ih }));
    for (const part of col.parts) {
      if (!(part.value > 0)) continue;
      const y0 = y(acc + part.value);
      const hgt = Math.max(0.5, y(acc) - y0);
      g.append(s("rect", { class: `bar s${series.indexOf(part.series) % 8}`, x, y: y0, width: bw, height: hgt }));
      acc += part.value;
    }
    if (i % every === 0) {
      svg.append(s("text", { class: "axis xlabel", x: pad.l + i * step + step / 2, y: H - 8, "text-anchor": "middle" },
        col.label));
    }
    return g;
  });
  svg.append(...cols);
  let active = -1;
  const show = (i) => {
    if (active >= 0) cols[active].classList.remove("active");
    active = Math.max(0, Math.min(cols.length - 1, i));
    cols[active].classList.add("active");
    const col = columns[active];
    const parts = col.parts.filter((p) => p.value > 0).map((p) => `${p.series} ${p.text}`);
    readout.textContent = `${col.long}: ${col.totalText}${parts.length > 1 ? ` (${parts.join(", ")})` : ""}`;
  };
  cols.forEach((g, i) => g.addEventListener("mouseenter", () => show(i)));
  svg.addEventListener("keydown", (ev) => {
    const moves = { ArrowLeft: active - 1, ArrowRight: active + 1, Home: 0, End: cols.length - 1 };
    if (ev.key in moves) {
      ev.preventDefault();
      show(active < 0 ? cols.length - 1 : moves[ev.key]);
    }
  });
  svg.addEventListener("focus", () => { if (active < 0) show(cols.length - 1); });
  container.append(svg);
}

async function loadDaily() {
  const chart = $("#daily-chart");
  const dim = state.stack;
  try {
    const report = await api("/v1/report", { ...rangeParams(), by: `day,${dim}`, latency: "0" });
    state.dailyReport = report;
    drawDaily();
  } catch (err) {
    showError(chart, err);
  }
}

function drawDaily() {
  const report = state.dailyReport;
  if (!report) return;
  const dim = report.by[1];
  const totals = new Map();
  for (const g of report.groups) {
    const name = dimValue(dim, g);
    totals.set(name, (totals.get(name) || 0) + Number(g.cost_usd));
  }
  const ranked = [...totals.entries()].sort((a, b) => b[1] - a[1]).map(([name]) => name);
  const top = ranked.slice(0, SERIES_MAX);
  const series = ranked.length > SERIES_MAX ? [...top, "other"] : top;
  const byDay = new Map();
  for (const g of report.groups) {
    const name = top.includes(dimValue(dim, g)) ? dimValue(dim, g) : "other";
    const day = byDay.get(g.day) || new Map();
    day.set(name, (day.get(name) || 0) + Number(g.cost_usd));
    byDay.set(g.day, day);
  }
  const columns = report.daily.map((d) => {
    const parts = series.map((name) => {
      const value = (byDay.get(d.date) || new Map()).get(name) || 0;
      return { series: name, value, text: usd(value) };
    });
    const listPrice = Number(d.subscription_list_price_usd) > 0
      ? `; † ${usd(d.subscription_list_price_usd)} list price on subscription` : "";
    return { label: dayLabel(d.date), long: `${dayLabel(d.date, { weekday: "short", month: "short", day: "numeric",
      year: "numeric" })} (${intFmt.format(d.calls)} calls${listPrice})`, date: d.date, parts, total: Number(d.cost_usd),
    totalText: usd(d.cost_usd) };
  });
  barChart($("#daily-chart"), $("#daily-readout"), { columns, series, yFormat: (v) => usd(v),
    empty: "No charged cost in this window." });
  $$("#daily-chart .col").forEach((g, i) => g.setAttribute("data-date", columns[i].date));
  $("#daily-legend").replaceChildren(...series.map((name, i) => h("li", {},
    h("span", { class: `swatch s${i % 8}`, "aria-hidden": "true" }), `${DIM_LABEL[dim]}: ${name}`,
    h("span", { class: "muted", text: ` ${usd(totals.get(name) ?? ranked.slice(SERIES_MAX)
      .reduce((sum, n) => sum + totals.get(n), 0))}` }))));
}

async function loadHourly() {
  const chart = $("#hourly-chart");
  try {
    const report = await api("/v1/report", { window: "today", by: "hour", latency: "0" });
    state.hourlyReport = report;
    drawHourly();
  } catch (err) {
    showError(chart, err);
  }
}

function drawHourly() {
  const report = state.hourlyReport;
  if (!report) return;
  const byHour = new Map();
  for (const g of report.groups) {
    const hh = String(g.hour).slice(11, 13);
    const cur = byHour.get(hh) || { cost: 0, calls: 0 };
    byHour.set(hh, { cost: cur.cost + Number(g.cost_usd), calls: cur.calls + g.calls });
  }
  const columns = [];
  for (let i = 0; i < 24; i++) {
    const hh = String(i).padStart(2, "0");
    const v = byHour.get(hh) || { cost: 0, calls: 0 };
    columns.push({ label: hh, long: `${hh}:00–${hh}:59 (${intFmt.format(v.calls)} calls)`,
      parts: [{ series: "cost", value: v.cost, text: usd(v.cost) }], total: v.cost, totalText: usd(v.cost) });
  }
  barChart($("#hourly-chart"), $("#hourly-readout"), { columns, series: ["cost"], yFormat: (v) => usd(v),
    empty: "No charged cost today yet.", height: 150 });
}

// ---- top tables -----------------------------------------------------------------------------------

const TOP_COLUMNS = [
  { key: "name", label: "name", num: false },
  { key: "calls", label: "calls", num: true },
  { key: "input_tokens", label: "input", num: true },
  { key: "output_tokens", label: "output", num: true },
  { key: "cache_read_tokens", label: "cache read", num: true },
  { key: "cost_usd", label: "cost", num: true },
  { key: "share", label: "share", num: true },
  { key: "p95_latency_ms", label: "p95 latency", num: true },
];

async function loadTop() {
  const table = $("#top-table");
  try {
    state.topReport = await api("/v1/report", { ...rangeParams(), by: state.topDim });
    $("#top-window").textContent = `· ${state.topReport.window}`;
    drawTop();
  } catch (err) {
    table.replaceChildren(h("caption", { class: "error", role: "alert", text: err.message }));
  }
}

function drawTop() {
  const report = state.topReport;
  const dim = report.by[0];
  const total = Number(report.totals.cost_usd);
  const rows = report.groups.map((g) => ({ ...g, name: dimValue(dim, g),
    share: total > 0 ? Number(g.cost_usd) / total : null }));
  const { key, dir } = state.topSort;
  const val = (r) => (key === "name" ? r.name.toLowerCase() : key === "cost_usd" ? Number(r.cost_usd) : r[key]);
  rows.sort((a, b) => {
    const x = val(a);
    const y = val(b);
    if (x === y) return 0;
    if (x === null || x === undefined) return 1;
    if (y === null || y === undefined) return -1;
    return (x < y ? -1 : 1) * (dir === "asc" ? 1 : -1);
  });
  const head = h("tr", {}, TOP_COLUMNS.map((c) => {
    const sorted = c.key === key;
    const label = c.key === "name" ? DIM_LABEL[dim] : c.label;
    return h("th", { scope: "col", class: c.num ? "num" : null,
      "aria-sort": sorted ? (dir === "asc" ? "ascending" : "descending") : "none" },
    h("button", { type: "button", class: "sort", "data-key": c.key, onclick: () => {
      state.topSort = { key: c.key, dir: sorted && dir === "desc" ? "asc" : sorted ? "desc" : c.num ? "desc" : "asc" };
      drawTop();
      $(`#top-table button[data-key="${c.key}"]`).focus();
    } }, label, h("span", { class: "arrow", "aria-hidden": "true", text: sorted ? (dir === "asc" ? " ▲" : " ▼") : "" })));
  }));
  const body = rows.length ? rows.map((r) => h("tr", { "data-name": r.name },
    h("th", { scope: "row", text: r.name }),
    h("td", { class: "num", text: intFmt.format(r.calls) }),
    h("td", { class: "num", title: intFmt.format(r.input_tokens), text: tokens(r.input_tokens) }),
    h("td", { class: "num", title: intFmt.format(r.output_tokens), text: tokens(r.output_tokens) }),
    h("td", { class: "num", title: intFmt.format(r.cache_read_tokens), text: tokens(r.cache_read_tokens) }),
    h("td", { class: "num", "data-usd": r.cost_usd, title: r.cost_usd },
      usd(r.cost_usd), r.cost_complete === false ? h("span", { class: "mark", text: "*" }) : null),
    h("td", { class: "num", text: r.share === null ? "—" : `${(r.share * 100).toFixed(1)}%` }),
    h("td", { class: "num", text: ms(r.p95_latency_ms) })))
    : [h("tr", {}, h("td", { colspan: TOP_COLUMNS.length, class: "muted", text: "No calls in this window." }))];
  const foot = h("tr", { class: "total" }, h("th", { scope: "row", text: "total" }),
    h("td", { class: "num", text: intFmt.format(report.totals.calls) }),
    h("td", { class: "num", text: tokens(report.totals.input_tokens) }),
    h("td", { class: "num", text: tokens(report.totals.output_tokens) }),
    h("td", { class: "num", text: tokens(report.totals.cache_read_tokens) }),
    h("td", { class: "num", "data-usd": report.totals.cost_usd, text: usd(report.totals.cost_usd) }),
    h("td", { class: "num", text: total > 0 ? "100%" : "—" }),
    h("td", { class: "num", text: ms(report.totals.p95_latency_ms) }));
  $("#top-table").replaceChildren(h("thead", {}, head), h("tbody", {}, body), h("tfoot", {}, foot));
}

// ---- window controls ------------------------------------------------------------------------------

function rangeParams() {
  const { since, until } = state.range;
  return until ? { since, until } : { since };
}

function setupControls() {
  const range = $("#range");
  const custom = $("#custom-range");
  range.addEventListener("change", () => {
    custom.hidden = range.value !== "custom";
    if (range.value !== "custom") {
      state.range = { since: range.value, until: null };
      loadDaily();
      loadTop();
    } else {
      $("#range-since").focus();
    }
  });
  $("#range-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const since = $("#range-since").value;
    const until = $("#range-until").value;
    if (!since) return;
    state.range = { since, until: until || null };
    loadDaily();
    loadTop();
  });
  $("#stack-by").addEventListener("change", (ev) => {
    state.stack = ev.target.value;
    loadDaily();
  });
  for (const button of $$("#top-tabs button")) {
    button.addEventListener("click", () => {
      $$("#top-tabs button").forEach((b) => b.setAttribute("aria-pressed", String(b === button)));
      state.topDim = button.dataset.dim;
      loadTop();
    });
  }
}

// ---- calls explorer -------------------------------------------------------------------------------

function readFilters() {
  const data = new FormData($("#filters"));
  const filters = {};
  for (const [name, value] of data.entries()) {
    const v = String(value).trim();
    if (v) filters[name] = v;
  }
  return filters;
}

function updateExports() {
  $("#export-csv").href = apiUrl("/v1/export.csv", state.filters);
  $("#export-json").href = apiUrl("/v1/export.json", state.filters);
}

async function loadCalls(more = false) {
  const tbody = $("#calls-table tbody");
  const button = $("#load-more");
  button.disabled = true;
  try {
    const data = await api("/v1/calls", { limit: PAGE, ...state.filters, cursor: more ? state.cursor : null });
    state.calls = more ? [...state.calls, ...data.calls] : data.calls;
    state.cursor = data.next_cursor || null;
    state.callsLoaded = true;
    if (!more) tbody.replaceChildren();
    tbody.append(...data.calls.map((c) => callRow(c)));
    if (!state.calls.length) {
      tbody.replaceChildren(h("tr", { class: "none" }, h("td", { colspan: 9, class: "muted",
        text: Object.keys(state.filters).length ? "No calls match." : "No calls yet." })));
    }
    $("#calls-count").textContent = `${intFmt.format(state.calls.length)} shown${state.cursor ? ", more available" : ""}`;
    button.hidden = !state.cursor;
  } catch (err) {
    tbody.replaceChildren(h("tr", {}, h("td", { colspan: 9, class: "error", role: "alert", text: err.message })));
  } finally {
    button.disabled = false;
  }
}

function callRow(c, fresh = false) {
  const status = callStatus(c);
  const flags = callFlags(c);
  const cost = c.cost_usd === null || c.cost_usd === undefined
    ? (c.billing === "subscription" ? "†" : c.billable ? "unpriced" : "—") : usd(c.cost_usd);
  return h("tr", { "data-id": c.id, class: fresh ? "fresh" : null },
    h("td", {}, h("a", { href: `#/calls/${encodeURIComponent(c.id)}`, title: `call ${c.id}`,
      text: when(c.started_at, shortTimeFmt) })),
    h("td", { text: c.project ?? "(none)" }),
    h("td", { text: c.client ?? "(none)" }),
    h("td", { text: c.model ?? "(unknown)" }),
    h("td", { class: "num", title: intFmt.format(c.input_tokens ?? 0), text: tokens(c.input_tokens) }),
    h("td", { class: "num", title: intFmt.format(c.output_tokens ?? 0), text: tokens(c.output_tokens) }),
    h("td", { class: "num", "data-usd": c.cost_usd ?? "", text: cost }),
    h("td", {}, h("span", { class: `chip st-${status.replace(" ", "-")}`, text: status }),
      flags.map((f) => h("span", { class: `chip flag-${f}`, text: f }))),
    h("td", { class: "num", text: ms(c.latency_ms) }));
}

function matchesFilters(c) {
  const f = state.filters;
  for (const dim of ["project", "model", "provider", "client", "branch"]) {
    if (f[dim] && c[dim] !== f[dim]) return false;
  }
  if (f.key && !(c.key_fingerprint || "").startsWith(f.key)) return false;
  if (f.q && c.id !== f.q && c.provider_request_id !== f.q) return false;
  if (f.status) {
    const st = callStatus(c);
    const flags = callFlags(c);
    if (!(f.status === st.replace(" ", "-") || flags.includes(f.status))) return false;
  }
  if (f.since || f.until) return false; // date windows are the API's to judge
  return true;
}

function setupCalls() {
  const form = $("#filters");
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    state.filters = readFilters();
    updateExports();
    loadCalls();
  });
  form.addEventListener("reset", () => {
    setTimeout(() => {
      state.filters = {};
      updateExports();
      loadCalls();
    });
  });
  $("#load-more").addEventListener("click", () => loadCalls(true));
  updateExports();
}

async function loadSuggestions() {
  try {
    const report = await api("/v1/report", { since: "90d", by: DIMS.join(","), latency: "0" });
    for (const dim of DIMS) {
      const values = new Set(report.groups.map((g) => g[dim]).filter((v) => v !== null && v !== undefined));
      $(`#dl-${dim}`).replaceChildren(...[...values].sort().map((v) => h("option", { value: v })));
    }
  } catch {
    // suggestions are a convenience; the filters work without them
  }
}

// ---- call detail ----------------------------------------------------------------------------------

async function loadCall(id) {
  const dl = $("#call-detail");
  $("#h-call").textContent = `Call ${id}`;
  $("#call-summary").textContent = "";
  dl.replaceChildren();
  try {
    const { call } = await api(`/v1/calls/${encodeURIComponent(id)}`);
    $("#call-summary").textContent = `${call.provider ?? "?"} · ${call.model ?? "(unknown)"} · `
      + `${when(call.started_at)} · ${callStatus(call)}`;
    for (const [name, value] of Object.entries(call)) {
      dl.append(h("div", { class: "field", "data-field": name }, h("dt", { text: name }), h("dd", {}, fieldValue(name, value))));
    }
  } catch (err) {
    showError(dl, err);
  }
}

function fieldValue(name, value) {
  if (value === null || value === undefined) return h("span", { class: "muted", text: "—" });
  if (typeof value === "boolean") return value ? "yes" : "no";
  if (typeof value === "object") return h("pre", { text: JSON.stringify(value, null, 2) });
  if ((name === "started_at" || name === "ended_at") && typeof value === "string") {
    return h("span", {}, value, h("span", { class: "muted", text: ` (${when(value)})` }));
  }
  if (name.endsWith("_usd")) return h("span", { "data-usd": value, title: value }, `${usd(value)} `, h("span", { class: "muted", text: `(${value})` }));
  if (name.endsWith("_ms")) return ms(value);
  if (typeof value === "number") return intFmt.format(value);
  return String(value);
}

// ---- live tail ------------------------------------------------------------------------------------

let refreshTimer = null;
let lastRefresh = 0;
const REFRESH_MIN_MS = 10000;

// New calls refresh the totals and charts at most once every 10 s, and always after the last call (the
// tail itself shows each call at once): a page left open must cost the meter next to nothing.
function scheduleRefresh() {
  if (refreshTimer !== null) return;
  const wait = Math.max(1500, lastRefresh + REFRESH_MIN_MS - Date.now());
  refreshTimer = setTimeout(() => {
    refreshTimer = null;
    lastRefresh = Date.now();
    loadOverview();
    loadBudgets();
    loadPlan();
    loadDaily();
    loadHourly();
    loadTop();
  }, wait);
}

function setLive(on, remember = true) {
  const button = $("#live-switch");
  button.setAttribute("aria-checked", String(on));
  if (remember) localStorage.setItem("halton-meter.live", on ? "1" : "0");
  if (state.live) {
    state.live.close();
    state.live = null;
  }
  if (!on) {
    button.classList.remove("on", "broken");
    button.dataset.state = "off";
    return;
  }
  button.classList.add("on");
  const source = new EventSource("/v1/live");
  state.live = source;
  button.dataset.state = "connecting";
  source.addEventListener("open", () => {
    button.classList.remove("broken");
    button.dataset.state = "open";
  });
  source.addEventListener("call", (ev) => {
    let call;
    try {
      call = JSON.parse(ev.data);
    } catch {
      return;
    }
    if (call && call.call) call = call.call;
    scheduleRefresh();
    if (!state.callsLoaded || !matchesFilters(call)) return;
    const tbody = $("#calls-table tbody");
    $("tr.none", tbody)?.remove();
    $(`tr[data-id="${CSS.escape(call.id)}"]`, tbody)?.remove();
    tbody.prepend(callRow(call, true));
  });
  source.addEventListener("error", () => {
    button.classList.add("broken");
    button.dataset.state = source.readyState === EventSource.CLOSED ? "closed" : "connecting";
    if (source.readyState === EventSource.CLOSED && state.live === source) {
      state.live = null;
      setTimeout(() => { if ($("#live-switch").getAttribute("aria-checked") === "true" && !state.live) setLive(true); }, 5000);
    }
  });
}

// ---- health ---------------------------------------------------------------------------------------

async function loadHealth() {
  const verdict = $("#health-verdict");
  try {
    const data = await api("/v1/status");
    const badge = $("#verdict-badge");
    badge.textContent = data.verdict;
    badge.className = `badge v-${String(data.verdict).toLowerCase()}`;
    badge.hidden = false;
    verdict.replaceChildren(h("strong", { class: `v-${String(data.verdict).toLowerCase()}`, text: data.verdict }),
      ` ${data.summary ?? ""}`);
    $("#health-rows").replaceChildren(...(data.rows || []).map((r) => h("li", { class: `row st-${r.status}`, "data-id": r.id },
      h("span", { class: "dot", "aria-hidden": "true" }),
      h("strong", { text: r.title ?? r.id }), h("span", { class: "status", text: ` ${r.status}: ` }),
      h("span", { text: r.summary ?? "" }),
      r.fix && r.status !== "ok" ? h("p", { class: "fix" }, "fix: ", h("code", { text: r.fix })) : null)));
    drawGaps(data.gaps_daily || []);
  } catch (err) {
    showError(verdict, err);
  }
}

function drawGaps(days) {
  const rows = Array.isArray(days) ? days : Object.entries(days).map(([date, v]) => ({ date, ...(typeof v === "object" ? v : { calls: v }) }));
  const keys = [...new Set(rows.flatMap((r) => Object.keys(r)))].filter((k) => k !== "date");
  const metric = ["calls_at_least", "calls", "connections"].find((k) => keys.includes(k)) || keys[0];
  const columns = rows.map((r) => ({ label: r.date ? dayLabel(r.date) : "", long: r.date ? dayLabel(r.date, { dateStyle: "medium" }) : "",
    parts: [{ series: metric, value: Number(r[metric]) || 0, text: intFmt.format(Number(r[metric]) || 0) }],
    total: Number(r[metric]) || 0, totalText: `${intFmt.format(Number(r[metric]) || 0)} ${metric || ""}` }));
  barChart($("#gaps-chart"), h("p"), { columns, series: [metric], yFormat: (v) => intFmt.format(v),
    empty: "No unmetered gaps: every call was metered.", height: 150 });
  const shown = rows.filter((r) => keys.some((k) => Number(r[k]) > 0));
  $("#gaps-table").hidden = shown.length === 0;
  $("#gaps-table").replaceChildren(
    h("thead", {}, h("tr", {}, h("th", { scope: "col", text: "day" }), keys.map((k) => h("th", { scope: "col", class: "num", text: k })))),
    h("tbody", {}, shown.map((r) => h("tr", {},
      h("th", { scope: "row", text: r.date ? dayLabel(r.date, { dateStyle: "medium" }) : "" }),
      keys.map((k) => h("td", { class: "num", text: r[k] === null || r[k] === undefined ? "—" : String(r[k]) }))))));
}

// ---- routing --------------------------------------------------------------------------------------

function route() {
  const hash = location.hash.replace(/^#\/?/, "");
  const [view, ...rest] = hash.split("/");
  const name = view === "calls" && rest.length ? "call" : ["calls", "health"].includes(view) ? view : "overview";
  for (const section of $$(".view")) section.hidden = section.id !== `view-${name}`;
  for (const link of $$("nav a")) {
    const current = link.dataset.view === name || (name === "call" && link.dataset.view === "calls");
    if (current) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  if (name === "calls" && !state.callsLoaded) {
    loadCalls();
    loadSuggestions();
  }
  if (name === "call") loadCall(decodeURIComponent(rest.join("/")));
  if (name === "health") loadHealth();
  if (name === "overview") {
    // drawn while hidden, the charts had no width: draw them again at the real size
    drawDaily();
    drawHourly();
  }
}

async function signOut() {
  setLive(false, false);
  try {
    await fetch("/logout", { method: "POST", credentials: "same-origin", headers: { accept: "application/json" } });
  } catch {
    // the banner below says what to do either way
  }
  $("#signed-out").hidden = false;
  $("#sign-out").hidden = true;
}

function start() {
  $("#tz-label").textContent = TZ;
  $("#tz-label").title = "Days and times are shown in this time zone";
  setupControls();
  setupCalls();
  $("#sign-out").addEventListener("click", signOut);
  $("#live-switch").addEventListener("click", () => setLive($("#live-switch").getAttribute("aria-checked") !== "true"));
  window.addEventListener("hashchange", () => {
    route();
    $("#main").focus({ preventScroll: true });
  });
  let resizeTimer = null;
  window.addEventListener("resize", () => {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(() => { drawDaily(); drawHourly(); }, 150);
  });
  route();
  // The headline numbers first: the other panels (and health, which runs the doctor's fast checks) start
  // once the overview is in, so they do not compete with it for the API's threads and the CPU.
  loadOverview().finally(() => {
    loadBudgets();
    loadPlan();
    loadDaily();
    loadHourly();
    loadTop();
    loadHealth();
  });
  setLive(localStorage.getItem("halton-meter.live") !== "0");
  document.documentElement.dataset.app = "ready";
}

start();
