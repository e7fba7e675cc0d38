// The line and zone editor over a camera's live picture (docs/dashboard.md, "Drawing lines
// and zones"): draw, move, name and delete, then save to the config file through
// PUT /api/analytics/<camera>. Loaded after analytics.js, whose CameraAnalytics opens it
// and draws its shapes.
"use strict";

const DRAG_PX = 8;         // a press that moves further than this is a drag, not a click
const CLOSE_PX = 12;       // a click this near the first corner closes a zone
const MIN_POINTS = { line: 2, zone: 3 };
const KEYS = { line: "lines", zone: "zones" };
const HINT = "Line: drag across the path, or click its points and double-click the last one. " +
  "Zone: click its corners and click the first one again to close it, or drag a rectangle. " +
  "Drag a point or a shape to move it; double-click a point to remove it, an edge to add one. " +
  "The arrow on a line points to its \u201cin\u201d side. Enter finishes, Escape cancels a drawing, Delete removes the selected shape.";

function fromPixels(pts, [w, h], fractions) {
  const clamp = (v, hi) => Math.min(Math.max(v, 0), hi);
  if (fractions) return pts.map(([x, y]) => [+clamp(x / w, 1).toFixed(4), +clamp(y / h, 1).toFixed(4)]);
  return pts.map(([x, y]) => [+clamp(x, w).toFixed(1), +clamp(y, h).toFixed(1)]);
}

function csrfToken() {
  const meta = document.querySelector('meta[name="csrf-token"]');
  return meta ? meta.content : "";
}

function segmentsCross(a, b, c, d) {
  const o = (p, q, r) => Math.sign((q[0] - p[0]) * (r[1] - p[1]) - (q[1] - p[1]) * (r[0] - p[0]));
  return o(a, b, c) * o(a, b, d) < 0 && o(c, d, a) * o(c, d, b) < 0;
}

function distToSegment([px, py], [x1, y1], [x2, y2]) {
  const dx = x2 - x1, dy = y2 - y1, l2 = dx * dx + dy * dy;
  const t = l2 ? Math.max(0, Math.min(1, ((px - x1) * dx + (py - y1) * dy) / l2)) : 0;
  return Math.hypot(px - (x1 + t * dx), py - (y1 + t * dy));
}

// One editing session of one camera; the shapes are held in source pixels until saved.
class ShapeEditor {
  constructor(cam) {
    this.cam = cam;
    const size = cam.size;
    this.shapes = [
      ...cam.data.lines.map((l) => ({ kind: "line", ...l })),
      ...cam.data.zones.map((z) => ({ kind: "zone", ...z })),
    ].map(({ kind, name, points, ...rest }) => ({ kind, name, pts: toPixels(points, size),
      fractions: isFractions(points), rest }));
    this.selected = null;   // index into shapes
    this.mode = "select";   // select | line | zone
    this.draft = null;      // a shape being drawn: { kind, pts }
    this.hover = null;      // where the pointer is, to preview the draft's next point
    this.press = null;      // the press in progress: where, and what it drags
    this.lastDown = null;   // the last press, to tell a double press (remove a point, add one)
    this.dirty = false;
    this.buildBar();
  }

  buildBar() {
    const bar = this.cam.bar;
    bar.replaceChildren();
    const tools = el("div", undefined, "tools");
    const modes = [["select", "Select / move"], ["line", "Draw line"], ["zone", "Draw zone"]];
    for (const [mode, text] of modes) {
      const b = el("button", text, "secondary");
      b.type = "button";
      b.dataset.mode = mode;
      b.addEventListener("click", () => this.setMode(mode));
      tools.append(b);
    }
    const name = el("input");
    name.type = "text";
    name.name = "shape-name";
    name.placeholder = "name";
    name.maxLength = 64;
    name.disabled = true;
    name.setAttribute("aria-label", "name of the selected line or zone");
    name.addEventListener("input", () => this.rename(name.value));
    const del = el("button", "Delete", "secondary");
    del.type = "button";
    del.dataset.action = "delete";
    del.disabled = true;
    del.addEventListener("click", () => this.deleteSelected());
    const save = el("button", "Save");
    save.type = "button";
    save.dataset.action = "save";
    save.addEventListener("click", () => this.save());
    const cancel = el("button", "Cancel", "secondary");
    cancel.type = "button";
    cancel.dataset.action = "cancel";
    cancel.addEventListener("click", () => this.cam.stopEditing());
    tools.append(name, del, save, cancel);
    const msg = el("div", undefined, "editor-msg");
    msg.setAttribute("role", "status");
    bar.append(tools, el("p", HINT, "muted small hint"), msg);
    this.ui = { name, del, save, msg, modes: [...tools.querySelectorAll("button[data-mode]")] };
    this.setMode("select");
  }

  setMode(mode) {
    this.mode = mode;
    this.draft = null;
    this.hover = null;
    for (const b of this.ui.modes) b.setAttribute("aria-pressed", String(b.dataset.mode === mode));
    this.cam.svg.dataset.mode = mode;
    this.cam.render();
  }

  select(i) {
    this.selected = i;
    const s = i === null ? null : this.shapes[i];
    this.ui.name.disabled = !s;
    this.ui.name.value = s ? s.name : "";
    this.ui.del.disabled = !s;
  }

  changed() {
    this.dirty = true;
    this.cam.render();
  }

  rename(value) {
    if (this.selected === null) return;
    this.shapes[this.selected].name = value.trim();
    this.changed();
  }

  deleteSelected() {
    if (this.selected === null) return;
    this.shapes.splice(this.selected, 1);
    this.select(null);
    this.changed();
  }

  freeName(kind) {
    const taken = new Set(this.shapes.map((s) => s.name));
    for (let n = 1; ; n++) if (!taken.has(`${kind}-${n}`)) return `${kind}-${n}`;
  }

  finishDraft() {
    const d = this.draft;
    if (!d) return;
    if (d.pts.length < MIN_POINTS[d.kind]) {
      this.message(`a ${d.kind} needs at least ${MIN_POINTS[d.kind]} points`, true);
      return;
    }
    if (d.kind === "zone" && this.selfCrossing(d.pts)) {
      this.message("this zone crosses itself: click its corners in order around it", true);
      return;
    }
    this.shapes.push({ kind: d.kind, name: this.freeName(d.kind), pts: d.pts, fractions: true, rest: {} });
    this.draft = null;
    this.hover = null;
    this.setMode("select");
    this.select(this.shapes.length - 1);
    this.message(`${d.kind} added: name it, then Save`);
    this.changed();
  }

  selfCrossing(pts) {
    const n = pts.length;
    for (let i = 0; i < n; i++) {
      for (let j = i + 2; j < n; j++) {
        if (i === 0 && j === n - 1) continue;  // neighbours through the closing edge
        if (segmentsCross(pts[i], pts[(i + 1) % n], pts[j], pts[(j + 1) % n])) return true;
      }
    }
    return false;
  }

  point(ev) {
    const m = this.cam.svg.getScreenCTM();
    if (!m) return null;
    const p = new DOMPoint(ev.clientX, ev.clientY).matrixTransform(m.inverse());
    const [w, h] = this.cam.size;
    return [Math.min(Math.max(p.x, 0), w), Math.min(Math.max(p.y, 0), h)];
  }

  screenScale() {
    const [w, h] = this.cam.size;
    return Math.max(w / (this.cam.svg.clientWidth || w), h / (this.cam.svg.clientHeight || h));
  }

  onPointer(ev) {
    if (!this.cam.size) return;
    const p = this.point(ev);
    if (!p) return;
    const scale = this.screenScale();
    const near = (a, b, px) => Math.hypot(a[0] - b[0], a[1] - b[1]) <= px * scale;
    const t = ev.target.dataset || {};
    if (ev.type === "pointerdown" && ev.button === 0 && this.mode === "select" && t.shape !== undefined) {
      // A second press on the same point or shape within 400 ms: a double press. (dblclick
      // itself goes to the svg, which holds the pointer capture.)
      const last = this.lastDown, now = performance.now();
      this.lastDown = { time: now, at: p, shape: t.shape, point: t.point };
      if (last && now - last.time < 400 && last.shape === t.shape && last.point === t.point && near(p, last.at, 6)) {
        this.lastDown = null;
        this.doublePress(+t.shape, t.point === undefined ? null : +t.point, p);
        return;
      }
    }
    if (ev.type === "pointerdown") {
      if (ev.button !== 0) return;
      ev.preventDefault();
      this.cam.svg.setPointerCapture(ev.pointerId);
      this.press = { at: p, last: p, dragging: false, shape: null, point: null };
      if (this.mode === "select") {
        if (t.shape !== undefined) {
          this.select(+t.shape);
          this.press.shape = +t.shape;
          this.press.point = t.point !== undefined ? +t.point : null;
        } else {
          this.select(null);
        }
        this.cam.render();
        return;
      }
      const d = this.draft;
      if (!d) {
        this.draft = { kind: this.mode, pts: [p] };
      } else if (d.kind === "zone" && d.pts.length >= 3 && near(p, d.pts[0], CLOSE_PX)) {
        this.press = null;
        this.finishDraft();
        return;
      } else if (near(p, d.pts[d.pts.length - 1], CLOSE_PX / 2)) {  // the second click of a double-click
        this.press = null;
        this.finishDraft();
        return;
      } else {
        d.pts.push(p);
      }
      this.cam.render();
      return;
    }
    if (ev.type === "pointermove") {
      const pr = this.press;
      if (!pr) {
        if (this.draft) { this.hover = p; this.cam.render(); }
        return;
      }
      if (!pr.dragging && !near(p, pr.at, DRAG_PX)) pr.dragging = true;
      if (!pr.dragging) return;
      if (this.mode === "select" && pr.shape !== null) {
        const s = this.shapes[pr.shape];
        if (pr.point !== null) {
          s.pts[pr.point] = p;
        } else {  // the whole shape, kept inside the frame
          const [w, h] = this.cam.size;
          let dx = p[0] - pr.last[0], dy = p[1] - pr.last[1];
          for (const [x, y] of s.pts) {
            dx = Math.min(Math.max(dx, -x), w - x);
            dy = Math.min(Math.max(dy, -y), h - y);
          }
          s.pts = s.pts.map(([x, y]) => [x + dx, y + dy]);
        }
        pr.last = p;
        this.changed();
      } else if (this.draft && this.draft.pts.length === 1) {
        this.hover = p;  // a drag draws the line (two points) or the zone (a rectangle)
        this.cam.render();
      }
      return;
    }
    if (ev.type === "pointerup" || ev.type === "pointercancel") {
      const pr = this.press;
      this.press = null;
      if (!pr || ev.type === "pointercancel") return;
      if (this.mode !== "select" && pr.dragging && this.draft && this.draft.pts.length === 1) {
        const [a, b] = [this.draft.pts[0], p];
        this.draft.pts = this.mode === "line" ? [a, b] : [a, [b[0], a[1]], b, [a[0], b[1]]];
        this.finishDraft();
      }
    }
  }

  doublePress(i, j, p) {
    const s = this.shapes[i];
    this.select(i);
    if (j !== null) {  // remove the point, if the shape keeps enough
      if (s.pts.length > MIN_POINTS[s.kind]) { s.pts.splice(j, 1); this.changed(); }
      else this.message(`a ${s.kind} needs at least ${MIN_POINTS[s.kind]} points`, true);
      return;
    }
    let best = 0, bestD = Infinity;  // add a point on the nearest edge
    const n = s.kind === "zone" ? s.pts.length : s.pts.length - 1;
    for (let k = 0; k < n; k++) {
      const d = distToSegment(p, s.pts[k], s.pts[(k + 1) % s.pts.length]);
      if (d < bestD) { bestD = d; best = k; }
    }
    s.pts.splice(best + 1, 0, p);
    this.changed();
  }

  onKey(ev) {
    if (ev.target.matches("input, select, textarea")) return;
    if (ev.key === "Escape" && this.draft) { this.draft = null; this.hover = null; this.cam.render(); }
    else if (ev.key === "Enter" && this.draft) { ev.preventDefault(); this.finishDraft(); }
    else if ((ev.key === "Delete" || ev.key === "Backspace") && this.selected !== null) { ev.preventDefault(); this.deleteSelected(); }
  }

  message(text, isError = false, lines = []) {
    const box = this.ui.msg;
    box.replaceChildren(el("span", text));
    box.className = "editor-msg" + (isError ? " error" : " ok");
    if (lines.length) {
      const ul = el("ul", undefined, "error-lines");
      for (const line of lines) ul.append(el("li", line));
      box.append(ul);
    }
  }

  body() {
    const out = { lines: [], zones: [] };
    for (const s of this.shapes) {
      out[KEYS[s.kind]].push({ name: s.name, points: fromPixels(s.pts, this.cam.size, s.fractions), ...s.rest });
    }
    return out;
  }

  async save() {
    if (this.draft) this.finishDraft();
    this.ui.save.disabled = true;
    this.message("saving\u2026");
    try {
      const resp = await fetch(`/api/analytics/${encodeURIComponent(this.cam.camera)}`, {
        method: "PUT",
        headers: { "Content-Type": "application/json", Accept: "application/json", "X-CSRFToken": csrfToken() },
        body: JSON.stringify(this.body()),
        cache: "no-store",
      });
      const answer = await resp.json().catch(() => ({}));
      if (resp.status === 401) { getJSON("/api/status").catch(() => {}); return; }  // to the login page
      if (!resp.ok) {
        const lines = answer.errors || [];
        this.message(`Not saved (${resp.status}): ${lines.length ? "" : answer.error || resp.statusText}`, true, lines);
        return;
      }
      this.dirty = false;
      this.cam.data = { ...this.cam.data, lines: answer.lines, zones: answer.zones, counts: answer.counts };
      this.cam.stopEditing(true);
      this.cam.renderCounts();
      this.cam.note.textContent = answer.applied ? `Saved to ${answer.saved} and applied.`
        : `Saved to ${answer.saved}. ${answer.note || ""}`;
      this.cam.note.dataset.state = answer.applied ? "applied" : "saved";
      this.cam.note.hidden = false;
    } catch (err) {
      this.message(`Not saved: ${err.message}`, true);
    } finally {
      if (this.ui) this.ui.save.disabled = false;
    }
  }
}
