/* flowrelay charts: draws chart specs (made in Python) with uPlot, or as plain HTML bars.
 *
 * Three kinds of spec:
 *   time  - over the per-second rows: each series names a row key (`key`, optionally `per_second`: a count
 *           over the row's interval), a map of keys (`map`: one series per key seen, e.g. error reasons or
 *           hops, `field` inside each), or the run's target rate (`target`). Redrawn as rows come.
 *   xy    - points given in the spec (the HdrHistogram percentile plot: `x_axis: "percentile"`).
 *   bars  - categories with one value per series, side by side or `stacked`, drawn as HTML.
 * A `toggle_log` chart has linear/log buttons; every uPlot legend entry toggles its series.
 */
"use strict";
(function () {
  const FR = (window.FR = window.FR || {});

  // ---- numbers -------------------------------------------------------------------------------------
  const isNum = v => typeof v === "number" && isFinite(v);
  function fmtMs(v) {
    if (!isNum(v)) return "–";
    if (v >= 1000) return v.toLocaleString("en-US", {maximumFractionDigits: 0});
    if (v >= 100) return v.toFixed(1);
    if (v >= 1) return v.toFixed(2);
    return v.toFixed(3);
  }
  function fmtRate(v) { return isNum(v) ? v.toLocaleString("en-US", {minimumFractionDigits: 1, maximumFractionDigits: 1}) : "–"; }
  function fmtCount(v) { return isNum(v) ? Math.round(v).toLocaleString("en-US") : "–"; }
  function fmtFraction(v) {
    if (!isNum(v)) return "–";
    if (v === 0) return "0 %";
    return (v * 100).toPrecision(3).replace(/\.?0+$/, "") + " %";
  }
  function fmtAuto(v) {
    if (!isNum(v)) return "–";
    const a = Math.abs(v);
    if (a >= 1000) return Math.round(v).toLocaleString("en-US");
    if (a >= 10) return v.toFixed(1);
    if (a >= 1) return v.toFixed(2);
    return v.toPrecision(3);
  }
  FR.fmt = {ms: fmtMs, rate: fmtRate, count: fmtCount, fraction: fmtFraction, auto: fmtAuto};

  // ---- rows ----------------------------------------------------------------------------------------
  const COUNT_KEYS = ["sent", "answered", "ok", "errors", "dropped"];

  /* The rows as charts show them: a short last interval (the drain after sending stops, a few milliseconds) is
     folded into the one before, so a handful of late answers does not read as a spike of hundreds per second.
     Counts, reasons and the max add up; the earlier interval's percentiles stay. */
  FR.displayRows = function (rows) {
    if (rows.length < 2) return rows;
    const lengths = rows.map(r => r.interval_s || 0).sort((a, b) => a - b);
    const typical = lengths[Math.floor(lengths.length / 2)];
    const last = rows[rows.length - 1], before = rows[rows.length - 2];
    if (!(typical > 0 && (last.interval_s || 0) < typical / 2)) return rows;
    const merged = Object.assign({}, before);
    for (const k of COUNT_KEYS) merged[k] = (before[k] || 0) + (last[k] || 0);
    const reasons = Object.assign({}, before.error_reasons || {});
    for (const [k, v] of Object.entries(last.error_reasons || {})) reasons[k] = (reasons[k] || 0) + v;
    merged.error_reasons = reasons;
    merged.t = last.t;
    merged.inflight = last.inflight;
    merged.interval_s = (before.interval_s || 0) + (last.interval_s || 0);
    if (merged.interval_s > 0) {
      merged.sent_rps = Math.round(merged.sent / merged.interval_s * 1000) / 1000;
      merged.ok_rps = Math.round(merged.ok / merged.interval_s * 1000) / 1000;
    }
    const maxes = [before.max_ms, last.max_ms].filter(isNum);
    merged.max_ms = maxes.length ? Math.max(...maxes) : null;
    return rows.slice(0, -2).concat([merged]);
  };

  /* The target rate at time t from breakpoints {points: [[t, rate], ...], after: rate|null}: linear between
     points; past the last, `after` (null: the last point's rate holds). */
  FR.targetAt = function (target, t) {
    if (!target || !target.points || !target.points.length) return null;
    const p = target.points;
    if (t < p[0][0]) return 0;
    for (let i = 1; i < p.length; i++) {
      if (t <= p[i][0]) {
        const [t0, r0] = p[i - 1], [t1, r1] = p[i];
        return t1 > t0 ? r0 + (r1 - r0) * (t - t0) / (t1 - t0) : r1;
      }
    }
    return target.after === null || target.after === undefined ? p[p.length - 1][1] : target.after;
  };

  function valueOf(row, s, name) {
    let v;
    if (s.map) {
      const m = row[s.map] || {};
      v = m[name];
      if (s.field) v = v ? v[s.field] : null;
      else if (v === undefined) v = 0;
    } else {
      v = row[s.key];
    }
    if (!isNum(v)) return null;
    if (s.per_second) {
      const dt = row.interval_s || 1;
      v = v / dt;
    }
    return Math.round(v * 1000) / 1000;
  }

  // ---- uPlot helpers ---------------------------------------------------------------------------------
  function plotWidth(el) { return Math.max(320, Math.floor(el.getBoundingClientRect().width || el.clientWidth || 900)); }

  function pctLabel(x) {
    if (x <= 1) return "0%";
    const p = 100 * (1 - 1 / x);
    return (p >= 99.9999 ? p.toFixed(6) : p.toFixed(4)).replace(/\.?0+$/, "") + "%";
  }
  const PCT_TICKS = [1, 2, 10, 100, 1e3, 1e4, 1e5, 1e6, 1e7];

  function shadeWarmup(warmupS) {
    return u => {
      if (!(warmupS > 0)) return;
      const x0 = u.valToPos(u.scales.x.min, "x", true), x1 = u.valToPos(Math.min(warmupS, u.scales.x.max), "x", true);
      if (!(x1 > x0)) return;
      const ctx = u.ctx, top = u.bbox.top, h = u.bbox.height;
      ctx.save();
      ctx.fillStyle = "rgba(136,136,136,0.14)";
      ctx.fillRect(x0, top, x1 - x0, h);
      ctx.fillStyle = "#666";
      ctx.font = `${Math.round(11 * devicePixelRatio)}px system-ui, sans-serif`;
      ctx.fillText("warm-up", x0 + 4 * devicePixelRatio, top + 13 * devicePixelRatio);
      ctx.restore();
    };
  }

  function seriesOpts(s, bars, stacked) {
    const o = {label: s.label, stroke: s.color, width: s.width || (bars ? 1 : 2), show: s.show !== false,
               spanGaps: true, points: {show: false}, value: (u, v) => fmtAuto(v)};
    if (s.dash) o.dash = [6, 4];
    if (bars) {
      // A row's t is the end of the interval it counts: its bar spans that interval.
      o.paths = uPlot.paths.bars({size: [0.9, Infinity], align: -1});
      o.fill = s.color;
      if (stacked) o.value = (u, v, si, di) => fmtAuto(u._raw ? u._raw[si][di] : v);
    } else if (s.step) {
      o.paths = uPlot.paths.stepped({align: 1});
    }
    if (s.markers) o.points = {show: true, size: 5};
    return o;
  }

  // ---- the chart classes -----------------------------------------------------------------------------
  class Chart {
    constructor(el, spec) {
      this.el = el;
      this.spec = spec;
      this.plotEl = el.querySelector(".plot") || el;
      this.log = spec.scale === "log";
      this.plot = null;
      if (spec.toggle_log) this._logButtons();
    }
    _logButtons() {
      const box = this.el.querySelector(".controls");
      if (!box) return;
      box.textContent = "y axis ";
      for (const mode of ["linear", "log"]) {
        const b = document.createElement("button");
        b.type = "button";
        b.textContent = mode;
        b.dataset.scale = mode;
        b.addEventListener("click", () => { this.log = mode === "log"; this._marks(); this.rebuild(); });
        box.appendChild(b);
      }
      this._marks();
    }
    _marks() {
      for (const b of this.el.querySelectorAll(".controls button"))
        b.classList.toggle("on", (b.dataset.scale === "log") === this.log);
    }
    _empty(text) {
      if (this.plot) { this.plot.destroy(); this.plot = null; }
      this.plotEl.innerHTML = "";
      const d = document.createElement("div");
      d.className = "empty";
      d.textContent = text;
      this.plotEl.appendChild(d);
    }
    _draw(opts, data) {
      const shown = {};
      if (this.plot) {
        this.plot.series.forEach(s => { shown[s.label] = s.show; });
        this.plot.destroy();
      }
      opts.series.forEach(s => { if (s.label in shown) s.show = shown[s.label]; });
      this.plotEl.innerHTML = "";
      this.plot = new uPlot(opts, data, this.plotEl);
      this.drawn = true;
    }
    resize() { if (this.plot) this.plot.setSize({width: plotWidth(this.plotEl), height: this.spec.height || 320}); }
  }

  class TimeChart extends Chart {
    /* rowSets: one list of rows per run; ctx: {target, warmup_s} */
    update(rowSets, ctx) {
      this.rowSets = rowSets;
      this.ctx = ctx || {};
      const spec = this.spec;
      const columns = [];  // {s: the series' spec, ys: its values at xs}
      const sets = rowSets.map(rows => rows || []);
      const xsSet = new Set();
      sets.forEach((rows, i) => { if (spec.series.some(s => (s.rows || 0) === i)) rows.forEach(r => xsSet.add(r.t)); });
      const xs = Array.from(xsSet).sort((a, b) => a - b);
      if (!xs.length) { this._empty("waiting for the first second…"); this.signature = null; return; }
      const at = sets.map(rows => { const m = new Map(); rows.forEach(r => m.set(r.t, r)); return m; });
      let ci = 0;
      for (const s of spec.series) {
        const set = s.rows || 0;
        const rows = sets[set] || [];
        if (s.map) {
          const names = [];
          rows.forEach(r => Object.keys(r[s.map] || {}).forEach(n => { if (!names.includes(n)) names.push(n); }));
          if (s.order) names.sort((a, b) => s.order.indexOf(a) - s.order.indexOf(b));
          names.forEach(name => {
            const palette = s.palette || ["#4c78a8"];
            const color = (s.colors && s.colors[name]) || palette[ci++ % palette.length];
            const label = (s.names && s.names[name]) || name;
            columns.push({s: Object.assign({}, s, {label: (s.prefix || "") + label, color}),
                          ys: xs.map(t => { const r = at[set].get(t); return r ? valueOf(r, s, name) : null; })});
          });
        } else if (s.target) {
          if (!ctx || !ctx.target) continue;
          columns.push({s, ys: xs.map(t => {
            const r = at[0].get(t);
            const mid = r && r.interval_s ? t - r.interval_s / 2 : t;
            return FR.targetAt(ctx.target, mid);
          })});
        } else {
          const ys = xs.map(t => { const r = at[set].get(t); return r ? valueOf(r, s, null) : null; });
          if (s.if_any && !ys.some(v => v)) continue;  // e.g. drops: only when there were some
          if (s.if_present && !ys.some(v => v !== null)) continue;
          columns.push({s, ys});
        }
      }
      if (!columns.length) { this._empty(spec.empty || "nothing to show"); this.signature = null; return; }
      let shown = columns;
      let data = [xs, ...columns.map(c => c.ys.map(v => (this.log && !(v > 0)) ? null : v))];
      let raw = null;
      if (spec.stacked) {
        // Stacked bars: each series is drawn as the running total, the last one first, so that the earlier ones
        // show in front of it; the legend reads each series' own value.
        const acc = xs.map(() => 0);
        const cumulative = columns.map(c => c.ys.map((v, i) => (acc[i] += (v || 0))));
        shown = columns.slice().reverse();
        raw = [xs, ...shown.map(c => c.ys)];
        data = [xs, ...cumulative.reverse()];
      }
      const signature = JSON.stringify([columns.map(c => c.s.label), this.log]);
      if (this.plot && signature === this.signature) {
        this.plot._raw = raw;
        this.plot.setData(data);
        return;
      }
      this.signature = signature;
      const bars = !!spec.bars;
      const opts = {
        width: plotWidth(this.plotEl),
        height: spec.height || 320,
        scales: {x: {time: false, range: (u, lo, hi) => [0, hi > 0 ? hi : 1]},
                 y: this.log ? {distr: 3, log: 10} : {range: (u, lo, hi) => [0, hi > 0 ? hi * 1.1 : 1]}},
        axes: [{label: spec.x, stroke: "#57606a", grid: {stroke: "#eef1f4"}},
               {label: spec.y, stroke: "#57606a", grid: {stroke: "#eef1f4"}, size: 60,
                values: (u, vals) => vals.map(fmtAuto)}],
        series: [{label: "t (s)", value: (u, v) => (v === null || v === undefined) ? "–" : v.toFixed(1)},
                 ...shown.map(c => seriesOpts(c.s, bars, !!spec.stacked))],
        legend: {live: true},
        cursor: {points: {show: !bars}},
        hooks: {drawClear: [shadeWarmup(spec.warmup ? (this.ctx.warmup_s || 0) : 0)]},
      };
      this._draw(opts, data);
      this.plot._raw = raw;
    }
    rebuild() { this.signature = null; if (this.rowSets) this.update(this.rowSets, this.ctx); }
  }

  class XYChart extends Chart {
    draw() {
      const spec = this.spec;
      const xsSet = new Set();
      spec.series.forEach(s => s.points.forEach(p => xsSet.add(p[0])));
      const xs = Array.from(xsSet).sort((a, b) => a - b);
      if (!xs.length) { this._empty(spec.empty || "nothing to show"); return; }
      const cols = spec.series.map(s => {
        const m = new Map();
        s.points.forEach(p => { if (!m.has(p[0]) || p[1] > m.get(p[0])) m.set(p[0], p[1]); });
        return xs.map(x => { const v = m.has(x) ? m.get(x) : null; return (this.log && !(v > 0)) ? null : v; });
      });
      const pct = spec.x_axis === "percentile";
      const maxX = Math.max(...xs);
      const xScale = pct ? {distr: 3, log: 10, range: () => [1, Math.max(1e4, maxX * 1.15)]} : {time: false};
      const xAxis = {label: spec.x, stroke: "#57606a", grid: {stroke: "#eef1f4"}};
      if (pct) {
        xAxis.splits = u => PCT_TICKS.filter(v => v <= u.scales.x.max);
        xAxis.filter = (u, splits) => splits;  // uPlot's log axes would keep only the powers of ten
        xAxis.values = (u, vals) => vals.map(v => (v === null ? "" : pctLabel(v)));
      }
      const opts = {
        width: plotWidth(this.plotEl),
        height: spec.height || 340,
        scales: {x: xScale, y: this.log ? {distr: 3, log: 10} : {range: (u, lo, hi) => [0, hi > 0 ? hi * 1.1 : 1]}},
        axes: [xAxis, {label: spec.y, stroke: "#57606a", grid: {stroke: "#eef1f4"}, size: 60,
                       values: (u, vals) => vals.map(fmtAuto)}],
        series: [{label: pct ? "percentile" : spec.x, value: (u, v) => pct ? (v ? pctLabel(v) : "–") : fmtAuto(v)},
                 ...spec.series.map(s => seriesOpts(s, false, false))],
        legend: {live: true},
      };
      this._draw(opts, [xs, ...cols]);
    }
    rebuild() { this.draw(); }
  }

  class BarChart {
    constructor(el, spec) { this.el = el; this.spec = spec; this.plotEl = el.querySelector(".plot") || el; }
    draw() {
      const spec = this.spec, box = this.plotEl;
      const fmt = spec.unit === "ms" ? fmtMs : spec.unit === "count" ? fmtCount : fmtAuto;
      box.innerHTML = "";
      const root = document.createElement("div");
      root.className = "bars";
      const legend = document.createElement("div");
      legend.className = "legend";
      spec.series.forEach(s => {
        const item = document.createElement("span");
        const sw = document.createElement("i");
        sw.style.background = s.color;
        item.appendChild(sw);
        item.appendChild(document.createTextNode(s.label));
        legend.appendChild(item);
      });
      if (spec.series.length > 1 || spec.stacked) root.appendChild(legend);
      const totals = spec.categories.map((_, ci) => spec.stacked
        ? spec.series.reduce((a, s) => a + (isNum(s.values[ci]) ? s.values[ci] : 0), 0)
        : Math.max(0, ...spec.series.map(s => isNum(s.values[ci]) ? s.values[ci] : 0)));
      const top = (Math.max(...totals, 0) || 1) * 1.12;  // room for the value after the longest bar
      spec.categories.forEach((cat, ci) => {
        const row = document.createElement("div");
        row.className = "row";
        const name = document.createElement("div");
        name.className = "name";
        name.textContent = cat;
        name.title = cat;
        row.appendChild(name);
        const track = document.createElement("div");
        track.className = "track";
        const stacks = spec.stacked ? [spec.series] : spec.series.map(s => [s]);
        stacks.forEach(group => {
          const stack = document.createElement("div");
          stack.className = "stack";
          let used = 0;
          group.forEach(s => {
            const v = s.values[ci];
            if (!isNum(v)) {
              if (!spec.stacked) {
                const none = document.createElement("div");
                none.className = "bar out";
                none.textContent = "–";
                stack.appendChild(none);
              }
              return;
            }
            const bar = document.createElement("div");
            const share = v / top * 100;
            used += share;
            bar.className = "bar";
            bar.style.width = share + "%";
            bar.style.background = s.color;
            bar.dataset.value = String(v);
            bar.title = `${s.label}: ${fmt(v)}${spec.unit === "ms" ? " ms" : ""}`;
            if (share > 7) bar.textContent = fmt(v);
            stack.appendChild(bar);
            if (!spec.stacked && share <= 7) {
              const lbl = document.createElement("div");
              lbl.className = "bar out";
              lbl.textContent = fmt(v);
              stack.appendChild(lbl);
            }
          });
          if (spec.stacked && used > 0 && group.filter(s => isNum(s.values[ci])).length > 1) {
            const lbl = document.createElement("div");
            lbl.className = "bar out";
            lbl.textContent = fmt(totals[ci]);
            stack.appendChild(lbl);
          }
          track.appendChild(stack);
        });
        row.appendChild(track);
        root.appendChild(row);
      });
      const axis = document.createElement("div");
      axis.className = "axis";
      axis.textContent = spec.x;
      root.appendChild(axis);
      box.appendChild(root);
      this.drawn = true;
    }
    resize() {}
    rebuild() { this.draw(); }
  }

  FR.makeChart = function (el, spec) {
    if (spec.kind === "time") return new TimeChart(el, spec);
    if (spec.kind === "xy") return new XYChart(el, spec);
    return new BarChart(el, spec);
  };
})();
