// Box annotation on a canvas: draw, select, move, resize, relabel, delete; submit for review.
// Data come from <script type="application/json" id="annotation-data"> (escaped by the server);
// labels are drawn with fillText and listed with textContent, never parsed as HTML.
(function () {
  "use strict";
  const data = JSON.parse(document.getElementById("annotation-data").textContent);
  const canvas = document.getElementById("canvas");
  const ctx = canvas.getContext("2d");
  const classList = document.getElementById("classes");
  const boxList = document.getElementById("boxes");
  const status = document.getElementById("status");
  const submit = document.getElementById("submit");
  const colors = ["#f97316", "#22c55e", "#3b82f6", "#e11d48", "#a855f7", "#14b8a6", "#eab308", "#64748b", "#ec4899", "#84cc16"];
  const HANDLE = 6;
  let boxes = data.boxes.map((b) => ({ x1: +b[0], y1: +b[1], x2: +b[2], y2: +b[3], label: String(b[4]) }));
  let classes = data.classes.slice();
  let current = classes.length ? classes[0] : "";
  let selected = -1;
  let scale = 1;
  let drag = null;
  const img = new Image();

  function color(label) { const i = classes.indexOf(label); return colors[(i < 0 ? 0 : i) % colors.length]; }

  function draw() {
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    ctx.drawImage(img, 0, 0, canvas.width, canvas.height);
    boxes.forEach((b, i) => {
      ctx.lineWidth = i === selected ? 3 : 2;
      ctx.strokeStyle = color(b.label);
      ctx.strokeRect(b.x1 * scale, b.y1 * scale, (b.x2 - b.x1) * scale, (b.y2 - b.y1) * scale);
      ctx.fillStyle = color(b.label);
      ctx.font = "13px system-ui, sans-serif";
      const w = ctx.measureText(b.label).width + 6;
      ctx.fillRect(b.x1 * scale, b.y1 * scale - 16, w, 16);
      ctx.fillStyle = "#fff";
      ctx.fillText(b.label, b.x1 * scale + 3, b.y1 * scale - 4);
      if (i === selected && data.editable) {
        corners(b).forEach(([x, y]) => { ctx.fillStyle = "#fff"; ctx.fillRect(x * scale - HANDLE / 2, y * scale - HANDLE / 2, HANDLE, HANDLE); });
      }
    });
    if (drag && drag.kind === "new") {
      ctx.setLineDash([4, 3]); ctx.strokeStyle = color(current);
      ctx.strokeRect(drag.x0 * scale, drag.y0 * scale, (drag.x - drag.x0) * scale, (drag.y - drag.y0) * scale);
      ctx.setLineDash([]);
    }
    renderLists();
  }

  function corners(b) { return [[b.x1, b.y1], [b.x2, b.y1], [b.x1, b.y2], [b.x2, b.y2]]; }

  function renderLists() {
    classList.replaceChildren(...classes.map((c, i) => {
      const li = document.createElement("li");
      if (i < 9) { const k = document.createElement("kbd"); k.textContent = String(i + 1); li.append(k, " "); }
      li.append(c);
      li.dataset.cls = c;
      if (c === current) li.className = "on";
      li.addEventListener("click", () => setClass(c));
      return li;
    }));
    boxList.replaceChildren(...boxes.map((b, i) => {
      const li = document.createElement("li");
      li.textContent = b.label + "  [" + [b.x1, b.y1, b.x2, b.y2].map((v) => Math.round(v)).join(", ") + "]";
      if (i === selected) li.className = "on";
      li.addEventListener("click", () => { selected = i; draw(); });
      return li;
    }));
  }

  function setClass(c) {
    current = c;
    if (selected >= 0 && data.editable) boxes[selected].label = c;
    draw();
  }

  function point(ev) {
    const r = canvas.getBoundingClientRect();
    return { x: Math.max(0, Math.min(img.naturalWidth, (ev.clientX - r.left) / scale)),
             y: Math.max(0, Math.min(img.naturalHeight, (ev.clientY - r.top) / scale)) };
  }

  function hit(p) {
    if (selected >= 0) {
      const k = corners(boxes[selected]).findIndex(([x, y]) => Math.abs(x - p.x) * scale <= HANDLE && Math.abs(y - p.y) * scale <= HANDLE);
      if (k >= 0) return { kind: "resize", index: selected, corner: k };
    }
    for (let i = boxes.length - 1; i >= 0; i--) {
      const b = boxes[i];
      if (p.x >= b.x1 && p.x <= b.x2 && p.y >= b.y1 && p.y <= b.y2) return { kind: "move", index: i };
    }
    return null;
  }

  canvas.addEventListener("mousedown", (ev) => {
    canvas.focus();
    const p = point(ev);
    const h = hit(p);
    if (h) { selected = h.index; }
    if (!data.editable) { draw(); return; }
    if (h) drag = { ...h, x0: p.x, y0: p.y, orig: { ...boxes[h.index] } };
    else { selected = -1; drag = { kind: "new", x0: p.x, y0: p.y, x: p.x, y: p.y }; }
    draw();
  });
  window.addEventListener("mousemove", (ev) => {
    if (!drag) return;
    const p = point(ev);
    if (drag.kind === "new") { drag.x = p.x; drag.y = p.y; }
    else if (drag.kind === "move") {
      const o = drag.orig, dx = p.x - drag.x0, dy = p.y - drag.y0;
      boxes[drag.index] = { ...o, x1: o.x1 + dx, y1: o.y1 + dy, x2: o.x2 + dx, y2: o.y2 + dy };
    } else {
      const b = { ...drag.orig };
      if (drag.corner === 0 || drag.corner === 2) b.x1 = p.x; else b.x2 = p.x;
      if (drag.corner === 0 || drag.corner === 1) b.y1 = p.y; else b.y2 = p.y;
      boxes[drag.index] = b;
    }
    draw();
  });
  window.addEventListener("mouseup", () => {
    if (!drag) return;
    if (drag.kind === "new") {
      const x1 = Math.min(drag.x0, drag.x), x2 = Math.max(drag.x0, drag.x);
      const y1 = Math.min(drag.y0, drag.y), y2 = Math.max(drag.y0, drag.y);
      if (x2 - x1 >= 2 && y2 - y1 >= 2 && current) { boxes.push({ x1, y1, x2, y2, label: current }); selected = boxes.length - 1; }
    } else if (drag.index >= 0) {
      const b = boxes[drag.index];
      boxes[drag.index] = { label: b.label, x1: Math.min(b.x1, b.x2), x2: Math.max(b.x1, b.x2), y1: Math.min(b.y1, b.y2), y2: Math.max(b.y1, b.y2) };
    }
    drag = null;
    draw();
  });
  canvas.addEventListener("keydown", (ev) => {
    if (/^[1-9]$/.test(ev.key) && classes[+ev.key - 1] !== undefined) { setClass(classes[+ev.key - 1]); ev.preventDefault(); }
    else if ((ev.key === "Delete" || ev.key === "Backspace") && selected >= 0 && data.editable) { boxes.splice(selected, 1); selected = -1; draw(); ev.preventDefault(); }
    else if (ev.key === "Tab" && boxes.length) { selected = (selected + 1) % boxes.length; draw(); ev.preventDefault(); }
    else if (ev.key === "Escape") { selected = -1; draw(); }
    else if (ev.key === "Enter" && submit) { send(); ev.preventDefault(); }
  });

  async function send() {
    if (!submit || submit.disabled) return;
    submit.disabled = true;
    status.textContent = "submitting…";
    const body = { boxes: boxes.map((b) => [b.x1, b.y1, b.x2, b.y2, b.label]) };
    try {
      const r = await fetch(window.location.pathname, {
        method: "POST", credentials: "same-origin",
        headers: { "Content-Type": "application/json", "X-CSRF-Token": submit.dataset.csrf },
        body: JSON.stringify(body),
      });
      const answer = await r.json();
      if (!r.ok) { status.textContent = "error: " + (answer.error || r.status); submit.disabled = false; return; }
      status.textContent = "submitted for review";
      window.location.assign(answer.next || data.next);
    } catch (e) { status.textContent = "error: " + e; submit.disabled = false; }
  }
  if (submit) submit.addEventListener("click", send);

  img.onload = () => {
    scale = Math.min(1, 900 / img.naturalWidth, 700 / img.naturalHeight);
    if (img.naturalWidth * scale < 320) scale = 320 / img.naturalWidth;
    canvas.width = Math.round(img.naturalWidth * scale);
    canvas.height = Math.round(img.naturalHeight * scale);
    canvas.dataset.ready = "1";
    draw();
  };
  img.src = data.image;
})();
