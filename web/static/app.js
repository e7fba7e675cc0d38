// The dashboard's behaviour: it polls the JSON API and draws what comes back.
// No framework and no build step; Chart.js (vendored) draws the counts.
"use strict";

const LIVE_INTERVAL_MS = 100;     // at most 10 pictures a second per camera
const HEALTH_INTERVAL_MS = 2000;
const COUNTS_INTERVAL_MS = 5000;
const EVENTS_INTERVAL_MS = 3000;  // refresh the first page only, so paging stays put
const PAGE_SIZE = 25;
const PALETTE = ["#0072b2", "#e69f00", "#009e73", "#cc79a7", "#56b4e9", "#d55e00", "#f0e442", "#666666"];

const $ = (sel, root = document) => root.querySelector(sel);

class LoginNeeded extends Error {}

async function getJSON(url) {
  const resp = await fetch(url, { headers: { Accept: "application/json" }, cache: "no-store" });
  if (resp.status === 401) {
    window.location.assign("/login?next=" + encodeURIComponent(window.location.pathname));
    throw new LoginNeeded();
  }
  const body = await resp.json().catch(() => ({}));
  if (!resp.ok) throw new Error(body.error || `${resp.status} ${resp.statusText}`);
  return body;
}

// Repeats fn every ms, while the page is visible: a hidden tab costs the device nothing.
function every(ms, fn) {
  let timer = null;
  const run = async () => {
    timer = null;
    if (document.hidden) return;
    try { await fn(); } catch (e) { if (e instanceof LoginNeeded) return; console.warn(e); }
    if (timer === null && !document.hidden) timer = setTimeout(run, ms);
  };
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden && timer === null) run();
  });
  run();
  return { now() { if (timer !== null) { clearTimeout(timer); timer = null; } run(); } };
}

const fmt = {
  num(v, digits = 1) { return v === null || v === undefined ? "–" : Number(v).toFixed(digits); },
  int(v) { return v === null || v === undefined ? "–" : Number(v).toLocaleString(); },
  bytes(v) {
    if (v === null || v === undefined) return "–";
    const units = ["B", "kB", "MB", "GB", "TB"];
    let i = 0;
    while (v >= 1000 && i < units.length - 1) { v /= 1000; i++; }
    return `${v.toFixed(v < 10 && i > 0 ? 1 : 0)} ${units[i]}`;
  },
  duration(s) {
    if (s === null || s === undefined) return "–";
    s = Math.floor(s);
    const d = Math.floor(s / 86400), h = Math.floor(s % 86400 / 3600), m = Math.floor(s % 3600 / 60);
    if (d) return `${d} d ${h} h`;
    if (h) return `${h} h ${m} min`;
    if (m) return `${m} min ${s % 60} s`;
    return `${s} s`;
  },
  time(ts) {
    const d = new Date(ts * 1000), today = new Date();
    const t = d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit", hourCycle: "h23" });
    return d.toDateString() === today.toDateString() ? t : `${d.toLocaleDateString()} ${t}`;
  },
};

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined) e.textContent = text;
  if (cls) e.className = cls;
  return e;
}

// A small thumbnail of an end event's snapshot (its best crop), linking to the full JPEG.
function snapshotLink(eventId) {
  const url = `/api/snapshots/${encodeURIComponent(eventId)}.jpg`;
  const a = el("a", undefined, "snapshot");
  a.href = url;
  a.target = "_blank";
  a.rel = "noopener";
  a.title = "snapshot: the track's best picture";
  const img = el("img");
  img.src = url;
  img.alt = "snapshot";
  img.loading = "lazy";
  img.height = 32;
  img.style.verticalAlign = "middle";  // CSSOM, which the CSP allows (no inline style attribute)
  img.onerror = () => a.replaceWith(el("span", "snapshot gone", "muted small"));  // the quota removed it
  a.append(img);
  return a;
}

// -- live view ------------------------------------------------------------------------

function startLive(img) {
  const camera = img.dataset.camera;
  const caption = $(`[data-live-caption="${CSS.escape(camera)}"]`);
  let shownTag = null, objectUrl = null;
  const show = async () => {
    // no-cache: the browser revalidates with If-None-Match, and the server answers 304
    // without encoding when the frame has not changed.
    const resp = await fetch(`/api/live/${encodeURIComponent(camera)}.jpg`, { cache: "no-cache" });
    if (resp.status === 401) return getJSON("/api/status");  // sends to the login page
    if (!resp.ok) { caption.textContent = "no picture yet"; return; }
    const tag = resp.headers.get("ETag");
    if (tag === shownTag) return;
    const blob = await resp.blob();
    const url = URL.createObjectURL(blob);
    await new Promise((resolve) => { img.onload = img.onerror = resolve; img.src = url; });
    if (objectUrl) URL.revokeObjectURL(objectUrl);
    objectUrl = url;
    shownTag = tag;
    img.dataset.frame = (tag || "").replace(/"/g, "").split("-").pop();
    caption.textContent = `frame ${img.dataset.frame}`;
  };
  every(LIVE_INTERVAL_MS, show);
}

// -- health ---------------------------------------------------------------------------

function tile(dl, name, value, detail, state) {
  const box = el("div", undefined, "tile" + (state ? ` ${state}` : ""));
  box.append(el("dt", name), el("dd", value));
  if (detail) box.append(el("dd", detail, "muted small"));
  dl.append(box);
}

function serviceText(svc) {
  return Object.entries(svc).filter(([k]) => k !== "state")
    .map(([k, v]) => `${k.replace(/_/g, " ")}: ${typeof v === "object" ? JSON.stringify(v) : v}`)
    .join(" · ");
}

function renderHealth(s) {
  const pill = $("#health-pill");
  pill.textContent = s.alive ? "running" : s.health;
  pill.className = "pill " + (s.alive ? "ok" : "bad");

  const rows = $("#health-cameras");
  rows.replaceChildren();
  for (const [cam, c] of Object.entries(s.cameras || {})) {
    const tr = document.createElement("tr");
    const q = Object.values(c.queue_depth || {}).join(" / ");
    const cells = [["camera", cam], ["fps", fmt.num(c.fps)],
      ["inference p50 / p95 ms", `${fmt.num(c.inference_ms_p50)} / ${fmt.num(c.inference_ms_p95)}`],
      ["dropped", fmt.int(c.dropped)], ["corrupt", fmt.int(c.corrupt)], ["queue", q],
      ["live tracks", fmt.int(c.live_tracks)], ["frames", fmt.int(c.frames)]];
    for (const [name, v] of cells) {
      const td = el("td", v);
      td.dataset.label = name;  // shown beside the value on a phone, where the header is hidden
      tr.append(td);
    }
    rows.append(tr);
  }

  const dl = $("#health-device");
  dl.replaceChildren();
  const services = s.services || {};
  const up = services.uplink;
  if (up) {
    // appliance/uplink/service.py status(): state, broker, backlog_rows, oldest_unsent_age_s, last_error
    const backlog = up.backlog_rows ?? up.backlog;
    const oldest = up.oldest_unsent_age_s;
    tile(dl, "Uplink", up.state || "configured",
      [up.broker || "",
       backlog !== undefined ? `backlog ${fmt.int(backlog)}` : "",
       oldest !== undefined ? (oldest === null ? "nothing unsent" : `oldest unsent ${fmt.duration(oldest)} ago`) : "",
       up.last_error ? `last error: ${up.last_error}` : ""].filter(Boolean).join(" · ") || serviceText(up),
      up.state === "connected" ? "ok" : "warn");
  } else {
    tile(dl, "Uplink", "not configured", "events are kept in SQLite on the device");
  }
  const power = services.power;
  if (power) {
    // appliance/control/power.py status(): platform, mode, max_temperature_c, throttled, dry run
    const temps = power.temperatures_c || power.temperatures;
    const tempText = temps && typeof temps === "object"
      ? Object.entries(temps).map(([k, v]) => `${k} ${fmt.num(v)} °C`).join(" · ")
      : (power.max_temperature_c !== undefined && power.max_temperature_c !== null
        ? `hottest ${fmt.num(power.max_temperature_c)} °C` : "");
    const mode = power.mode || (power.would_be_mode ? `${power.would_be_mode} (dry run)` : "not managed");
    tile(dl, "Power & temperature", mode,
      [power.platform, tempText, power.throttled ? "throttled" : "", power.error ? `error: ${power.error}` : "",
       power.dry_run && power.dry_run_reason ? power.dry_run_reason : ""]
        .filter(Boolean).join(" · ") || serviceText(power),
      power.error || power.throttled ? "warn" : "");
  } else {
    tile(dl, "Power & temperature", "not configured", "no power manager on this device");
  }
  const disk = s.disk || {};
  // appliance/store/disk.py: state ok | low (under the reserve: old events are deleted) | full (writes fail)
  const diskState = disk.state;
  tile(dl, "Disk",
    (disk.used_percent !== undefined ? `${fmt.num(disk.used_percent)} % used` : "–") + (diskState ? ` · ${diskState}` : ""),
    [`${fmt.bytes(disk.free_bytes)} free of ${fmt.bytes(disk.total_bytes)}`,
     disk.reserve_bytes ? `reserve ${fmt.bytes(disk.reserve_bytes)}` : "",
     disk.pruned_events ? `${fmt.int(disk.pruned_events)} old events deleted for space` : "",
     diskState === "full" && disk.error ? `writes fail: ${disk.error}` : "",
     `database ${fmt.bytes(s.database_bytes)}`].filter(Boolean).join(" · "),
    diskState === "full" ? "bad" : diskState === "low" ? "warn" : disk.used_percent > 90 ? "bad" : "");
  tile(dl, "Uptime", fmt.duration(s.uptime_s), `system ${fmt.duration(s.system_uptime_s)}`);
  const m = s.model || {};
  tile(dl, "Model", `${m.name || "–"} ${m.version || ""}`,
    `${m.backend || ""} on ${m.device || ""}${m.threads ? `, ${m.threads} thread(s)` : ""}` +
    (m.status && m.status !== "ready" ? ` · ${m.status}` : ""));
  const c = s.classify || {};
  if (c.state === "unavailable") {
    tile(dl, "Classifier", "unavailable", c.reason || "", "bad");
  } else if (c.model) {
    tile(dl, "Classifier", `${c.model} ${c.version || ""}`,
      `${fmt.int(c.classified)} crops · budget ${fmt.num(c.budget_crops_per_s)}/s · over budget ${fmt.int(c.dropped_budget)}` +
      (c.ms_p50 != null ? ` · ${fmt.num(c.ms_p50)} ms a crop` : ""));
  } else {
    tile(dl, "Classifier", "off", "classify.enabled is false");
  }
  const q = s.queue_depth || {};
  tile(dl, "Events stored", fmt.int(s.events_stored),
    `queues: detect→track ${fmt.int(q.detect_to_track)}, store ${fmt.int(q.store)} · last frame ${fmt.num(s.heartbeat_age_s)} s ago`);
  for (const [name, svc] of Object.entries(services)) {
    if (name !== "uplink" && name !== "power") tile(dl, name === "web" ? "Dashboard" : name, svc.state || "–", serviceText(svc));
  }
}

// -- counts chart -------------------------------------------------------------------------

let chart = null;

function renderCounts(data) {
  const labels = data.buckets.map((t) => {
    const d = new Date(t * 1000);
    return data.bucket_s >= 86400 ? d.toLocaleDateString() :
      d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: data.bucket_s < 60 ? "2-digit" : undefined, hourCycle: "h23" });
  });
  const datasets = Object.entries(data.series).map(([label, counts], i) => ({
    label, data: counts, backgroundColor: PALETTE[i % PALETTE.length], borderWidth: 0,
  }));
  $("#counts-empty").hidden = datasets.some((d) => d.data.some((v) => v > 0));
  if (!chart) {
    chart = new window.Chart($("#counts-chart"), {
      type: "bar",
      data: { labels, datasets },
      options: {
        animation: false, maintainAspectRatio: false, responsive: true,
        scales: { x: { stacked: true, ticks: { maxRotation: 0, autoSkipPadding: 12 } },
                  y: { stacked: true, beginAtZero: true, ticks: { precision: 0 } } },
        plugins: { legend: { position: "bottom" } },
      },
    });
    return;
  }
  chart.data.labels = labels;
  chart.data.datasets = datasets;
  chart.update();
}

// What the chart counts: new tracks (/api/counts, by the detector's class or the classifier's
// type), or line crossings and zone entries (/api/rollups, kept per minute).
const COUNTS_VIEWS = {
  label: { title: "Objects seen by class", url: "/api/counts", params: { by: "label" },
    note: "New tracks per class (the detector's): each object counts once, when it is first seen." },
  classification: { title: "Objects seen by type", url: "/api/counts", params: { by: "classification" },
    note: "New tracks per type (the classifier's): each object counts once, when it is first seen, under its " +
      "latest type; objects with no type decided are not counted." },
  line: { title: "Line crossings", url: "/api/rollups", params: { kind: "line", by: "direction" },
    note: "Crossings per line and direction (in, out), per minute at the finest." },
  "line-label": { title: "Line crossings by class", url: "/api/rollups", params: { kind: "line", by: "label" },
    note: "Crossings per line, direction and class (the detector's), per minute at the finest." },
  zone: { title: "Zone entries", url: "/api/rollups", params: { kind: "zone", by: "direction", direction: "enter" },
    note: "Entries per zone, per minute at the finest." },
  "zone-label": { title: "Zone entries by class", url: "/api/rollups",
    params: { kind: "zone", by: "label", direction: "enter" },
    note: "Entries per zone and class (the detector's), per minute at the finest." },
};

function startCounts() {
  const range = $("#counts-range"), by = $("#counts-by"), note = $("#counts-note");
  let asked = 0;  // only the answer to the latest question is drawn
  const loop = every(COUNTS_INTERVAL_MS, async () => {
    const view = COUNTS_VIEWS[by.value];
    const [span, bucket] = range.value.split(":").map(Number);
    const until = Date.now() / 1000;
    const q = new URLSearchParams({ since: until - span, until, bucket, ...view.params });
    const n = ++asked;
    const data = await getJSON(`${view.url}?${q}`);
    if (n === asked) renderCounts(data);
  });
  const showBy = () => {
    const view = COUNTS_VIEWS[by.value];
    $("#counts-title").textContent = view.title;
    note.textContent = view.note;
    $("#counts-chart").setAttribute("aria-label", `${view.title.toLowerCase()} over time`);
  };
  range.addEventListener("change", () => loop.now());
  by.addEventListener("change", () => { showBy(); loop.now(); });
  showBy();
}

// -- events table ---------------------------------------------------------------------

// The classifier's decided type: `pickup 0.82`, the details on hover; "–" when none.
function classificationCell(c) {
  const td = el("td", undefined, "cls");
  if (!c || !c.label) {
    td.append(el("span", "–", "muted"));
    return td;
  }
  td.append(el("span", c.label, "cls-label"));
  if (typeof c.score === "number") td.append(" ", el("span", fmt.num(c.score, 2), "muted small"));
  td.title = [typeof c.score === "number" ? `score ${fmt.num(c.score, 2)}` : "",
    c.votes !== undefined && c.attempts !== undefined ? `${c.votes} of ${c.attempts} votes` : "",
    [c.model, c.version].filter(Boolean).join(" ")].filter(Boolean).join(" · ");
  return td;
}

// The event column: the type, and for line and zone events which one and what happened.
function eventText(e) {
  if (e.type === "line") return `line ${e.line} ${e.direction}`;
  if (e.type === "zone") return `zone ${e.zone} ${e.action}`;
  return e.type;
}

function startEvents() {
  const form = $("#event-filters"), errorBox = $("#events-error");
  const cursors = [null];  // cursors[i]: `before` for page i (null: newest)
  let page = 0, nextBefore = null;

  const query = () => {
    const q = new URLSearchParams({ limit: PAGE_SIZE });
    for (const name of ["camera", "label", "type", "classification"]) {
      if (form.elements[name].value) q.set(name, form.elements[name].value);
    }
    // datetime-local is the viewer's local time; the API takes unix seconds.
    for (const name of ["since", "until"]) {
      const v = form.elements[name].value;
      if (v) q.set(name, String(new Date(v).getTime() / 1000));
    }
    if (cursors[page] !== null) q.set("before", cursors[page]);
    return q;
  };

  const load = async () => {
    let data;
    try {
      data = await getJSON(`/api/events?${query()}`);
    } catch (e) {
      if (e instanceof LoginNeeded) throw e;
      errorBox.textContent = e.message;
      errorBox.hidden = false;
      return;
    }
    errorBox.hidden = true;
    nextBefore = data.next_before;
    const rows = $("#events-rows");
    rows.replaceChildren();
    if (!data.events.length) {
      const td = el("td", "no events match", "muted");
      td.colSpan = 8;
      const tr = el("tr");
      tr.append(td);
      rows.append(tr);
    }
    for (const e of data.events) {
      const tr = el("tr");
      tr.dataset.seq = e.seq;
      tr.append(el("td", fmt.time(e.ts)), el("td", e.camera), el("td", eventText(e), `type-${e.type}`),
        el("td", String(e.track_id)), el("td", e.label), classificationCell(e.classification),
        el("td", fmt.num(e.score, 2), "score"), el("td", e.id, "id"));
      if (e.snapshot) tr.lastElementChild.append(" ", snapshotLink(e.id));
      rows.append(tr);
    }
    $("#events-newer").disabled = page === 0;
    $("#events-older").disabled = nextBefore === null;
    $("#events-page").textContent = page === 0 ? "newest" : `page ${page + 1}`;
  };

  const loop = every(EVENTS_INTERVAL_MS, async () => { if (page === 0) await load(); });
  const restart = () => { cursors.length = 1; page = 0; loop.now(); };
  form.addEventListener("submit", (ev) => { ev.preventDefault(); restart(); });
  form.addEventListener("reset", () => setTimeout(restart));
  $("#events-older").addEventListener("click", () => {
    if (nextBefore === null) return;
    cursors[page + 1] = nextBefore;
    page += 1;
    load();
  });
  $("#events-newer").addEventListener("click", () => {
    if (page === 0) return;
    page -= 1;
    load();
  });

  getJSON("/api/filters").then((f) => {
    for (const [name, values] of [["camera", f.cameras], ["label", f.labels], ["type", f.types],
      ["classification", f.classifications || []]]) {
      const select = form.elements[name];
      for (const v of values) select.append(new Option(v, v));
    }
  }).catch(() => {});
}

// -- config ---------------------------------------------------------------------------

async function showConfig() {
  $("#config-text").textContent = JSON.stringify(await getJSON("/api/config"), null, 2);
}

document.addEventListener("DOMContentLoaded", () => {
  document.querySelectorAll("img.live-img").forEach(startLive);
  every(HEALTH_INTERVAL_MS, async () => renderHealth(await getJSON("/api/status")));
  startCounts();
  startEvents();
  showConfig().catch(() => {});
});
