// The clipkit search page: text search, "more like this", search by image (drop or pick a file).
// State lives in the URL (?q=..., ?like=ID, &templates=..., &k=...) so that a search can be
// bookmarked, shared and reloaded; an uploaded image cannot, so it is kept out of the URL.
"use strict";

const $ = (id) => document.getElementById(id);
const form = $("search-form"), input = $("q"), templates = $("templates"), kSelect = $("k");
const grid = $("grid"), statusLine = $("status"), footer = $("footer");
const queryBox = $("query"), queryImage = $("query-image"), queryLabel = $("query-label");
const fileInput = $("file"), drop = $("drop");

let generation = 0;  // ignores answers to superseded requests
let uploadUrl = null;

function setStatus(text, isError) {
  statusLine.textContent = text;
  statusLine.classList.toggle("error", !!isError);
}

function baseName(path) {
  const i = path.lastIndexOf("/");
  return i >= 0 ? path.slice(i + 1) : path;
}

// A search expression ("text:red + 0.5*like:12") goes to `query`, anything else to `text`.
function isExpression(s) {
  return /^\s*[+-]?\s*(\d*\.?\d+\s*\*\s*)?(text|like):/.test(s);
}

function showQuery(label, imageSrc) {
  if (!label) { queryBox.hidden = true; return; }
  queryBox.hidden = false;
  queryLabel.textContent = label;
  if (imageSrc) queryImage.src = imageSrc; else queryImage.removeAttribute("src");
}

function render(results, tookMs) {
  grid.replaceChildren();
  for (const r of results) {
    const fig = document.createElement("figure");
    fig.className = "card tile";
    fig.dataset.id = r.id;
    fig.tabIndex = 0;
    fig.title = `${r.score.toFixed(4)}  ${r.path}\nclick: more like this`;
    const img = document.createElement("img");
    img.loading = "lazy";
    img.alt = baseName(r.path);
    img.src = `api/items/${r.id}/image`;
    const cap = document.createElement("figcaption");
    const score = document.createElement("span");
    score.className = "score";
    score.textContent = r.score.toFixed(3);
    const name = document.createElement("span");
    name.className = "name";
    name.textContent = baseName(r.path);
    cap.append(score, name);
    fig.append(img, cap);
    const open = () => navigate({ like: String(r.id) });
    fig.addEventListener("click", open);
    fig.addEventListener("keydown", (e) => { if (e.key === "Enter") open(); });
    grid.append(fig);
  }
  const n = results.length;
  setStatus(n === 0 ? "No results." : `${n} result${n === 1 ? "" : "s"} in ${Math.round(tookMs)} ms`);
}

async function call(url, options) {
  const mine = ++generation;
  document.body.dataset.busy = "1";
  setStatus("Searching…");
  let res, body;
  try {
    res = await fetch(url, options);
    body = await res.json();
  } catch (e) {
    if (mine === generation) setStatus(`The server did not answer (${e.message}).`, true);
    return;
  }
  if (mine !== generation) return;
  document.body.dataset.busy = "";
  if (!res.ok) {
    grid.replaceChildren();
    setStatus(body && body.error ? body.error : `HTTP ${res.status}`, true);
    return;
  }
  render(body.results, body.took_ms);
}

function commonParams() {
  const p = new URLSearchParams();
  p.set("k", kSelect.value);
  if (templates.value) p.set("templates", templates.value);
  return p;
}

// Runs the search described by the page URL.
function runFromUrl() {
  const url = new URLSearchParams(location.search);
  if (url.has("k")) kSelect.value = url.get("k");
  if (url.has("templates")) templates.value = url.get("templates");
  const q = url.get("q") || "";
  const like = url.get("like");
  input.value = q;
  if (like) {
    showQuery(`More like item ${like}`, `api/items/${encodeURIComponent(like)}/image`);
    fetch(`api/items/${encodeURIComponent(like)}`).then((r) => r.ok ? r.json() : null).then((item) => {
      if (item && item.paths && item.paths.length) queryLabel.textContent = `More like ${item.paths[0]}`;
    }).catch(() => {});
    const p = commonParams();
    p.delete("templates");
    call(`api/similar/${encodeURIComponent(like)}?${p}`);
  } else if (q.trim()) {
    showQuery(null);
    const p = commonParams();
    p.set(isExpression(q) ? "query" : "text", q);
    call(`api/search?${p}`);
  } else {
    showQuery(null);
    grid.replaceChildren();
    setStatus("Type a description, click a result for more like it, or drop an image.");
  }
}

function navigate(params) {
  const p = new URLSearchParams();
  if (params.q) p.set("q", params.q);
  if (params.like) p.set("like", params.like);
  if (kSelect.value !== "20") p.set("k", kSelect.value);
  if (templates.value && !params.like) p.set("templates", templates.value);
  const url = `${location.pathname}${p.toString() ? "?" + p : ""}`;
  history.pushState(null, "", url);
  runFromUrl();
  window.scrollTo(0, 0);
}

function searchImage(file) {
  if (!file) return;
  if (!file.type.startsWith("image/") && file.type !== "") {
    setStatus(`${file.name} is not an image.`, true);
    return;
  }
  if (uploadUrl) URL.revokeObjectURL(uploadUrl);
  uploadUrl = URL.createObjectURL(file);
  history.pushState(null, "", location.pathname);
  input.value = "";
  showQuery(`Images like ${file.name}`, uploadUrl);
  call(`api/search/image?${commonParams()}`, {
    method: "POST",
    headers: { "Content-Type": file.type || "application/octet-stream" },
    body: file,
  });
}

form.addEventListener("submit", (e) => {
  e.preventDefault();
  const q = input.value.trim();
  if (q) navigate({ q });
});
templates.addEventListener("change", () => { if (input.value.trim()) navigate({ q: input.value.trim() }); });
kSelect.addEventListener("change", () => {
  const url = new URLSearchParams(location.search);
  if (url.get("like")) navigate({ like: url.get("like") });
  else if (input.value.trim()) navigate({ q: input.value.trim() });
});
$("pick").addEventListener("click", () => fileInput.click());
fileInput.addEventListener("change", () => { searchImage(fileInput.files[0]); fileInput.value = ""; });

let dragDepth = 0;
window.addEventListener("dragenter", (e) => {
  if (!e.dataTransfer || !Array.from(e.dataTransfer.types).includes("Files")) return;
  dragDepth++;
  drop.hidden = false;
});
window.addEventListener("dragleave", () => { if (--dragDepth <= 0) { dragDepth = 0; drop.hidden = true; } });
window.addEventListener("dragover", (e) => e.preventDefault());
window.addEventListener("drop", (e) => {
  e.preventDefault();
  dragDepth = 0;
  drop.hidden = true;
  const f = e.dataTransfer && e.dataTransfer.files[0];
  if (f) searchImage(f);
});
window.addEventListener("popstate", runFromUrl);

fetch("api/info").then((r) => r.json()).then((info) => {
  for (const name of info.templates || []) {
    if (name === "none") continue;
    const o = document.createElement("option");
    o.value = o.textContent = name;
    templates.append(o);
  }
  const ix = info.index;
  footer.textContent = `${ix.items} images · ${ix.structure} · dim ${ix.dim} · model ${baseName(info.model.path)} · clipkit ${info.version}`;
}).catch(() => {}).finally(runFromUrl);  // after the template list exists, so ?templates= applies
