/* flowrelay page: one script for the load run's live dashboard and report, and the relay's dashboard.
 *
 * Reads the page's data (script#flowrelay-data), draws every chart spec in it over the rows it carries, and, on
 * a live page, follows the server-sent events at `events` (with the page's own query string, which carries a
 * relay's ?token=): `hello` starts over (a new stream replays the history), each unnamed message is a row,
 * `replace` amends the last row, `thresholds` and `workers` are live states, `summary` brings the final sections
 * and charts: from then on the page is what the run's report.html shows.
 */
"use strict";
(function () {
  const FR = window.FR;
  const data = JSON.parse(document.getElementById("flowrelay-data").textContent);
  const rowSets = data.rows && data.rows.length ? data.rows : [[]];
  const charts = {};
  let ctx = data.ctx || {};
  let ended = !data.live;
  let source = null;
  let pending = false;

  const slot = name => document.querySelector(`[data-slot="${name}"]`);
  const esc = s => String(s).replace(/[&<>"']/g, c => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c]));

  function addChart(spec) {
    const el = document.getElementById(spec.id);
    if (!el) return;
    el.hidden = false;
    const chart = FR.makeChart(el, spec);
    charts[spec.id] = chart;
    if (spec.kind === "time") chart.update(shownRows(), ctx);
    else chart.draw();
  }

  function shownRows() { return data.fold ? rowSets.map(FR.displayRows) : rowSets; }

  function redraw() {
    pending = false;
    const rows = shownRows();
    for (const chart of Object.values(charts)) if (chart.spec.kind === "time") chart.update(rows, ctx);
    showTiles();
  }
  function later() { if (!pending) { pending = true; setTimeout(redraw, 50); } }

  // ---- live tiles: the last second ---------------------------------------------------------------------
  function showTiles() {
    const box = slot("now-tiles");
    if (!box || !data.tiles) return;
    const rows = rowSets[0];
    const last = rows.length ? rows[rows.length - 1] : null;
    if (!box.children.length) {
      for (const tile of data.tiles) {
        box.insertAdjacentHTML("beforeend", `<div class="tile" data-key="${esc(tile.key)}"><div class="k">${esc(tile.label)}</div>`
          + `<div class="v${tile.fmt === "text" ? " text" : ""}"><span class="n">–</span><span class="u">${esc(tile.unit || "")}</span></div></div>`);
      }
    }
    for (const tile of data.tiles) {
      const n = box.querySelector(`[data-key="${tile.key}"] .n`);
      let v = last ? last[tile.key] : null;
      if (tile.per_second && typeof v === "number") v = v / (last.interval_s || 1);
      n.dataset.value = JSON.stringify(v === undefined ? null : v);
      n.dataset.t = last ? String(last.t) : "";
      n.textContent = tile.fmt === "text" ? (v === null || v === undefined ? "–" : String(v)) : (FR.fmt[tile.fmt] || FR.fmt.auto)(v);
    }
    const clock = slot("now-t");
    if (clock) clock.textContent = last ? `second ${FR.fmt.auto(last.t)}` : "waiting for the first second";
  }

  // ---- live states -----------------------------------------------------------------------------------
  const STATE_TEXT = {holding: "✔ holding", failing: "✘ failing now", waiting: "… no figure yet", "warm-up": "warm-up"};
  function showThresholds(list) {
    const box = slot("thresholds");
    if (!box || ended) return;
    if (!list.length) { box.innerHTML = '<p class="note">No thresholds were set for this run.</p>'; return; }
    const rows = list.map(t => `<tr data-expr="${esc(t.expr)}"><td class="${esc(t.state)}">${esc(STATE_TEXT[t.state] || t.state)}</td>`
      + `<td class="l"><code>${esc(t.expr)}</code></td><td>${esc(t.value === null || t.value === undefined ? "–" : FR.fmt.auto(t.value))}</td>`
      + `<td>${esc(t.failing_seconds)} of ${esc(t.seconds)}</td><td class="l">${esc(t.scope || "")}</td></tr>`).join("");
    box.innerHTML = '<table><thead><tr><th class="l">now</th><th class="l">threshold</th><th>value</th>'
      + '<th>seconds failing</th><th class="l">judged on</th></tr></thead><tbody>' + rows + "</tbody></table>"
      + '<p class="note">Live states judge each second as it closes (counts: the run so far); the verdict that sets '
      + "the exit code comes from the whole run's figures at the end.</p>";
  }
  function showWorkers(list) {
    const box = slot("workers");
    if (!box) return;
    if (!list.length) { box.innerHTML = ""; return; }
    box.innerHTML = '<h3>Workers</h3><table><thead><tr><th class="l">worker</th><th class="l">health</th><th>sent/s</th>'
      + "<th>ok/s</th><th>errors/s</th><th>last seen (s ago)</th></tr></thead><tbody>"
      + list.map(w => `<tr><td class="l">${esc(w.worker)}</td><td class="l ${w.healthy ? "pass" : "fail"}">${esc(w.health || (w.healthy ? "ok" : "missing"))}</td>`
        + `<td>${FR.fmt.rate(w.sent_rps)}</td><td>${FR.fmt.rate(w.ok_rps)}</td><td>${FR.fmt.rate(w.errors_rps)}</td>`
        + `<td>${FR.fmt.auto(w.age_s)}</td></tr>`).join("") + "</tbody></table>";
  }

  // ---- the end of a run: the report's sections ---------------------------------------------------------
  function showFinal(final) {
    ended = true;
    for (const [name, html] of Object.entries(final.html || {})) {
      const box = slot(name);
      if (box) box.innerHTML = html;
    }
    for (const el of document.querySelectorAll("[data-live-only]")) el.hidden = true;
    for (const el of document.querySelectorAll("[data-final-only]")) el.hidden = false;
    for (const spec of final.charts || []) addChart(spec);
    later();
    status("");
  }

  function status(text, lost) {
    const el = slot("status");
    if (el) { el.textContent = text; el.classList.toggle("lost", !!lost); }
  }

  // ---- the event stream ----------------------------------------------------------------------------------
  function follow() {
    const url = data.events + window.location.search;
    source = new EventSource(url);
    source.onopen = () => status("live: one row a second");
    source.onerror = () => { if (!ended) status("connection lost: trying again", true); };
    source.addEventListener("hello", e => {
      const hello = JSON.parse(e.data);
      if (hello.ctx) ctx = hello.ctx;
      for (const rows of rowSets) rows.length = 0;
      later();
    });
    source.onmessage = e => { rowSets[0].push(JSON.parse(e.data)); later(); };
    source.addEventListener("replace", e => {
      const rows = rowSets[0];
      const row = JSON.parse(e.data);
      if (rows.length) rows[rows.length - 1] = row; else rows.push(row);
      later();
    });
    source.addEventListener("thresholds", e => showThresholds(JSON.parse(e.data)));
    source.addEventListener("workers", e => showWorkers(JSON.parse(e.data)));
    source.addEventListener("summary", e => {
      showFinal(JSON.parse(e.data));
      source.close();  // nothing more will come; the page stays as the report would show it
    });
  }

  for (const spec of data.charts || []) addChart(spec);
  showTiles();
  if (data.live) follow();
  let width = window.innerWidth;
  window.addEventListener("resize", () => {
    if (window.innerWidth === width) return;
    width = window.innerWidth;
    for (const chart of Object.values(charts)) chart.resize();
  });
  window.flowrelay = {rows: () => rowSets, charts, ended: () => ended, data};
})();
