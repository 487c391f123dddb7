// The clipkit search page: text search, search by image (drop, paste or pick a file), a viewer,
// likes and dislikes that turn into a recommendation query, and filters. Everything but an
// uploaded image lives in the URL, so that a search can be bookmarked, shared and reloaded:
//   q=TEXT  like=ID|PATH (repeated)  unlike=ID|PATH (repeated)  strategy=average|best-score
//   tag=T (repeated)  prefix=PATH  min=SCORE  f.FIELD=VALUE | f.FIELD=MIN..MAX  k=N  templates=NAME
"use strict";

const $ = (id) => document.getElementById(id);
const form = $("search-form"), input = $("q"), templates = $("templates"), kSelect = $("k");
const grid = $("grid"), statusLine = $("status"), note = $("note"), footer = $("footer");
const queryBox = $("query"), queryImage = $("query-image"), queryLabel = $("query-label");
const fileInput = $("file"), drop = $("drop"), moreButton = $("more");
const filtersBox = $("filters"), filtersToggle = $("filters-toggle");
const feedbackBox = $("feedback"), feedbackChips = $("feedback-chips"), strategySelect = $("strategy");
const viewer = $("viewer");

const DUPLICATE_COSINE = 0.95;  // results at least this similar are shown as one tile
const server = { maxK: 200, fields: [], templates: [] };

let generation = 0;   // ignores answers to superseded requests
let uploadUrl = null, uploadFile = null;
let state = null;     // the search described by the URL (readState)
let shown = [];       // tiles in rank order: {hit, dups: [hit...]}
let hits = [];        // every result received for the current search, in rank order
let nextOffset = 0;   // where the next page of the ranking starts
let exhausted = false;
let submittedEarly = false;  // the form was sent before the page knew the server (start)
let viewerIndex = -1;

// ---- small helpers ----------------------------------------------------------------------------

function setStatus(text, isError) {
  statusLine.textContent = text;
  statusLine.classList.toggle("error", !!isError);
}

function showNote(lines) {
  note.hidden = lines.length === 0;
  note.textContent = lines.join(" ");
}

function baseName(path) {
  const s = String(path);
  const i = s.lastIndexOf("/");
  return i >= 0 ? s.slice(i + 1) : s;
}

function el(tag, props, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (k === "class") e.className = v;
    else if (k === "text") e.textContent = v;
    else if (k.startsWith("data-") || k.startsWith("aria-") || k === "role" || k === "for") e.setAttribute(k, v);
    else e[k] = v;
  }
  e.append(...kids.filter((x) => x !== null && x !== undefined));
  return e;
}

// A search expression ("text:red + 0.5*like:12") goes to `query`, anything else to `text`.
function isExpression(s) {
  return /^\s*[+-]?\s*(\d*\.?\d+\s*\*\s*)?(text|like):/.test(s);
}

// An item reference of the URL as the API takes it: a number for an id, else the string (a path).
function itemRef(v) {
  return /^#?\d{1,15}$/.test(v) ? Number(v.replace("#", "")) : v;
}

function quote(s) {
  return `"${String(s).replace(/\\/g, "\\\\").replace(/"/g, '\\"')}"`;
}

// ---- the URL ----------------------------------------------------------------------------------

function readState() {
  const url = new URLSearchParams(location.search);
  const notes = [];
  const s = {
    q: url.get("q") || "",
    likes: url.getAll("like").filter((x) => x.trim()),
    unlikes: url.getAll("unlike").filter((x) => x.trim()),
    tags: url.getAll("tag").filter((x) => x.trim()),
    prefix: url.get("prefix") || "",
    min: "",
    fields: {},
    k: 20,
    templates: "",
    strategy: "average",
  };
  if (url.has("k")) {
    const raw = url.get("k");
    const k = /^\s*\d+\s*$/.test(raw) ? parseInt(raw, 10) : NaN;
    if (!(k > 0)) notes.push(`k=${raw} is not a number of results; showing 20.`);
    else if (k > server.maxK) { notes.push(`k=${k} is more than this server gives (${server.maxK}); showing ${server.maxK}.`); s.k = server.maxK; }
    else s.k = k;
  }
  if (url.has("templates") && url.get("templates") && url.get("templates") !== "none") {
    const t = url.get("templates");
    if (server.templates.includes(t)) s.templates = t;
    else notes.push(`There is no template set "${t}"${server.templates.length ? ` (there are: ${server.templates.join(", ")})` : ""}; searching without templates.`);
  }
  if (url.has("strategy")) {
    const st = url.get("strategy");
    if (st === "average" || st === "best-score") s.strategy = st;
    else notes.push(`There is no strategy "${st}" (average or best-score); using average.`);
  }
  if (url.has("min") && url.get("min") !== "") {
    const m = Number(url.get("min"));
    if (Number.isFinite(m)) s.min = String(m);
    else notes.push(`min=${url.get("min")} is not a score; no minimum is applied.`);
  }
  for (const [key, value] of url) {
    if (!key.startsWith("f.") || value === "") continue;
    const name = key.slice(2);
    const field = server.fields.find((f) => f.name === name);
    if (!field) { notes.push(`The index has no metadata field "${name}"; that filter is left out.`); continue; }
    s.fields[name] = value;
  }
  s.notes = notes;
  return s;
}

function stateUrl(s) {
  const p = new URLSearchParams();
  if (s.q) p.set("q", s.q);
  for (const x of s.likes) p.append("like", x);
  for (const x of s.unlikes) p.append("unlike", x);
  if ((s.likes.length || s.unlikes.length) && s.strategy !== "average") p.set("strategy", s.strategy);
  for (const t of s.tags) p.append("tag", t);
  if (s.prefix) p.set("prefix", s.prefix);
  if (s.min !== "") p.set("min", s.min);
  for (const [f, v] of Object.entries(s.fields)) p.set("f." + f, v);
  if (s.k !== 20) p.set("k", String(s.k));
  if (s.templates) p.set("templates", s.templates);
  const q = p.toString();
  return location.pathname + (q ? "?" + q : "");
}

// Shows the search `s` (pushing its URL); an uploaded image stays the query when `keepUpload`
// (a filter changed), else it is dropped.
function go(s, replace, keepUpload) {
  if (!keepUpload) uploadFile = null;
  const url = stateUrl(s);
  if (replace) history.replaceState(null, "", url); else history.pushState(null, "", url);
  runFromUrl();
  if (!replace) window.scrollTo(0, 0);
}

// The where expression of the metadata filters.
function whereOf(s) {
  const parts = [];
  for (const [name, value] of Object.entries(s.fields)) {
    const field = server.fields.find((f) => f.name === name);
    if (!field) continue;
    if (field.type === "number") {
      const m = /^(-?[\d.eE+-]*)\.\.(-?[\d.eE+-]*)$/.exec(value);
      if (m) {
        if (m[1] !== "" && Number.isFinite(Number(m[1]))) parts.push(`${name} >= ${Number(m[1])}`);
        if (m[2] !== "" && Number.isFinite(Number(m[2]))) parts.push(`${name} <= ${Number(m[2])}`);
      } else if (Number.isFinite(Number(value))) {
        parts.push(`${name} = ${Number(value)}`);
      }
    } else if (field.type === "bool" || field.type === "boolean") {
      parts.push(`${name} = ${value === "true" ? "true" : "false"}`);
    } else {
      parts.push(`${name} = ${quote(value)}`);
    }
  }
  return parts.join(" and ");
}

// ---- requests ---------------------------------------------------------------------------------

// The request the state asks for: k results after the first `offset` of the ranking;
// {url, options} for fetch.
function requestFor(s, k, offset) {
  const where = whereOf(s);
  if (uploadFile) {
    const p = new URLSearchParams();
    p.set("k", String(k));
    if (offset) p.set("offset", String(offset));
    for (const t of s.tags) p.append("tag", t);
    if (s.prefix) p.set("path_prefix", s.prefix);
    if (s.min !== "") p.set("min_score", s.min);
    if (where) p.set("where", where);
    return { url: `api/search/image?${p}`, options: { method: "POST", headers: { "Content-Type": uploadFile.type || "application/octet-stream" }, body: uploadFile } };
  }
  if (s.likes.length || s.unlikes.length) {
    const body = { positive: s.likes.map(itemRef), negative: s.unlikes.map(itemRef), strategy: s.strategy, k };
    if (offset) body.offset = offset;
    if (s.q) body.positive.push("text:" + s.q);
    if (s.tags.length) body.tags = s.tags;
    if (s.prefix) body.path_prefix = s.prefix;
    if (where) body.where = where;
    if (s.min !== "") body.min_score = Number(s.min);
    return { url: "api/recommend", options: { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) } };
  }
  const p = new URLSearchParams();
  if (s.q) p.set(isExpression(s.q) ? "query" : "text", s.q);
  for (const x of s.likes) p.append("like", x);
  p.set("k", String(k));
  if (offset) p.set("offset", String(offset));
  if (s.templates && s.q && !isExpression(s.q)) p.set("templates", s.templates);
  for (const t of s.tags) p.append("tag", t);
  if (s.prefix) p.set("path_prefix", s.prefix);
  if (s.min !== "") p.set("min_score", s.min);
  if (where) p.set("where", where);
  return { url: `api/search?${p}` };
}

async function fetchJson(url, options) {
  const res = await fetch(url, options);
  let body = null;
  try { body = await res.json(); } catch (e) { body = null; }
  if (!res.ok) throw new Error(body && body.error ? body.error : `HTTP ${res.status}`);
  return body;
}

// Runs the current search: its first page, or with `more` the next page (the results after those
// already received), added to the tiles shown. Near-duplicates are grouped over all of them: the
// server groups the tiles' first results followed by the new ones, which gives the groups of the
// whole list (an id joins the first group whose first result is close enough).
async function search(more) {
  const mine = ++generation;
  document.body.dataset.busy = "1";
  setStatus(more ? "Loading more…" : "Searching…");
  const k = state.k, offset = more ? nextOffset : 0;
  const r = requestFor(state, k, offset);
  let body, groups = null, fresh;
  try {
    body = await fetchJson(r.url, r.options);
    const known = new Set(more ? hits.map((h) => h.id) : []);
    fresh = (body.results || []).filter((h) => !known.has(h.id));
    const ids = [...(more ? shown.map((e) => e.hit.id) : []), ...fresh.map((h) => h.id)];
    if (ids.length > 1 && fresh.length) {
      try {
        const g = await fetchJson("api/near-duplicates", { method: "POST", headers: { "Content-Type": "application/json" },
          body: JSON.stringify({ ids, threshold: DUPLICATE_COSINE }) });
        groups = g.groups;
      } catch (e) { groups = null; }  // shown uncollapsed
    }
  } catch (e) {
    if (mine !== generation) return;
    document.body.dataset.busy = "";
    if (!more) { hits = []; shown = []; renderGrid(); }
    setStatus(e.message.startsWith("HTTP") || e instanceof TypeError ? `The server did not answer (${e.message}).` : e.message, true);
    return;
  }
  if (mine !== generation) return;
  const received = (body.results || []).length;
  if (!more) { hits = []; shown = []; }
  hits.push(...fresh);
  nextOffset = offset + received;
  // The last page came, or the next one would start past the offsets the server accepts.
  exhausted = received < k || nextOffset > server.maxK;
  const byId = new Map(fresh.map((h) => [h.id, h]));
  const entries = new Map(shown.map((e) => [e.hit.id, e]));
  if (groups) {
    for (const g of groups) {
      const lead = entries.get(g[0]);
      const members = g.filter((id) => byId.has(id)).map((id) => byId.get(id));
      if (lead) lead.dups.push(...members);
      else shown.push({ hit: members[0], dups: members.slice(1) });
    }
  } else {
    for (const h of fresh) shown.push({ hit: h, dups: [] });
  }
  const firstNew = more ? grid.querySelectorAll(".tile").length : 0;
  renderGrid();
  collectTags(fresh);
  const n = hits.length;
  const collapsed = n - shown.length;
  setStatus(n === 0 ? "No results." : `${n} result${n === 1 ? "" : "s"}${collapsed ? ` (${collapsed} near-duplicate${collapsed === 1 ? "" : "s"} grouped)` : ""} in ${Math.round(body.took_ms)} ms`);
  moreButton.hidden = exhausted || n === 0;
  document.body.dataset.busy = "";
  if (more) {
    const t = grid.querySelector(`.tile[data-rank="${firstNew}"] .tile-open`);
    if (t && document.activeElement === moreButton) t.focus();
  }
}

// ---- results ----------------------------------------------------------------------------------

function columnCount() {
  const w = grid.clientWidth || window.innerWidth;
  return Math.max(2, Math.floor((w + 12) / (200 + 12)));
}

function tileFor(entry, rank) {
  const h = entry.hit;
  const name = baseName(h.path);
  const img = el("img", { loading: "lazy", alt: name, src: `api/items/${h.id}/thumb`, width: h.width || 1, height: h.height || 1 });
  img.addEventListener("error", () => { img.replaceWith(el("div", { class: "missing", text: "image unavailable" })); }, { once: true });
  const open = el("button", { type: "button", class: "tile-open", "aria-label": `${name}, score ${h.score.toFixed(3)}: open` }, img);
  if (entry.dups.length) open.append(el("span", { class: "dups", text: `+${entry.dups.length} similar` }));
  open.addEventListener("click", () => openViewer(rank));
  const actions = el("span", { class: "tile-actions" });
  const likeB = el("button", { type: "button", class: "like", title: "More like this", "aria-label": `More like ${name}`, text: "+" });
  likeB.addEventListener("click", () => addFeedback("likes", String(h.id)));
  actions.append(likeB);
  const dislikeB = el("button", { type: "button", class: "dislike", title: "Less like this", "aria-label": `Less like ${name}`, text: "−" });
  dislikeB.addEventListener("click", () => addFeedback("unlikes", String(h.id)));
  actions.append(dislikeB);
  const cap = el("figcaption", {},
    el("span", { class: "score", text: h.score.toFixed(3) }),
    el("span", { class: "name", text: name, title: h.path }),
    actions);
  const fig = el("figure", { class: "tile", "data-id": h.id, "data-rank": rank }, open, cap);
  if (entry.dups.length) fig.dataset.dups = entry.dups.map((d) => d.id).join(",");
  fig.style.setProperty("--ratio", `${(h.width || 1) / (h.height || 1)}`);
  return fig;
}

function renderGrid() {
  const n = columnCount();
  const cols = [], heights = [];
  for (let i = 0; i < n; i++) { cols.push(el("div", { class: "col" })); heights.push(0); }
  shown.forEach((entry, rank) => {
    // Masonry: each tile goes to the shortest column, so rank order reads left to right, top down.
    let c = 0;
    for (let i = 1; i < n; i++) if (heights[i] < heights[c] - 1) c = i;
    const h = entry.hit;
    heights[c] += (h.height || 1) / (h.width || 1) + 0.25;
    const t = tileFor(entry, rank);
    t.dataset.col = c;
    cols[c].append(t);
  });
  grid.style.setProperty("--cols", n);
  scrolledSinceRender = false;
  grid.replaceChildren(...cols);
}

let lastCols = 0;
window.addEventListener("resize", () => {
  const n = columnCount();
  if (n !== lastCols && shown.length) { lastCols = n; renderGrid(); }
});

// Arrow keys move between tiles (left/right in rank order, up/down within a column).
grid.addEventListener("keydown", (e) => {
  const tile = e.target.closest && e.target.closest(".tile");
  if (!tile || !e.target.classList.contains("tile-open")) return;
  const rank = Number(tile.dataset.rank);
  let next = null;
  if (e.key === "ArrowRight") next = grid.querySelector(`.tile[data-rank="${rank + 1}"]`);
  else if (e.key === "ArrowLeft") next = grid.querySelector(`.tile[data-rank="${rank - 1}"]`);
  else if (e.key === "ArrowDown") next = tile.nextElementSibling;
  else if (e.key === "ArrowUp") next = tile.previousElementSibling;
  else return;
  e.preventDefault();
  if (next) next.querySelector(".tile-open").focus();
  else if (e.key === "ArrowRight" || e.key === "ArrowDown") { if (!moreButton.hidden) moreButton.focus(); }
});

function loadMore() {
  if (exhausted || document.body.dataset.busy === "1" || !state) return;
  search(true);
}
moreButton.addEventListener("click", loadMore);
// Infinite scroll: the next page loads when the button comes into view.
// Only after the reader has scrolled, so that a first page that fits the window stays one page.
let scrolledSinceRender = false;
window.addEventListener("scroll", () => { scrolledSinceRender = true; }, { passive: true });
if ("IntersectionObserver" in window) {
  new IntersectionObserver((entries) => {
    if (entries.some((x) => x.isIntersecting) && scrolledSinceRender && !moreButton.hidden && shown.length) loadMore();
  }, { rootMargin: "400px" }).observe(moreButton);
}

// ---- viewer -----------------------------------------------------------------------------------

function openViewer(rank) {
  const entry = shown[rank];
  if (!entry) return;
  viewerIndex = rank;
  const h = entry.hit;
  const img = $("viewer-image");
  img.src = `api/items/${h.id}/thumb`;  // shown at once, replaced by the original once loaded
  const full = new Image();
  full.onload = () => { if (viewerIndex === rank) img.src = full.src; };
  full.src = `api/items/${h.id}/image`;
  img.alt = baseName(h.path);
  $("viewer-title").textContent = baseName(h.path);
  const meta = $("viewer-meta");
  meta.replaceChildren();
  const row = (k, v) => { if (v !== "" && v !== undefined && v !== null) meta.append(el("dt", { text: k }), el("dd", {}, v)); };
  row("Score", h.score.toFixed(4));
  row(h.paths && h.paths.length > 1 ? "Paths" : "Path", (h.paths && h.paths.length ? h.paths : [h.path]).join("\n"));
  if (h.width) row("Size", `${h.width} × ${h.height} px, ${(h.size / 1024).toFixed(1)} KiB`);
  if (h.tags && h.tags.length) {
    const box = el("span", { class: "tag-list" });
    for (const t of h.tags) {
      const b = el("button", { type: "button", class: "chip", text: t, title: `Only results tagged ${t}` });
      b.addEventListener("click", () => { viewer.close(); if (!state.tags.includes(t)) go({ ...state, tags: [...state.tags, t] }); });
      box.append(b);
    }
    row("Tags", box);
  }
  if (h.meta && typeof h.meta === "object") {
    for (const [k, v] of Object.entries(h.meta)) row(k, typeof v === "object" ? JSON.stringify(v) : String(v));
  }
  if (h.added) row("Added", new Date(h.added * 1000).toLocaleString());  // seconds since 1970
  if (entry.dups.length) {
    const list = el("span", { class: "dup-list" });
    entry.dups.forEach((d) => {
      const a = el("a", { href: `api/items/${d.id}/image`, target: "_blank", rel: "noopener", text: `${baseName(d.path)} (${d.score.toFixed(3)})` });
      list.append(a, " ");
    });
    row("Near-duplicates", list);
  }
  $("viewer-original").href = `api/items/${h.id}/image`;
  $("viewer-prev").disabled = rank === 0;
  $("viewer-next").disabled = rank >= shown.length - 1;
  if (!viewer.open) viewer.showModal();
}

$("viewer-close").addEventListener("click", () => viewer.close());
viewer.addEventListener("click", (e) => { if (e.target === viewer) viewer.close(); });
viewer.addEventListener("close", () => {
  const t = grid.querySelector(`.tile[data-rank="${viewerIndex}"] .tile-open`);
  if (t) t.focus();
});
viewer.addEventListener("keydown", (e) => {
  if (e.key === "ArrowRight" && viewerIndex < shown.length - 1) openViewer(viewerIndex + 1);
  else if (e.key === "ArrowLeft" && viewerIndex > 0) openViewer(viewerIndex - 1);
});
$("viewer-prev").addEventListener("click", () => openViewer(viewerIndex - 1));
$("viewer-next").addEventListener("click", () => openViewer(viewerIndex + 1));
$("viewer-like").addEventListener("click", () => { const h = shown[viewerIndex].hit; viewer.close(); addFeedback("likes", String(h.id)); });
$("viewer-dislike").addEventListener("click", () => { const h = shown[viewerIndex].hit; viewer.close(); addFeedback("unlikes", String(h.id)); });

// ---- feedback (likes and dislikes) ------------------------------------------------------------

function addFeedback(kind, ref) {
  const s = { ...state, likes: state.likes.filter((x) => x !== ref), unlikes: state.unlikes.filter((x) => x !== ref) };
  s[kind] = [...s[kind], ref];
  go(s);
}

function renderFeedback() {
  const s = state;
  feedbackChips.replaceChildren();
  const chip = (kind, ref) => {
    const liked = kind === "likes";
    const id = typeof itemRef(ref) === "number" ? itemRef(ref) : null;
    const label = el("span", { class: "chip-label", text: id !== null ? `#${id}` : baseName(ref) });
    if (id !== null) {
      const known = shown.find((e) => e.hit.id === id);
      if (known) label.textContent = baseName(known.hit.path);
      else fetchJson(`api/items/${id}`).then((it) => { if (it.paths && it.paths.length) label.textContent = baseName(it.paths[0]); }).catch(() => {});
    }
    const remove = el("button", { type: "button", class: "chip-remove", "aria-label": `Remove ${liked ? "liked" : "disliked"} example ${ref}`, text: "×" });
    remove.addEventListener("click", () => go({ ...s, [kind]: s[kind].filter((x) => x !== ref) }));
    return el("span", { class: `chip ${liked ? "chip-like" : "chip-dislike"}`, "data-kind": liked ? "like" : "dislike", "data-ref": ref, title: ref },
      id !== null ? el("img", { src: `api/items/${id}/thumb`, alt: "" }) : null,
      el("span", { class: "chip-sign", text: liked ? "+" : "−", "aria-label": liked ? "like" : "dislike" }), label, remove);
  };
  for (const r of s.likes) feedbackChips.append(chip("likes", r));
  for (const r of s.unlikes) feedbackChips.append(chip("unlikes", r));
  feedbackBox.hidden = !(s.likes.length || s.unlikes.length);
  strategySelect.value = s.strategy;
  const clear = new URL(location.href);
  clear.searchParams.delete("like"); clear.searchParams.delete("unlike"); clear.searchParams.delete("strategy");
  $("feedback-clear").href = clear.pathname + clear.search;
}
strategySelect.addEventListener("change", () => go({ ...state, strategy: strategySelect.value }));

// ---- filters ----------------------------------------------------------------------------------

const knownTags = new Set();
function collectTags(results) {
  for (const h of results) for (const t of h.tags || []) knownTags.add(t);
  renderTags();
}

function renderTags() {
  const box = $("tag-chips");
  box.replaceChildren();
  const all = new Set([...knownTags, ...(state ? state.tags : [])]);
  for (const t of [...all].sort()) {
    const on = state && state.tags.includes(t);
    const b = el("button", { type: "button", class: "chip tag-chip", "aria-pressed": on ? "true" : "false", "data-tag": t, text: t });
    b.addEventListener("click", () => {
      const tags = on ? state.tags.filter((x) => x !== t) : [...state.tags, t];
      go({ ...state, ...filterInputs(), tags }, false, true);
    });
    box.append(b);
  }
  $("tag-box").hidden = all.size === 0;
}

function renderFieldFilters() {
  const box = $("field-filters");
  box.replaceChildren();
  for (const f of server.fields) {
    const value = (state && state.fields[f.name]) || "";
    if (f.type === "number") {
      const [lo, hi] = value.includes("..") ? value.split("..") : [value, value];
      const min = el("input", { type: "number", step: "any", value: lo || "", placeholder: f.min !== undefined ? String(f.min) : "min", "data-field": f.name, "data-end": "min", "aria-label": `${f.name} from` });
      const max = el("input", { type: "number", step: "any", value: hi || "", placeholder: f.max !== undefined ? String(f.max) : "max", "data-field": f.name, "data-end": "max", "aria-label": `${f.name} to` });
      box.append(el("fieldset", { class: "range" }, el("legend", { text: f.name }), min, el("span", { text: "to" }), max));
    } else if (Array.isArray(f.values) && f.values.length) {
      const sel = el("select", { "data-field": f.name, "aria-label": f.name }, el("option", { value: "", text: "any" }));
      for (const v of f.values) {
        const val = typeof v === "object" && v !== null ? v.value : v;
        const count = typeof v === "object" && v !== null && v.count !== undefined ? ` (${v.count})` : "";
        sel.append(el("option", { value: String(val), text: `${val}${count}` }));
      }
      sel.value = value;
      if (value && sel.value !== value) { sel.append(el("option", { value, text: value })); sel.value = value; }
      box.append(el("label", {}, f.name + " ", sel));
    } else {
      box.append(el("label", {}, f.name + " ", el("input", { type: "text", value, placeholder: "any", "data-field": f.name, spellcheck: false })));
    }
  }
  box.hidden = box.childElementCount === 0;
}

// The filter values typed in the panel.
function filterInputs() {
  const fields = {};
  for (const e of $("field-filters").querySelectorAll("[data-field]")) {
    const name = e.dataset.field;
    if (e.tagName === "SELECT" || (e.tagName === "INPUT" && e.type === "text")) { if (e.value.trim()) fields[name] = e.value.trim(); }
  }
  for (const f of server.fields) {
    if (f.type !== "number") continue;
    const lo = $("field-filters").querySelector(`input[data-field="${CSS.escape(f.name)}"][data-end="min"]`);
    const hi = $("field-filters").querySelector(`input[data-field="${CSS.escape(f.name)}"][data-end="max"]`);
    if (lo && hi && (lo.value !== "" || hi.value !== "")) fields[f.name] = `${lo.value}..${hi.value}`;
  }
  return { prefix: $("path-prefix").value.trim(), min: $("min-score").value.trim(), fields };
}

function applyFilters() {
  const s = { ...state, ...filterInputs(), k: Number(kSelect.value), templates: templates.value };
  go(s, false, true);
}
$("filters-apply").addEventListener("click", applyFilters);
filtersBox.addEventListener("keydown", (e) => { if (e.key === "Enter" && e.target.tagName === "INPUT") { e.preventDefault(); applyFilters(); } });
filtersBox.addEventListener("change", (e) => { if (e.target.tagName === "SELECT") applyFilters(); });
$("filters-reset").addEventListener("click", () => go({ ...state, tags: [], prefix: "", min: "", fields: {} }, false, true));
filtersToggle.addEventListener("click", () => {
  filtersBox.hidden = !filtersBox.hidden;
  filtersToggle.setAttribute("aria-expanded", String(!filtersBox.hidden));
});

function activeFilterCount(s) {
  return s.tags.length + (s.prefix ? 1 : 0) + (s.min !== "" ? 1 : 0) + Object.keys(s.fields).length;
}

// ---- running the URL's search -----------------------------------------------------------------

function showQuery(label, imageSrc) {
  if (!label) { queryBox.hidden = true; return; }
  queryBox.hidden = false;
  queryLabel.textContent = label;
  if (imageSrc) queryImage.src = imageSrc; else queryImage.removeAttribute("src");
}

function runFromUrl() {
  state = readState();
  showNote(state.notes);
  if (state.notes.length) history.replaceState(null, "", stateUrl(state));  // the URL says what is shown
  input.value = state.q;
  if (![...kSelect.options].some((o) => Number(o.value) === state.k)) {
    kSelect.append(el("option", { value: String(state.k), text: String(state.k) }));
  }
  kSelect.value = String(state.k);
  templates.value = state.templates;
  $("path-prefix").value = state.prefix;
  $("min-score").value = state.min;
  const nf = activeFilterCount(state);
  filtersToggle.textContent = nf ? `Filters (${nf})` : "Filters";
  renderTags();
  renderFieldFilters();
  renderFeedback();
  if (uploadFile) {
    showQuery(`Images like ${uploadFile.name || "the pasted image"}`, uploadUrl);
  } else {
    showQuery(null);
  }
  if (uploadFile || state.q.trim() || state.likes.length || state.unlikes.length) {
    search(false);
  } else {
    generation++;
    hits = [];
    shown = [];
    renderGrid();
    moreButton.hidden = true;
    document.body.dataset.busy = "";
    setStatus("Type a description, drop or paste an image, or pick one with Image….");
  }
}

function searchImage(file) {
  if (!file) return;
  if (!file.type.startsWith("image/") && file.type !== "") {
    setStatus(`${file.name} is not an image.`, true);
    return;
  }
  if (uploadUrl) URL.revokeObjectURL(uploadUrl);
  uploadUrl = URL.createObjectURL(file);
  if (!state) { uploadFile = file; return; }  // still starting: start() runs it
  // An image cannot live in the URL: the URL keeps only the filters.
  history.pushState(null, "", stateUrl({ ...state, q: "", likes: [], unlikes: [] }));
  uploadFile = file;
  runFromUrl();
}

form.addEventListener("submit", (e) => {
  e.preventDefault();
  if (!state) { submittedEarly = true; return; }  // start() sends it once the page is ready
  const q = input.value.trim();
  if (q || state.likes.length || state.unlikes.length) go({ ...state, q, ...filterInputs(), k: Number(kSelect.value), templates: templates.value });
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
window.addEventListener("paste", (e) => {
  const items = e.clipboardData ? Array.from(e.clipboardData.items) : [];
  const img = items.find((i) => i.kind === "file" && i.type.startsWith("image/"));
  if (!img) return;
  e.preventDefault();
  searchImage(img.getAsFile());
});
window.addEventListener("popstate", () => { uploadFile = null; runFromUrl(); });

// ---- start ------------------------------------------------------------------------------------

// The answer of GET /api/fields as a list of {name, type: "number"|"string"|"bool", min, max,
// values: [{value, count}]}; it may come as a list or as an object keyed by field name, and the
// distinct values as a list or as an object of counts.
function normaliseFields(j) {
  let list = j && (Array.isArray(j) ? j : j.fields);
  if (list && !Array.isArray(list) && typeof list === "object") list = Object.entries(list).map(([name, f]) => ({ name, ...f }));
  if (!Array.isArray(list)) return [];
  const out = [];
  for (const f of list) {
    if (!f || typeof f.name !== "string" || !/^[A-Za-z_][\w.]*$/.test(f.name)) continue;
    let type = String(f.type || "string").toLowerCase();
    if (["int", "integer", "float", "double", "number", "real"].includes(type)) type = "number";
    else if (["bool", "boolean"].includes(type)) type = "bool";
    if (!["number", "bool", "string", "list of strings"].includes(type)) continue;  // no control for lists of other things, objects
    let values = f.values || [];
    if (!Array.isArray(values) && typeof values === "object") values = Object.entries(values).map(([value, count]) => ({ value, count }));
    values = values.map((v) => (v !== null && typeof v === "object" ? v : { value: v }));
    if (type === "bool" && !values.length) values = [{ value: "true" }, { value: "false" }];
    out.push({ name: f.name, type, min: f.min, max: f.max, values });
  }
  return out;
}

// What this server offers: its limits and template sets (/api/info) and its metadata fields
// (/api/fields). Then the URL's search runs; text typed (and sent) while these were loading is
// kept (and searched for).
async function start() {
  const fields = fetch("api/fields").then((r) => (r.ok ? r.json() : null)).then((j) => {
    server.fields = normaliseFields(j);
    // every tag of the index (the most frequent ones) is a chip from the start
    for (const t of (j && Array.isArray(j.tags) ? j.tags : [])) if (t && typeof t.tag === "string") knownTags.add(t.tag);
    renderTags();
  }).catch(() => {});
  try {
    const info = await fetchJson("api/info");
    server.maxK = (info.limits && info.limits.max_k) || 200;
    server.templates = (info.templates || []).filter((n) => n !== "none");
    for (const name of server.templates) templates.append(el("option", { value: name, text: name }));
    for (const o of [...kSelect.options]) if (Number(o.value) > server.maxK) o.remove();
    const ix = info.index;
    footer.textContent = `${ix.items} images · ${ix.structure} · dim ${ix.dim} · model ${baseName(info.model.path)} · clipkit ${info.version}`;
  } catch (e) { /* the search itself will say what is wrong */ }
  await fields;
  const typed = input.value.trim();
  runFromUrl();
  if (typed && !state.q) {
    input.value = typed;
    if (submittedEarly) form.requestSubmit();
  }
}
start();
