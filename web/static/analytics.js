// Counting lines and zones over the live view (an SVG overlay in source pixels) with their
// live counts, polled from /api/analytics (docs/dashboard.md). The editor that changes them
// is editor.js. Uses getJSON, every, el, fmt and $ from app.js (loaded first).
"use strict";

const ANALYTICS_INTERVAL_MS = 1000;
const SVG_NS = "http://www.w3.org/2000/svg";
const HANDLE_PX = 7;       // a point's handle, radius in screen pixels

// The config's rule (docs/analytics.md): a shape's points are fractions of the frame when
// every value is within 0..1, else source pixels.
function isFractions(points) {
  return points.every((p) => p.every((v) => v >= 0 && v <= 1));
}

function toPixels(points, [w, h]) {
  return isFractions(points) ? points.map(([x, y]) => [x * w, y * h]) : points.map(([x, y]) => [x, y]);
}

function svgEl(tag, attrs = {}, text) {
  const e = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

function lineCountsText(c) {
  return c ? `in ${c.in} \u00b7 out ${c.out}` : "no counts yet";
}

function zoneCountsText(c) {
  return c ? `${c.occupancy} inside \u00b7 ${c.entered} entered` : "no counts yet";
}

// Where a line's `in` side is: s = (x2-x1)(py-y1) - (y2-y1)(px-x1) > 0 (image coordinates,
// y down), i.e. along (-(y2-y1), x2-x1) from its first segment.
function inArrow([[x1, y1], [x2, y2]], len) {
  const dx = x2 - x1, dy = y2 - y1, n = Math.hypot(dx, dy) || 1;
  const mx = (x1 + x2) / 2, my = (y1 + y2) / 2, nx = -dy / n, ny = dx / n;
  return [[mx, my], [mx + nx * len, my + ny * len]];
}

class CameraAnalytics {
  constructor(figure) {
    this.camera = figure.dataset.analyticsCamera;
    this.figure = figure;
    this.img = $("img.live-img", figure);
    this.svg = $("svg.overlay", figure);
    this.list = $("ul.analytics-counts", figure);
    this.toggle = $("button.edit-toggle", figure);
    this.bar = $(".editor-bar", figure);
    this.data = null;       // the camera's last answer from /api/analytics
    this.edit = null;       // while editing: its ShapeEditor (editor.js)
    this.size = null;       // [width, height] of the frame, in source pixels
    this.note = el("p", undefined, "saved-note muted small");
    this.note.hidden = true;
    this.list.after(this.note);
    this.toggle.addEventListener("click", () => (this.edit ? this.stopEditing() : this.startEditing()));
    this.img.addEventListener("load", () => {  // a new frame: drawn again only when its size changed
      const size = this.frameSize();
      if (size && (!this.size || size[0] !== this.size[0] || size[1] !== this.size[1])) this.render();
    });
    for (const type of ["pointerdown", "pointermove", "pointerup", "pointercancel"]) {
      this.svg.addEventListener(type, (e) => { if (this.edit) this.edit.onPointer(e); });
    }
    this.svg.addEventListener("dblclick", (e) => e.preventDefault());
    window.addEventListener("resize", () => this.render());
  }

  update(data, editable, reason) {
    this.data = data;
    this.toggle.hidden = false;
    this.toggle.disabled = !editable && !this.edit;
    this.toggle.title = editable ? "draw, move, name and delete this camera's lines and zones" : reason;
    this.renderCounts();
    this.render();
  }

  frameSize() {
    if (this.data && this.data.frame) return this.data.frame;
    if (this.img.naturalWidth) return [this.img.naturalWidth, this.img.naturalHeight];
    return null;
  }

  shapes() {
    if (this.edit) return this.edit.shapes;
    const size = this.size;
    if (!this.data || !size) return [];
    return [...this.data.lines.map((l) => ({ kind: "line", name: l.name, pts: toPixels(l.points, size) })),
      ...this.data.zones.map((z) => ({ kind: "zone", name: z.name, pts: toPixels(z.points, size) }))];
  }

  // -- the live counts, under the picture ----------------------------------------------

  renderCounts() {
    const counts = (this.data && this.data.counts) || { lines: {}, zones: {} };
    this.list.replaceChildren();
    for (const line of (this.data ? this.data.lines : [])) {
      const c = counts.lines && counts.lines[line.name];
      const li = el("li", undefined, "count-line");
      li.dataset.line = line.name;
      li.dataset.in = c ? c.in : 0;
      li.dataset.out = c ? c.out : 0;
      li.append(el("strong", line.name), " ", el("span", lineCountsText(c)));
      const labels = c && c.by_label ? Object.entries(c.by_label) : [];
      if (labels.length) {
        li.append(el("span", ` (${labels.map(([k, v]) => `${k} ${v.in}/${v.out}`).join(", ")})`, "muted"));
      }
      this.list.append(li);
    }
    for (const zone of (this.data ? this.data.zones : [])) {
      const c = counts.zones && counts.zones[zone.name];
      const li = el("li", undefined, "count-zone");
      li.dataset.zone = zone.name;
      li.dataset.occupancy = c ? c.occupancy : 0;
      li.dataset.entered = c ? c.entered : 0;
      const extra = c ? [c.mean_dwell_s !== null && c.mean_dwell_s !== undefined ? `mean dwell ${fmt.num(c.mean_dwell_s)} s` : "",
        c.loiter ? `${c.loiter} loitering` : ""].filter(Boolean).join(" \u00b7 ") : "";
      li.append(el("strong", zone.name), " ", el("span", zoneCountsText(c)));
      if (extra) li.append(el("span", ` \u00b7 ${extra}`, "muted"));
      this.list.append(li);
    }
  }

  // -- the overlay ------------------------------------------------------------------------

  render() {
    const size = this.frameSize();
    if (!size) return;
    this.size = size;
    const [w, h] = size;
    const svg = this.svg;
    svg.setAttribute("viewBox", `0 0 ${w} ${h}`);
    svg.setAttribute("preserveAspectRatio", "xMidYMid meet");  // as the picture's object-fit: contain
    svg.classList.toggle("editing", !!this.edit);
    const screen = svg.clientWidth ? Math.max(w / svg.clientWidth, h / (svg.clientHeight || 1)) : 1;
    const stroke = Math.max(2, 2.5 * screen), font = Math.max(11, 13 * screen), handle = HANDLE_PX * screen;
    const counts = (this.data && this.data.counts) || {};
    const items = [];
    this.shapes().forEach((s, i) => {
      const selected = this.edit && this.edit.selected === i;
      const g = svgEl("g", { class: `shape ${s.kind}${selected ? " selected" : ""}`, "data-name": s.name });
      const pts = s.pts.map((p) => p.join(",")).join(" ");
      const attrs = { points: pts, "stroke-width": stroke, "data-shape": i };
      g.append(svgEl(s.kind === "line" ? "polyline" : "polygon", { ...attrs, class: "body" }));
      if (this.edit) {  // a wide, invisible stroke makes a thin line easy to grab
        g.append(svgEl(s.kind === "line" ? "polyline" : "polygon",
          { points: pts, "stroke-width": handle * 2, "data-shape": i, class: "grab" }));
      }
      if (s.kind === "line" && s.pts.length >= 2) {
        const len = font * 2.4, [[ax, ay], [bx, by]] = inArrow(s.pts, len);
        const ux = (bx - ax) / len, uy = (by - ay) / len, hw = font * 0.45, tip = font * 0.8;
        g.append(svgEl("line", { x1: ax, y1: ay, x2: bx, y2: by, "stroke-width": stroke, class: "arrow" }));
        g.append(svgEl("polygon", {  // the head: a triangle past the shaft's end
          points: `${bx + ux * tip},${by + uy * tip} ${bx - uy * hw},${by + ux * hw} ${bx + uy * hw},${by - ux * hw}`,
          class: "arrow-head" }));
        g.append(svgEl("text", { x: bx + ux * tip * 1.6, y: by + uy * tip * 1.6 + font * 0.35, "font-size": font * 0.9,
          class: "arrow-label" }, "in"));
      }
      const c = s.kind === "line" ? (counts.lines || {})[s.name] : (counts.zones || {})[s.name];
      const text = this.edit ? s.name : `${s.name}: ${s.kind === "line" ? lineCountsText(c) : zoneCountsText(c)}`;
      // A line's label by its first point; a zone's centred on its corners' mean.
      const [tx, ty] = s.kind === "line" ? s.pts[0]
        : s.pts.reduce(([a, b], [x, y]) => [a + x / s.pts.length, b + y / s.pts.length], [0, 0]);
      g.append(svgEl("text", { x: tx, y: Math.max(font, ty - font * 0.6), "font-size": font,
        "text-anchor": s.kind === "line" ? "start" : "middle", class: "label" }, text));
      if (this.edit) {
        s.pts.forEach(([x, y], j) => g.append(svgEl("circle", { cx: x, cy: y, r: handle, class: "handle",
          "data-shape": i, "data-point": j })));
      }
      items.push(g);
    });
    const draft = this.edit && this.edit.draft;
    if (draft && draft.pts.length) {
      const pts = [...draft.pts, ...(this.edit.hover ? [this.edit.hover] : [])];
      const tag = draft.kind === "line" ? "polyline" : "polygon";
      items.push(svgEl(tag, { points: pts.map((p) => p.join(",")).join(" "), "stroke-width": stroke,
        class: `draft ${draft.kind}` }));
      draft.pts.forEach(([x, y], j) => items.push(svgEl("circle", { cx: x, cy: y, r: handle * (j === 0 ? 1.2 : 0.8),
        class: "draft-point" })));
    }
    svg.replaceChildren(...items);
    for (const t of svg.querySelectorAll("text")) {  // a label near an edge is moved inside the frame
      const bb = t.getBBox();
      const dx = Math.max(0, -bb.x) + Math.min(0, w - bb.x - bb.width);
      if (dx) t.setAttribute("x", +t.getAttribute("x") + dx);
    }
  }

  // -- editing (editor.js) ----------------------------------------------------------------

  startEditing() {
    if (!this.data || !this.size) return;
    this.edit = new ShapeEditor(this);
    this.toggle.textContent = "Stop editing";
    this.bar.hidden = false;
    this.render();
  }

  stopEditing(force = false) {
    if (!force && this.edit && this.edit.dirty && !window.confirm("Discard the changes that are not saved?")) return;
    this.edit = null;
    this.toggle.textContent = "Edit lines & zones";
    this.bar.hidden = true;
    this.bar.replaceChildren();
    this.render();
  }
}

document.addEventListener("DOMContentLoaded", () => {
  const cams = [...document.querySelectorAll("figure[data-analytics-camera]")].map((f) => new CameraAnalytics(f));
  if (!cams.length) return;
  document.addEventListener("keydown", (ev) => cams.forEach((c) => c.edit && c.edit.onKey(ev)));
  every(ANALYTICS_INTERVAL_MS, async () => {
    const data = await getJSON("/api/analytics");
    for (const c of cams) {
      const d = data.cameras[c.camera];
      if (d) c.update(d, data.editable, data.reason);
    }
  });
});
