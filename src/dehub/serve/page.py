"""The page at ``/``: a query, the plain and the corrected top-k side by side.

Plain HTML, CSS and JavaScript served by the app (no build step, no external assets).
It uses only the public API: ``GET /info``, ``GET /examples``, ``GET /examples/{i}``
and ``POST /search`` with ``compare`` and ``details``. Items that the correction pushed
out of the top-k are marked *demoted*; those whose plain k-occurrence N_k reaches the
hub threshold of ``/info`` are marked *hub*; items new in the corrected list *promoted*.
Where the index kept no reference queries there is no N_k: the legend says so and how to
get it (``dehub build --keep-reference``) instead of explaining marks that cannot appear;
the "correct" mark is explained only where the index ships benchmark queries.
"""

from __future__ import annotations

__all__ = ["PAGE"]

PAGE = r"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>dehub — hubness-corrected search</title>
<style>
  :root {
    --bg: #f6f7f9; --card: #fff; --ink: #1d2330; --muted: #667085; --line: #e4e7ec;
    --accent: #3b5bdb; --hub: #c92a2a; --hub-bg: #fff0f0; --up: #2b8a3e; --up-bg: #ebfbee;
    --ok: #0b7285;
  }
  * { box-sizing: border-box; }
  body { margin: 0; font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
         background: var(--bg); color: var(--ink); }
  header { background: var(--card); border-bottom: 1px solid var(--line); padding: 14px 28px; }
  header h1 { margin: 0; font-size: 20px; letter-spacing: .2px; }
  header h1 span { color: var(--muted); font-weight: 400; }
  #info { color: var(--muted); font-size: 13px; margin-top: 2px; }
  main { max-width: 1240px; margin: 0 auto; padding: 20px 28px 40px; }
  form { display: flex; gap: 10px; flex-wrap: wrap; align-items: center; background: var(--card);
         border: 1px solid var(--line); border-radius: 10px; padding: 14px; }
  #q { flex: 1 1 420px; font-size: 16px; padding: 9px 12px; border: 1px solid #cfd4dc;
       border-radius: 7px; }
  #q:focus { outline: 2px solid #c5d0fa; border-color: var(--accent); }
  select, button, input[type=number] { font: inherit; padding: 8px 10px; border-radius: 7px;
       border: 1px solid #cfd4dc; background: #fff; }
  #k { width: 70px; }
  button { cursor: pointer; }
  button.primary { background: var(--accent); color: #fff; border-color: var(--accent); font-weight: 600; }
  #examples { max-width: 320px; }
  label.small { color: var(--muted); font-size: 13px; }
  #status { margin: 12px 2px 0; color: var(--muted); min-height: 22px; }
  #status.error { color: var(--hub); }
  #query-shown { margin: 10px 2px 0; font-size: 14px; }
  #query-shown b { font-weight: 600; }
  .cols { display: grid; grid-template-columns: 1fr 1fr; gap: 18px; margin-top: 14px; }
  @media (max-width: 900px) { .cols { grid-template-columns: 1fr; } }
  .col { background: var(--card); border: 1px solid var(--line); border-radius: 10px; padding: 6px 0 8px; }
  .col h2 { font-size: 15px; margin: 6px 16px 8px; display: flex; justify-content: space-between; }
  .col h2 small { color: var(--muted); font-weight: 400; }
  ol { list-style: none; margin: 0; padding: 0; }
  li.item { display: grid; grid-template-columns: 30px 1fr auto auto; gap: 10px; align-items: center;
            padding: 7px 16px; border-top: 1px solid var(--line); }
  li.item .rank { color: var(--muted); font-variant-numeric: tabular-nums; text-align: right; }
  li.item .text { overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
  li.item .score { font-variant-numeric: tabular-nums; color: var(--muted); font-size: 13px; }
  li.item .nk { font-variant-numeric: tabular-nums; font-size: 12px; padding: 1px 7px; border-radius: 10px;
                background: #f1f3f5; color: #495057; min-width: 54px; text-align: center; }
  li.demoted { background: var(--hub-bg); }
  li.demoted .text { color: #862e2e; }
  li.promoted { background: var(--up-bg); }
  .tag { white-space: nowrap; font-size: 11px; font-weight: 600; padding: 1px 6px; border-radius: 4px; margin-left: 6px;
         vertical-align: 1px; }
  .tag.hub { background: var(--hub); color: #fff; }
  .tag.down { color: var(--hub); border: 1px solid #f1aeb5; }
  .tag.up { color: var(--up); border: 1px solid #b2f2bb; }
  .tag.rel { color: var(--ok); border: 1px solid #99e9f2; }
  .legend { color: var(--muted); font-size: 13px; margin-top: 16px; line-height: 1.6; }
  .legend .tag { margin-left: 0; }
  #token-box { display: none; }
  code { background: #f1f3f5; padding: 0 4px; border-radius: 4px; }
</style>
</head>
<body>
<header>
  <h1>dehub <span>— plain vs hubness-corrected retrieval</span></h1>
  <div id="info">loading…</div>
</header>
<main>
  <form id="form" autocomplete="off">
    <input id="q" name="q" type="search" placeholder="Type a query, e.g. a definition: a large body of salt water"
           aria-label="query">
    <label class="small" for="k">top</label>
    <input id="k" type="number" min="1" max="50" value="10" aria-label="k">
    <button class="primary" id="go" type="submit">Search</button>
    <select id="examples" aria-label="benchmark query"><option value="">or pick a benchmark query…</option></select>
    <button id="random" type="button" title="a random benchmark query">Random</button>
    <span id="token-box"><input id="token" type="password" placeholder="bearer token" aria-label="token"></span>
  </form>
  <div id="status"></div>
  <div id="query-shown"></div>
  <div class="cols">
    <section class="col"><h2>Plain <small>cosine similarity</small></h2><ol id="plain"></ol></section>
    <section class="col"><h2>Corrected <small id="method"></small></h2><ol id="corrected"></ol></section>
  </div>
  <div class="legend" id="legend">
    <span id="legend-kocc" style="display:none">
    <b>N<sub>k</sub></b> (k-occurrence): in how many queries' top-<span class="kk">10</span> an item appears
    (<span id="nk-queries">over a query set</span>); a hub has a high N<sub>k</sub> and crowds many result lists.
    <span class="tag hub">hub</span> plain N<sub>k</sub> ≥ <span id="hub-th">?</span> ·</span>
    <span id="legend-no-kocc" style="display:none">This index kept no reference queries, so no
    k-occurrence N<sub>k</sub> (and no <span class="tag hub">hub</span> mark) can be shown: rebuild it with
    <code>dehub build --keep-reference</code> to see which items are hubs. ·</span>
    <span class="tag down">▼ demoted</span> in the plain top-k, not in the corrected one ·
    <span class="tag up">▲ promoted</span> new in the corrected top-k ·
    <span id="legend-rel" style="display:none"><span class="tag rel">✓ correct</span> a right answer of the benchmark query. ·</span>
    API: <code>POST /search</code>, schema at <a href="openapi.json">/openapi.json</a>.
  </div>
</main>
<script>
"use strict";
const $ = (id) => document.getElementById(id);
let INFO = null, EXAMPLES = 0, HUB = Infinity;
function headers() {
  const h = {"Content-Type": "application/json"};
  const t = sessionStorage.getItem("dehub-token");
  if (t) h["Authorization"] = "Bearer " + t;
  return h;
}
async function api(path, body) {
  const opt = body === undefined ? {headers: headers()} : {method: "POST", headers: headers(), body: JSON.stringify(body)};
  const r = await fetch(path, opt);
  const data = await r.json().catch(() => ({error: r.statusText, expected: "", received: ""}));
  if (r.status === 401) { $("token-box").style.display = "inline"; }
  if (!r.ok) throw new Error(data.error + (data.expected ? " (expected " + data.expected + "; received " + data.received + ")" : ""));
  return data;
}
function status(msg, isError) { $("status").textContent = msg; $("status").className = isError ? "error" : ""; }
function fmtParams(p) {
  return Object.entries(p).filter(([k, v]) => v !== null && typeof v !== "object" && k !== "engine")
    .map(([k, v]) => (k === "alpha" ? "α" : k) + "=" + v).join(", ");
}
async function loadInfo() {
  try {
    INFO = await api("info");
  } catch (e) {
    $("info").textContent = e.message;
    status(e.message + ($("token-box").style.display === "inline" ? " · enter the token and press Search" : ""), true);
    return;
  }
  $("token-box").style.display = "none";
  const kocc = INFO.k_occurrence;
  HUB = kocc ? kocc.hub_threshold : Infinity;
  $("info").textContent = INFO.name + " · " + INFO.n_items.toLocaleString() + " items · d=" + INFO.dim +
    " · " + INFO.method.toUpperCase() + " (" + fmtParams(INFO.params) + ") · backend " + INFO.backend +
    " · version " + INFO.version + (INFO.text_encoder ? " · text encoder " + INFO.text_encoder.split("/").pop() : "");
  $("method").textContent = INFO.method.toUpperCase() + " " + fmtParams(INFO.params);
  $("legend-kocc").style.display = kocc ? "inline" : "none";
  $("legend-no-kocc").style.display = kocc ? "none" : "inline";
  $("legend-rel").style.display = INFO.examples > 0 ? "inline" : "none";
  if (kocc) {
    $("hub-th").textContent = kocc.hub_threshold;
    $("nk-queries").textContent = "over " + kocc.queries;
    document.querySelectorAll(".kk").forEach((e) => (e.textContent = kocc.k));
  }
  if (!INFO.text_encoder) { $("q").placeholder = "this index has no text encoder: pick a benchmark query"; }
  EXAMPLES = INFO.examples;
  if (EXAMPLES > 0) {
    const step = Math.max(1, Math.floor(EXAMPLES / 300));
    const page = await api("examples?offset=0&limit=1000");
    const sel = $("examples");
    page.examples.filter((e, i) => i % Math.max(1, Math.floor(step / 3)) === 0).slice(0, 300).forEach((e) => {
      const o = document.createElement("option");
      o.value = e.index; o.textContent = e.text.length > 70 ? e.text.slice(0, 68) + "…" : e.text;
      sel.appendChild(o);
    });
  } else { $("examples").style.display = "none"; $("random").style.display = "none"; }
}
function render(listId, ranking, other, relevant, side) {
  const ol = $(listId); ol.innerHTML = "";
  const inOther = new Set(other.ids);
  ranking.ids.forEach((id, i) => {
    const li = document.createElement("li"); li.className = "item"; li.dataset.id = id;
    const text = (ranking.texts && ranking.texts[i] !== null) ? ranking.texts[i] : "#" + id;
    const nk = ranking.k_occurrence ? ranking.k_occurrence[i] : null;
    const nkPlain = side === "plain" ? nk : (ranking.k_occurrence_plain ? ranking.k_occurrence_plain[i] : null);
    const tags = [];
    if (relevant.has(id)) tags.push('<span class="tag rel">✓ correct</span>');
    if (side === "plain" && !inOther.has(id)) { li.classList.add("demoted"); tags.push('<span class="tag down">▼ demoted</span>'); }
    if (side === "corrected" && !inOther.has(id)) { li.classList.add("promoted"); tags.push('<span class="tag up">▲ promoted</span>'); }
    if (nkPlain !== null && nkPlain >= HUB) { li.classList.add("is-hub"); tags.push('<span class="tag hub">hub</span>'); }
    li.innerHTML = '<span class="rank">' + (i + 1) + '</span><span class="text"></span>' +
      '<span class="score">' + ranking.scores[i].toFixed(3) + '</span>' +
      (nk === null ? '' : '<span class="nk" title="k-occurrence N_k under this ranking">N<sub>k</sub> ' + nk + '</span>');
    const t = li.querySelector(".text"); t.title = text;
    const url = ranking.urls ? ranking.urls[i] : null;
    if (url && /^https?:\/\//i.test(url)) {  // the item's url (metadata): a link, never script
      const a = document.createElement("a"); a.href = url; a.target = "_blank"; a.rel = "noopener noreferrer";
      a.textContent = text; t.appendChild(a);
    } else { t.textContent = text; }
    t.insertAdjacentHTML("beforeend", tags.join(""));
    ol.appendChild(li);
  });
}
async function run(body, shown, relevant, relevantTexts) {
  const t0 = performance.now();
  status(body.text ? "searching… (the first text query loads the MiniLM encoder)" : "searching…");
  try {
    const k = Math.max(1, Math.min(50, parseInt($("k").value || "10", 10)));
    const res = await api("search", Object.assign(body, {k: k, compare: true, details: true}));
    const r = res.results[0];
    render("plain", r.plain, r, relevant, "plain");
    render("corrected", r, r.plain, relevant, "corrected");
    const dem = r.plain.ids.filter((id) => !new Set(r.ids).has(id)).length;
    status(dem + " of " + r.ids.length + " plain results demoted by the correction · " +
      Math.round(performance.now() - t0) + " ms · index version " + res.version);
    $("query-shown").innerHTML = "";
    const b = document.createElement("b"); b.textContent = "Query: ";
    $("query-shown").append(b, document.createTextNode(shown));
    if (relevant.size) {
      const names = relevantTexts || [...relevant].map((id) => "#" + id);
      $("query-shown").append(document.createTextNode("  ·  correct: " + names.join(", ")));
    }
  } catch (e) { status(e.message, true); }
}
async function runExample(i) {
  try {
    const ex = await api("examples/" + i);
    $("q").value = "";
    await run({vectors: [ex.vector]}, ex.text, new Set(ex.relevant), ex.relevant_texts);
  } catch (e) { status(e.message, true); }
}
$("form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const q = $("q").value.trim();
  const tok = $("token").value.trim();
  if (tok) { sessionStorage.setItem("dehub-token", tok); if (!INFO) await loadInfo(); }
  if (q) { $("examples").value = ""; run({text: [q]}, q, new Set()); }
  else if ($("examples").value !== "") runExample($("examples").value);
  else status("type a query or pick a benchmark query", true);
});
$("examples").addEventListener("change", () => { if ($("examples").value !== "") runExample($("examples").value); });
$("random").addEventListener("click", () => { if (EXAMPLES) runExample(Math.floor(Math.random() * EXAMPLES)); });
// Links: /#q=some+text runs a text query, /#example=12 a benchmark query.
loadInfo().then(() => {
  const h = new URLSearchParams(location.hash.slice(1));
  if (h.get("k")) $("k").value = h.get("k");
  if (h.get("q")) { $("q").value = h.get("q"); run({text: [h.get("q")]}, h.get("q"), new Set()); }
  else if (h.get("example") && EXAMPLES) runExample(parseInt(h.get("example"), 10));
});
</script>
</body>
</html>
"""
