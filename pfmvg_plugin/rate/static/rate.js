// pfmvg rate: one item page. Every answer is sent to /api/rate as it is given; the server commits it before replying.
(function () {
  "use strict";
  const dataNode = document.getElementById("item-data");
  if (!dataNode) return;
  const data = JSON.parse(dataNode.textContent);
  const state = {rating: data.rating, comment: document.getElementById("comment").value, box: data.box};
  const statusNode = document.getElementById("status");
  const progressNode = document.getElementById("progress");
  const img = document.getElementById("image");
  const overlay = document.getElementById("overlay");
  let zoom = 1;
  let saving = Promise.resolve(true);
  let dirty = false;  // something changed since the last save

  function say(text) { statusNode.textContent = text; }

  function save() {
    dirty = false;
    const body = JSON.stringify({pos: data.pos, rating: state.rating, comment: state.comment, box: state.box});
    say("saving…");
    saving = saving.then(() => fetch("/api/rate", {method: "POST", headers: {"Content-Type": "application/json"},
                                                    body: body, credentials: "same-origin"}))
      .then((response) => response.json().then((reply) => {
        if (!response.ok) { say("NOT saved: " + (reply.error || response.status)); return false; }
        if (reply.box) { state.box = reply.box; drawBoxes(); }
        progressNode.textContent = reply.progress.rated + " / " + reply.progress.total + " rated";
        say("saved");
        return true;
      }))
      .catch((err) => { say("NOT saved (" + err + "): check the server and press the key again"); return false; });
    return saving;
  }

  function go(pos) { window.location.href = pos > data.last ? "/done" : "/item/" + pos; }

  function next() {
    (dirty ? save() : saving).then((ok) => { if (ok) go(data.pos + 1); });
  }

  function rate(value) {
    state.rating = value;
    const input = document.getElementById("rating-" + value);
    if (input) input.checked = true;
    save();
  }

  document.querySelectorAll("input[name=rating]").forEach((input) => {
    input.addEventListener("change", () => rate(Number(input.value)));
  });
  document.getElementById("next").addEventListener("click", next);
  const comment = document.getElementById("comment");
  let timer = null;
  comment.addEventListener("input", () => {
    state.comment = comment.value;
    dirty = true;
    clearTimeout(timer);
    timer = setTimeout(save, 600);
  });
  comment.addEventListener("blur", () => {
    if (timer !== null) { clearTimeout(timer); timer = null; save(); }
  });

  document.addEventListener("keydown", (event) => {
    const target = event.target;
    if (target && (target.tagName === "TEXTAREA" || (target.tagName === "INPUT" && target.type !== "radio"))) return;
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    if (/^[1-5]$/.test(event.key)) { rate(Number(event.key)); event.preventDefault(); }
    else if (event.key === "n" || event.key === "Enter") { next(); event.preventDefault(); }
    else if (event.key === "p" && data.pos > 0) { go(data.pos - 1); }
    else if (img && (event.key === "+" || event.key === "=")) { setZoom(zoom * 1.25); }
    else if (img && event.key === "-") { setZoom(zoom / 1.25); }
    else if (img && event.key === "0") { setZoom(1); }
  });

  if (!img) return;

  // ---- image: zoom, window/level, boxes ------------------------------------------------------------------------
  const frame = document.getElementById("frame");
  function size() { return [data.width || img.naturalWidth, data.height || img.naturalHeight]; }
  function setZoom(value) {
    zoom = Math.min(16, Math.max(0.25, value));
    const fit = Math.min(frame.clientWidth / img.naturalWidth, frame.clientHeight / img.naturalHeight);
    img.style.width = (img.naturalWidth * fit * zoom) + "px";
    img.style.height = (img.naturalHeight * fit * zoom) + "px";
  }
  img.addEventListener("load", () => { setZoom(1); drawBoxes(); });
  if (img.complete && img.naturalWidth) { setZoom(1); }
  document.getElementById("zoom-in").addEventListener("click", () => setZoom(zoom * 1.25));
  document.getElementById("zoom-out").addEventListener("click", () => setZoom(zoom / 1.25));
  document.getElementById("zoom-fit").addEventListener("click", () => setZoom(1));
  frame.addEventListener("wheel", (event) => {
    if (!event.ctrlKey) return;
    event.preventDefault();
    setZoom(event.deltaY < 0 ? zoom * 1.1 : zoom / 1.1);
  }, {passive: false});

  const windowInput = document.getElementById("window");
  const levelInput = document.getElementById("level");
  function windowLevel() {
    // output = (value - level) / window + 1/2, clipped to [0, 1]: the radiologist's window/level on the grey values
    const w = Number(windowInput.value), l = Number(levelInput.value);
    ["wl-r", "wl-g", "wl-b"].forEach((id) => {
      const f = document.getElementById(id);
      f.setAttribute("slope", String(1 / w));
      f.setAttribute("intercept", String(0.5 - l / w));
    });
    img.style.filter = (w === 1 && l === 0.5) ? "" : "url(#wl)";
  }
  windowInput.addEventListener("input", windowLevel);
  levelInput.addEventListener("input", windowLevel);
  document.getElementById("wl-reset").addEventListener("click", () => {
    windowInput.value = "1"; levelInput.value = "0.5"; windowLevel();
  });

  function boxNode(box, cls) {
    const [w, h] = size();
    const node = document.createElement("div");
    node.className = "box " + cls;
    node.style.left = (100 * box[0] / w) + "%";
    node.style.top = (100 * box[1] / h) + "%";
    node.style.width = (100 * (box[2] - box[0]) / w) + "%";
    node.style.height = (100 * (box[3] - box[1]) / h) + "%";
    return node;
  }
  let dragBox = null;
  function drawBoxes() {
    overlay.replaceChildren();
    (data.pred_boxes || []).forEach((b) => overlay.appendChild(boxNode(b, "pred")));
    (data.gt_boxes || []).forEach((b) => overlay.appendChild(boxNode(b, "gt")));
    const mine = dragBox || state.box;
    if (mine) { const node = boxNode(mine, "mine"); node.id = "my-box"; overlay.appendChild(node); }
  }

  if (data.kind !== "grounding") return;
  // A corrected box, drawn with the mouse, kept in pixels of the original image (the samples' width x height).
  function toImage(event) {
    const rect = img.getBoundingClientRect();
    const [w, h] = size();
    const x = Math.min(Math.max(event.clientX - rect.left, 0), rect.width) * w / rect.width;
    const y = Math.min(Math.max(event.clientY - rect.top, 0), rect.height) * h / rect.height;
    return [x, y];
  }
  let start = null;
  const stage = document.getElementById("stage");
  stage.addEventListener("mousedown", (event) => {
    if (event.button !== 0) return;
    event.preventDefault();
    start = toImage(event);
  });
  window.addEventListener("mousemove", (event) => {
    if (!start) return;
    const [x, y] = toImage(event);
    dragBox = [Math.min(start[0], x), Math.min(start[1], y), Math.max(start[0], x), Math.max(start[1], y)];
    drawBoxes();
  });
  window.addEventListener("mouseup", (event) => {
    if (!start) return;
    const [x, y] = toImage(event);
    const box = [Math.min(start[0], x), Math.min(start[1], y), Math.max(start[0], x), Math.max(start[1], y)];
    start = null;
    dragBox = null;
    if (box[2] - box[0] < 1 || box[3] - box[1] < 1) { drawBoxes(); return; }  // a click, not a box
    state.box = box;
    drawBoxes();
    save();
  });
  document.getElementById("clear-box").addEventListener("click", () => { state.box = null; drawBoxes(); save(); });
  drawBoxes();
})();
