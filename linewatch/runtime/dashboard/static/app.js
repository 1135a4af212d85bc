// The live page: one WebSocket of JSON updates from the server, images fetched for the newest verdict only.
// Every string from a message reaches the page through textContent (see util.js el()), never as markup.
import { openDetail } from "./detail.js";
import { drawTimeline, drawVerdict, formatSpan, loadImage, PALETTE } from "./render.js";
import { el, fmt, imageUrl, withToken } from "./util.js";

const model = { sources: new Map(), timeline: new Map(), defects: [], runtimes: [], history: 500, time: 0 };
const tiles = new Map();
const $ = (id) => document.getElementById(id);

function setKpis(t) {
  const set = (k, v) => { document.querySelector(`[data-kpi="${k}"]`).textContent = v; };
  set("frames", fmt.int(t.frames));
  set("ok", fmt.int(t.ok));
  set("defects", fmt.int(t.defects));
  set("defect_rate", t.frames ? fmt.pct(t.defect_rate) : "–");
  set("fps", t.fps.toFixed(1));
  set("latency", fmt.latency(t.latency_ms.p50, t.latency_ms.p95));
  set("drops", fmt.int(t.drops));
  set("gaps", t.gaps ? `${fmt.int(t.gaps)} (${fmt.int(t.lost)})` : "0");
  set("errors", fmt.int(t.errors));
  set("restarts", fmt.int(t.restarts));
  set("rejected", fmt.int(t.rejected));
  for (const k of ["drops", "gaps", "errors", "restarts", "rejected"]) {
    document.querySelector(`[data-kpi="${k}"]`).classList.toggle("warn", (t[k] || 0) > 0);
  }
}

function makeTile(source) {
  const canvas = el("canvas", { class: "tile-canvas" });
  const overlay = el("input", { type: "checkbox", checked: "" });
  const tile = {
    canvas, overlay, wanted: null, shown: null, loading: false, heat: null, frame: null,
    name: el("div", { class: "tile-name", text: source.name }),
    runtime: el("div", { class: "tile-runtime", text: source.runtime }),
    badge: el("span", { class: "badge" }),
    score: el("span", { class: "score" }),
    meta: el("span", { class: "muted" }),
    type: el("div", { class: "defect-type" }),
    state: el("span", { class: "tile-state" }),
    stats: el("dl", { class: "stats" }),
  };
  overlay.addEventListener("change", () => redraw(tile));
  tile.root = el("article", { class: "tile", "data-source-id": source.id },
    el("header", { class: "tile-head" }, el("div", {}, tile.name, tile.runtime), tile.badge),
    el("div", { class: "tile-image" }, canvas, tile.state),
    el("div", { class: "tile-score" }, tile.score, tile.meta,
      el("label", { class: "toggle" }, overlay, " heatmap")),
    tile.type, tile.stats);
  tile.sortKey = `${source.runtime}\u0000${source.name}`;
  return tile;
}

function redraw(tile) {
  if (tile.shown) drawVerdict(tile.canvas, tile.shown, tile.frame, tile.heat, tile.overlay.checked, 480);
}

// Latest wins: at most one load per tile in flight; when it ends, the newest wanted verdict is loaded next.
// The tile's badge, score and type change with its picture, so what it shows is always one verdict.
async function pump(tile) {
  if (tile.loading) return;
  tile.loading = true;
  while (tile.wanted && tile.wanted !== tile.shown) {
    const v = tile.wanted;
    try {
      const [heat, frame] = await Promise.all([
        v.has_heatmap ? loadImage(imageUrl(v, "heatmap")) : null,
        v.has_frame ? loadImage(imageUrl(v, "frame")) : null,
      ]);
      Object.assign(tile, { heat, frame });
    } catch {
      Object.assign(tile, { heat: null, frame: null }); // already left the server's bounded history
    }
    tile.shown = v;
    showVerdict(tile, v);
    redraw(tile);
    tile.canvas.dataset.verdictId = String(v.id);
  }
  tile.loading = false;
}

function showVerdict(tile, v) {
  const defect = v.verdict === "defect";
  tile.badge.textContent = defect ? "DEFECT" : "OK";
  tile.badge.className = `badge ${defect ? "badge-bad" : "badge-good"}`;
  tile.root.classList.toggle("is-defect", defect);
  tile.score.textContent = fmt.score(v.score);
  tile.meta.textContent = `score · frame ${v.frame}`;
  tile.type.textContent = v.defect_type ? `type: ${v.defect_type}` : "";
  tile.type.hidden = !v.defect_type;
}

function stat(dl, key, label, value, cls = "") {
  dl.append(el("div", { class: `stat ${cls}` }, el("dt", { text: label }), el("dd", { text: value, "data-stat": key })));
}

function updateTile(source, runtimeOnline) {
  let tile = tiles.get(source.id);
  if (!tile) {
    tile = makeTile(source);
    tiles.set(source.id, tile);
    const container = $("tiles");
    container.querySelector(".empty")?.remove();
    const after = [...tiles.values()].filter((t) => t !== tile && t.sortKey > tile.sortKey)
      .sort((a, b) => (a.sortKey < b.sortKey ? -1 : 1))[0];
    container.insertBefore(tile.root, after ? after.root : null);
  }
  tile.runtime.textContent = source.runtime;
  const v = source.latest;
  const st = source.status || {};
  tile.root.classList.toggle("offline", !runtimeOnline);
  tile.state.textContent = runtimeOnline ? (st.state || "") : "runtime offline";
  tile.state.hidden = !tile.state.textContent || (runtimeOnline && ["running", "watching"].includes(st.state));
  if (v && (!tile.wanted || tile.wanted.id !== v.id)) { tile.wanted = v; pump(tile); }
  tile.stats.replaceChildren();
  stat(tile.stats, "frames", "frames", fmt.int(source.frames));
  stat(tile.stats, "defects", "defects", fmt.int(source.defects), source.defects ? "bad" : "");
  stat(tile.stats, "rate", "rate", source.frames ? fmt.pct(source.defect_rate) : "–");
  stat(tile.stats, "fps", "fps", (model.fps?.[source.id] ?? source.fps).toFixed(1));
  stat(tile.stats, "latency", "p50 / p95 ms", `${fmt.ms(source.latency_ms.p50)} / ${fmt.ms(source.latency_ms.p95)}`);
  stat(tile.stats, "drops", "drops", fmt.int(st.drops), st.drops ? "warn" : "");
  stat(tile.stats, "errors", "errors", fmt.int(st.errors), st.errors ? "warn" : "");
}

function renderRuntimes() {
  const box = $("runtimes");
  if (!model.runtimes.length) return;
  box.replaceChildren(...model.runtimes.map((r) => {
    const badge = el("span", { class: `pill ${r.online ? "pill-ok" : "pill-off"}`,
      text: r.online ? "online" : `offline · silent ${formatSpan(r.silent_s)}` });
    const facts = el("dl", { class: "facts" });
    const fact = (k, v) => facts.append(el("dt", { text: k }), el("dd", { text: v }));
    fact("endpoint", r.endpoint);
    fact("engine", r.engine || "–");
    fact("model", r.models.join(", ") || "–");
    fact("uptime", r.uptime_s === null || r.uptime_s === undefined ? "–" : formatSpan(r.uptime_s));
    fact("fps · published", `${r.fps === null || r.fps === undefined ? "–" : r.fps.toFixed(1)} · ${fmt.int(r.published)}`);
    fact("gaps · lost · restarts", `${r.gaps} · ${r.lost} · ${r.restarts}`);
    const rows = Object.entries(r.sources).map(([name, s]) => el("tr", {},
      el("td", { text: name }), el("td", { class: `state state-${s.state}`, text: s.state }),
      el("td", { text: fmt.int(s.frames) }), el("td", { text: fmt.int(s.drops) }),
      el("td", { text: fmt.int(s.errors) }), el("td", { text: fmt.int(s.reopens) })));
    const table = rows.length ? el("table", { class: "mini" }, el("thead", {}, el("tr", {},
      ...["source", "state", "frames", "drops", "errors", "reopens"].map((h) => el("th", { text: h })))),
    el("tbody", {}, ...rows)) : null;
    const events = el("ul", { class: "events" }, ...[...r.events].reverse().slice(0, 6).map((e) =>
      el("li", { class: `ev ev-${e.kind}` }, el("span", { class: "muted", text: e.t ? fmt.time(e.t) : "" }),
        el("span", { class: "ev-kind", text: e.kind }), el("span", { text: `${e.source ? `${e.source}: ` : ""}${e.message}` }))));
    return el("div", { class: `runtime ${r.online ? "" : "offline"}`, "data-runtime-id": r.id },
      el("div", { class: "runtime-head" }, el("span", { class: "runtime-name", text: r.label }), badge),
      facts, table, r.events.length ? events : null);
  }));
}

function addDefects(list) {
  const box = $("defects");
  for (const v of list) {
    model.defects.unshift(v);
    const li = el("li", { class: "defect", "data-verdict-id": String(v.id), "data-source-id": v.source_id, tabindex: "0" },
      el("span", { class: "d-time", text: fmt.time(v.received) }),
      el("span", { class: "d-where", text: `${v.runtime_label} / ${v.source}` }),
      el("span", { class: "d-frame", text: `#${v.frame}` }),
      el("span", { class: "d-score", text: fmt.score(v.score) }),
      el("span", { class: "d-type", text: v.defect_type || "" }));
    li.addEventListener("click", () => openDetail(v));
    li.addEventListener("keydown", (e) => { if (e.key === "Enter") openDetail(v); });
    box.prepend(li);
  }
  model.defects.length = Math.min(model.defects.length, model.history);
  while (box.children.length > model.history) box.lastElementChild.remove();
}

function renderRejected(rejected) {
  const total = Object.values(rejected.by_reason).reduce((a, b) => a + b, 0);
  $("rejected-panel").hidden = total === 0;
  $("rejected").replaceChildren(...[...rejected.recent].reverse().map((r) => el("li", { class: "ev" },
    el("span", { class: "muted", text: fmt.time(r.t) }), el("span", { class: "ev-kind", text: r.reason }),
    el("span", { text: `${r.topic}: ${r.error}` }))));
}

function swatch(colour) {
  const node = el("span", { class: "swatch" });
  node.style.background = colour; // CSSOM, not a style attribute: the page's CSP allows no inline styles
  return node;
}

function renderTimeline() {
  const series = [];
  let i = 0;
  const legend = [];
  const ordered = [...model.timeline].filter(([id]) => model.sources.has(id))
    .map(([id, points]) => [model.sources.get(id), points])
    .sort(([a], [b]) => (`${a.runtime}\u0000${a.name}` < `${b.runtime}\u0000${b.name}` ? -1 : 1));
  for (const [s, points] of ordered) {
    const colour = PALETTE[i++ % PALETTE.length];
    series.push({ colour, points });
    legend.push(el("span", { class: "key" }, swatch(colour), el("span", { text: `${s.runtime} / ${s.name}` })));
  }
  $("legend").replaceChildren(...legend);
  drawTimeline($("timeline"), series, model.time);
}

function apply(msg) {
  if (msg.type === "snapshot") { // ids are the server's: after a reconnect (maybe to a restarted server) start over
    model.sources.clear(); model.timeline.clear(); model.defects = []; tiles.clear();
    $("defects").replaceChildren();
    $("tiles").replaceChildren(el("p", { class: "empty", text: "Waiting for verdicts…" }));
  }
  Object.assign(model, { history: msg.history, time: msg.time, runtimes: msg.runtimes, fps: msg.fps });
  for (const s of msg.sources) model.sources.set(s.id, s);
  for (const [id, points] of Object.entries(msg.timeline)) {
    const list = (model.timeline.get(id) || []).concat(points);
    model.timeline.set(id, list.slice(-model.history));
  }
  const online = new Map(msg.runtimes.map((r) => [r.id, r.online]));
  for (const s of model.sources.values()) updateTile(s, online.get(s.runtime_id) ?? false);
  setKpis(msg.totals);
  renderRuntimes();
  addDefects(msg.defects);
  renderRejected(msg.rejected);
  renderTimeline();
  $("clock").textContent = `server time ${fmt.time(msg.time)}`;
  document.body.dataset.version = String(msg.version);
}

function connect(delay = 500) {
  const conn = $("conn");
  const ws = new WebSocket(withToken(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws`));
  ws.onopen = () => { conn.textContent = "live"; conn.className = "pill pill-ok"; conn.dataset.state = "live"; delay = 500; };
  ws.onmessage = (event) => apply(JSON.parse(event.data));
  ws.onclose = () => {
    conn.textContent = "disconnected · retrying"; conn.className = "pill pill-off"; conn.dataset.state = "closed";
    setTimeout(() => connect(Math.min(delay * 2, 5000)), delay);
  };
}

window.addEventListener("resize", renderTimeline);
connect();
