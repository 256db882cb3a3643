/* trainmedic interactive report: figure data (JSON, never HTML) -> uPlot charts, canvas heatmaps, live polling.
   Every user string reaches the page through textContent or canvas fillText, never innerHTML. */
(function () {
  "use strict";
  var dataEl = document.getElementById("tm-data");
  if (!dataEl || typeof uPlot === "undefined") return;
  var DATA;
  try { DATA = JSON.parse(dataEl.textContent); } catch (e) { return; }
  document.documentElement.classList.add("tm-js");
  var SEV = { error: "#D55E00", warning: "#E69F00", info: "#009E73" };
  var VIRIDIS = ["#440154", "#482475", "#414487", "#355f8d", "#2a788e", "#21918c", "#22a884",
    "#44bf70", "#7ad151", "#bddf26", "#fde725"];
  var charts = {};  // id -> {spec, state, root, plot}

  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }
  function fmt(v) {
    if (v === null || v === undefined || !isFinite(v)) return "–";
    var a = Math.abs(v);
    if (a !== 0 && (a < 1e-3 || a >= 1e5)) return v.toExponential(3);
    return String(+v.toPrecision(5));
  }
  function ema(ys, w) {  // TensorBoard's debiased exponential moving average; gaps stay gaps
    if (!(w > 0)) return ys;
    var out = new Array(ys.length), last = 0, n = 0;
    for (var i = 0; i < ys.length; i++) {
      var y = ys[i];
      if (y === null || !isFinite(y)) { out[i] = null; continue; }
      last = last * w + (1 - w) * y; n++;
      out[i] = last / (1 - Math.pow(w, n));
    }
    return out;
  }
  function hexToRgb(h) {
    var n = parseInt(h.slice(1), 16);
    return [(n >> 16) & 255, (n >> 8) & 255, n & 255];
  }
  var VIR = VIRIDIS.map(hexToRgb);
  function viridis(t) {
    if (!(t >= 0)) t = 0; if (t > 1) t = 1;
    var p = t * (VIR.length - 1), i = Math.min(VIR.length - 2, Math.floor(p)), f = p - i;
    var a = VIR[i], b = VIR[i + 1];
    return "rgb(" + Math.round(a[0] + f * (b[0] - a[0])) + "," + Math.round(a[1] + f * (b[1] - a[1])) + "," +
      Math.round(a[2] + f * (b[2] - a[2])) + ")";
  }
  function widthOf(node) { return Math.max(320, Math.min(900, (node.clientWidth || 640) - 16)); }

  // ---- line charts ----------------------------------------------------------------------------------------
  function align(series, useEpoch, smooth) {
    var xs = [], seen = {};
    series.forEach(function (s) {
      var x = useEpoch && s.xe ? s.xe : s.x;
      for (var i = 0; i < x.length; i++) if (x[i] !== null && !seen[x[i]]) { seen[x[i]] = 1; xs.push(x[i]); }
    });
    xs.sort(function (a, b) { return a - b; });
    var pos = {};
    xs.forEach(function (x, i) { pos[x] = i; });
    var cols = [xs];
    series.forEach(function (s) {
      var x = useEpoch && s.xe ? s.xe : s.x, col = new Array(xs.length).fill(null);
      var ys = s.smooth ? ema(s.y, smooth) : s.y;
      for (var i = 0; i < x.length; i++) if (x[i] !== null) col[pos[x[i]]] = ys[i];
      cols.push(col);
    });
    return cols;
  }

  function drawOverlays(u, spec, st) {
    var ctx = u.ctx, top = u.bbox.top, h = u.bbox.height, left = u.bbox.left, w = u.bbox.width;
    ctx.save();
    if (spec.band) {  // the healthy band, shaded
      var y0 = u.valToPos(spec.band[1], "y", true), y1 = u.valToPos(spec.band[0], "y", true);
      y0 = Math.max(top, Math.min(top + h, y0)); y1 = Math.max(top, Math.min(top + h, y1));
      ctx.fillStyle = "rgba(0,158,115,0.10)";
      ctx.fillRect(left, y0, w, y1 - y0);
    }
    if (spec.hline) {
      var yy = u.valToPos(spec.hline[0], "y", true);
      if (yy >= top && yy <= top + h) {
        ctx.strokeStyle = "#555"; ctx.setLineDash([2, 3]); ctx.lineWidth = 1;
        ctx.beginPath(); ctx.moveTo(left, yy); ctx.lineTo(left + w, yy); ctx.stroke();
      }
    }
    (spec.markers || []).forEach(function (m) {
      var x = st.epoch ? m.xe : m.x;
      if (x === null || x === undefined) return;
      var px = u.valToPos(x, "x", true);
      if (px < left || px > left + w) return;
      ctx.strokeStyle = SEV[m.severity] || "#555"; ctx.setLineDash([5, 4]); ctx.lineWidth = 1.5 * devicePixelRatio;
      ctx.beginPath(); ctx.moveTo(px, top); ctx.lineTo(px, top + h); ctx.stroke();
      ctx.setLineDash([]); ctx.fillStyle = ctx.strokeStyle;
      ctx.font = "bold " + Math.round(11 * devicePixelRatio) + "px system-ui,sans-serif";
      ctx.fillText(String(m.label).slice(0, 30), px + 4, top + 12 * devicePixelRatio);
    });
    ctx.restore();
  }

  function buildLines(c) {
    var spec = c.spec, st = c.state;
    if (c.plot) { c.plot.destroy(); c.plot = null; }
    var logOn = st.log && spec.logok;
    var cols = align(spec.series, st.epoch, st.smooth);
    if (logOn) cols = cols.map(function (col, i) {
      return i === 0 ? col : col.map(function (v) { return v !== null && v > 0 ? v : null; });
    });
    var series = [{ label: st.epoch ? (spec.xlabel_epoch || "epoch") : spec.xlabel, value: function (u, v) { return fmt(v); } }];
    spec.series.forEach(function (s) {
      series.push({
        label: s.label, stroke: s.color, width: s.width || 1.4, dash: s.dash || undefined,
        spanGaps: true, points: { show: !!s.points, size: 5, fill: s.color },
        value: function (u, v) { return fmt(v); }
      });
    });
    var opts = {
      width: widthOf(c.root), height: spec.height || 270,
      scales: { x: { time: false }, y: { distr: logOn ? 3 : 1 } },
      series: series,
      axes: [{ label: st.epoch ? (spec.xlabel_epoch || "epoch") : spec.xlabel, size: 40 },
        { label: spec.ylabel + (logOn ? " (log)" : ""), size: 64,
          values: function (u, vals) { return vals.map(fmt); } }],
      cursor: spec.sync ? { drag: { x: true, y: false, setScale: true }, sync: { key: spec.sync } }
        : { drag: { x: true, y: false, setScale: true } },
      legend: { live: true },
      hooks: {
        draw: [function (u) { drawOverlays(u, spec, st); }],
        setCursor: [function (u) { markerTip(c, u); }],
        setScale: [function (u, key) {
          if (key === "x") c.root.setAttribute("data-zoom", fmt(u.scales.x.min) + "…" + fmt(u.scales.x.max));
        }],
        setSelect: [function (u) {  // a drag: remember the range, so a live redraw keeps the user's zoom
          if (u.select.width > 2) st.zoom = [u.posToVal(u.select.left, "x"), u.posToVal(u.select.left + u.select.width, "x")];
        }]
      }
    };
    c.plot = new uPlot(opts, cols, c.plotEl);
    c.plot.over.addEventListener("dblclick", function () { st.zoom = null; });
    if (st.zoom) c.plot.setScale("x", { min: st.zoom[0], max: st.zoom[1] });
  }

  function markerTip(c, u) {
    var tip = c.tip, spec = c.spec, left = u.cursor.left;
    if (left === null || left === undefined || left < 0 || !(spec.markers || []).length) { tip.style.display = "none"; return; }
    var best = null, bestD = 7;
    spec.markers.forEach(function (m) {
      var x = c.state.epoch ? m.xe : m.x;
      if (x === null || x === undefined) return;
      var d = Math.abs(u.valToPos(x, "x") - left);
      if (d < bestD) { bestD = d; best = m; }
    });
    if (!best) { tip.style.display = "none"; return; }
    tip.textContent = "";
    tip.appendChild(el("strong", null, best.label + " (" + best.severity + ")"));
    tip.appendChild(el("div", null, best.text));
    tip.style.display = "block";
    var o = u.over.getBoundingClientRect(), r = c.root.getBoundingClientRect();
    tip.style.left = (o.left - r.left + left + 12) + "px";
    tip.style.top = (o.top - r.top + 8) + "px";
  }

  function lineControls(c) {
    var spec = c.spec, st = c.state, bar = el("div", "tm-tools");
    if (spec.series.some(function (s) { return s.smooth; })) {
      var lab = el("label", null, "smoothing ");
      var r = el("input", "tm-smooth"); r.type = "range"; r.min = "0"; r.max = "0.99"; r.step = "0.01";
      r.value = String(st.smooth);
      var out = el("span", "tm-smooth-value", st.smooth.toFixed(2));
      r.addEventListener("input", function () { st.smooth = +r.value; out.textContent = st.smooth.toFixed(2); buildLines(c); });
      lab.appendChild(r); lab.appendChild(out); bar.appendChild(lab);
    }
    if (spec.logok) {
      var l2 = el("label", null, " "), cb = el("input", "tm-log"); cb.type = "checkbox"; cb.checked = st.log;
      cb.addEventListener("change", function () { st.log = cb.checked; buildLines(c); });
      l2.appendChild(cb); l2.appendChild(document.createTextNode(" log y")); bar.appendChild(l2);
    }
    if (spec.series.some(function (s) { return s.xe; })) {
      var l3 = el("label", null, " align by "), sel = el("select", "tm-align");
      ["step", "epoch"].forEach(function (k) { var o = el("option", null, k); o.value = k; sel.appendChild(o); });
      sel.value = st.epoch ? "epoch" : "step";
      sel.addEventListener("change", function () { st.epoch = sel.value === "epoch"; st.zoom = null; buildLines(c); });
      l3.appendChild(sel); bar.appendChild(l3);
    }
    var reset = el("button", "tm-reset", "reset zoom"); reset.type = "button";
    reset.addEventListener("click", function () { st.zoom = null; buildLines(c); });
    bar.appendChild(reset);
    bar.appendChild(el("span", "tm-hint", "drag to zoom · double-click to reset · hover for values"));
    return bar;
  }

  // ---- heatmaps -----------------------------------------------------------------------------------------
  function buildHeatmap(c) {
    var spec = c.spec, L = spec.layers.length, T = spec.steps.length, v = spec.values;
    var lo = Infinity, hi = -Infinity, i;
    for (i = 0; i < v.length; i++) {
      var x = v[i];
      if (x === null || !isFinite(x) || (spec.log && x <= 0)) continue;
      if (x < lo) lo = x; if (x > hi) hi = x;
    }
    if (spec.vmin !== null && spec.vmin !== undefined) lo = spec.vmin;
    if (spec.vmax !== null && spec.vmax !== undefined) hi = spec.vmax;
    if (!(hi > lo)) hi = lo + (spec.log ? Math.abs(lo) * 9 + 1e-12 : 1);
    var tr = spec.log ? function (x) { return Math.log10(x); } : function (x) { return x; };
    var a = tr(lo), b = tr(hi);
    var W = widthOf(c.root), padL = 150, padB = 30, padT = 6, rowH = Math.max(6, Math.min(18, Math.floor(360 / Math.max(1, L))));
    var H = padT + rowH * L + padB, cw = (W - padL - 10) / Math.max(1, T);
    var cv = c.canvas; var dpr = window.devicePixelRatio || 1;
    cv.width = W * dpr; cv.height = H * dpr; cv.style.width = W + "px"; cv.style.height = H + "px";
    var ctx = cv.getContext("2d"); ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.fillStyle = "#fff"; ctx.fillRect(0, 0, W, H);
    for (var l = 0; l < L; l++) for (var t = 0; t < T; t++) {
      var val = v[l * T + t];
      if (val === null || !isFinite(val) || (spec.log && val <= 0)) continue;
      ctx.fillStyle = viridis((tr(val) - a) / (b - a));
      ctx.fillRect(padL + t * cw, padT + l * rowH, Math.ceil(cw), rowH);
    }
    ctx.fillStyle = "#1b1f24"; ctx.font = Math.min(12, rowH) + "px system-ui,sans-serif"; ctx.textAlign = "right";
    var every = Math.max(1, Math.ceil(11 / rowH));
    for (l = 0; l < L; l += every) ctx.fillText(String(spec.layers[l]).slice(0, 22), padL - 4, padT + l * rowH + rowH * 0.8);
    ctx.textAlign = "center"; ctx.font = "11px system-ui,sans-serif";
    for (var k = 0; k <= 4; k++) {
      var ti = Math.min(T - 1, Math.round(k * (T - 1) / 4));
      if (ti >= 0) ctx.fillText(String(spec.steps[ti]), padL + (ti + 0.5) * cw, padT + rowH * L + 14);
    }
    ctx.fillText("step", padL + (W - padL) / 2, H - 3);
    c.geom = { padL: padL, padT: padT, rowH: rowH, cw: cw, L: L, T: T };
    c.scale.textContent = spec.colorbar + ": " + fmt(lo) + " (dark) … " + fmt(hi) + " (bright)" + (spec.log ? ", log scale" : "");
  }
  function heatHover(c, ev) {
    var g = c.geom, r = c.canvas.getBoundingClientRect();
    var x = ev.clientX - r.left, y = ev.clientY - r.top;
    var t = Math.floor((x - g.padL) / g.cw), l = Math.floor((y - g.padT) / g.rowH);
    if (t < 0 || t >= g.T || l < 0 || l >= g.L) { c.readout.textContent = "hover a cell for its layer and value"; return; }
    var val = c.spec.values[l * g.T + t];
    c.readout.textContent = "layer " + c.spec.layers[l] + " · step " + c.spec.steps[t] + " · " + c.spec.colorbar + " " + fmt(val);
  }

  // ---- quantile bands -----------------------------------------------------------------------------------
  function buildQuantiles(c) {
    var spec = c.spec, st = c.state;
    if (c.plot) { c.plot.destroy(); c.plot = null; }
    var q = spec.kinds[st.kind], T = spec.steps.length, li = st.layer;
    var cols = [spec.steps.slice()];
    for (var j = 0; j < q.length; j++) cols.push(q[j].slice(li * T, (li + 1) * T));
    var cs = ["#56B4E9", "#0072B2", "#000000", "#0072B2", "#56B4E9"];
    var series = [{ label: "step" }];
    spec.labels.forEach(function (lab, j) {
      series.push({ label: lab, stroke: cs[j % cs.length], width: j === 2 ? 1.8 : 1, spanGaps: true,
        value: function (u, v) { return fmt(v); } });
    });
    var opts = {
      width: widthOf(c.root), height: 250, scales: { x: { time: false } }, series: series,
      bands: [{ series: [5, 1], fill: "rgba(86,180,233,0.18)" }, { series: [4, 2], fill: "rgba(0,114,178,0.25)" }],
      axes: [{ label: "step", size: 40 }, { label: st.kind + " value, layer " + spec.layers[li], size: 64,
        values: function (u, vals) { return vals.map(fmt); } }],
      cursor: { drag: { x: true, y: false } }
    };
    c.plot = new uPlot(opts, cols, c.plotEl);
  }
  function quantileControls(c) {
    var spec = c.spec, st = c.state, bar = el("div", "tm-tools");
    var l1 = el("label", null, "layer "), sel = el("select", "tm-layer");
    spec.layers.forEach(function (name, i) { var o = el("option", null, name); o.value = String(i); sel.appendChild(o); });
    sel.value = String(st.layer);
    sel.addEventListener("change", function () { st.layer = +sel.value; buildQuantiles(c); });
    l1.appendChild(sel); bar.appendChild(l1);
    var l2 = el("label", null, " of "), k = el("select", "tm-kind");
    Object.keys(spec.kinds).forEach(function (name) { var o = el("option", null, name); o.value = name; k.appendChild(o); });
    k.value = st.kind;
    k.addEventListener("change", function () { st.kind = k.value; buildQuantiles(c); });
    l2.appendChild(k); bar.appendChild(l2);
    return bar;
  }

  // ---- mounting -----------------------------------------------------------------------------------------
  function mount(fig, spec) {
    var id = fig.getAttribute("data-tm");
    var root = el("div", "tm-ichart"), c = { id: id, spec: spec, root: root, plot: null };
    root.setAttribute("data-kind", spec.kind);
    root.appendChild(el("div", "tm-title", spec.title));
    if (spec.kind === "lines") {
      c.state = { smooth: spec.smooth_default || 0, log: !!spec.log, epoch: false, zoom: null };
      root.appendChild(lineControls(c));
      c.plotEl = el("div", "tm-plot"); root.appendChild(c.plotEl);
      c.tip = el("div", "tm-tip"); root.appendChild(c.tip);
    } else if (spec.kind === "heatmap") {
      c.canvas = el("canvas", "tm-heat"); root.appendChild(c.canvas);
      c.scale = el("div", "tm-scale"); root.appendChild(c.scale);
      c.readout = el("div", "tm-readout", "hover a cell for its layer and value"); root.appendChild(c.readout);
      c.canvas.addEventListener("mousemove", function (ev) { heatHover(c, ev); });
    } else if (spec.kind === "quantiles") {
      c.state = { layer: spec.layers.length - 1, kind: Object.keys(spec.kinds)[0] };
      root.appendChild(quantileControls(c));
      c.plotEl = el("div", "tm-plot"); root.appendChild(c.plotEl);
    } else return;
    fig.insertBefore(root, fig.firstChild);
    fig.classList.add("tm-has-i");
    charts[id] = c;
    render(c);
  }
  function render(c) {
    try {
      if (c.spec.kind === "lines") buildLines(c);
      else if (c.spec.kind === "heatmap") buildHeatmap(c);
      else buildQuantiles(c);
    } catch (e) {  // a broken chart falls back to its static figure
      c.root.remove(); c.root.parentNode && c.root.parentNode.classList.remove("tm-has-i");
    }
  }
  function mountAll() {
    var figs = document.querySelectorAll("figure[data-tm]");
    for (var i = 0; i < figs.length; i++) {
      var spec = DATA.charts[figs[i].getAttribute("data-tm")];
      if (spec) {
        try { mount(figs[i], spec); } catch (e) { figs[i].classList.remove("tm-has-i"); }
      }
    }
  }

  // ---- live view: poll a small JSON endpoint, update the charts and the live findings -------------------
  function liveUpdate(doc) {
    var bar = document.getElementById("tm-live-status");
    if (bar) {
      bar.textContent = "live · " + doc.runs.map(function (r) {
        return r.label + ": step " + r.steps + " (" + r.status + ")";
      }).join(" · ") + " · updated " + new Date().toLocaleTimeString();
      bar.setAttribute("data-version", doc.version);
    }
    var list = document.getElementById("tm-live-findings");
    if (list) {
      list.textContent = "";
      doc.findings.forEach(function (f) {
        var li = el("li", "tm-live-finding " + f.severity);
        li.appendChild(el("strong", null, f.severity + " · " + f.code));
        li.appendChild(document.createTextNode(" " + f.title + (f.step !== null ? " (step " + f.step + ")" : "")));
        list.appendChild(li);
      });
      if (!doc.findings.length) list.appendChild(el("li", null, "no live alerts so far"));
    }
    Object.keys(doc.charts).forEach(function (id) {
      var c = charts[id];
      if (c) { var st = c.state; c.spec = doc.charts[id]; c.state = st; render(c); }
    });
  }
  function poll() {
    var live = DATA.live;
    fetch(live.url, { cache: "no-store" }).then(function (r) { return r.json(); }).then(function (doc) {
      var bar = document.getElementById("tm-live-status");
      if (!bar || bar.getAttribute("data-version") !== String(doc.version)) liveUpdate(doc);
    }).catch(function () {
      var bar = document.getElementById("tm-live-status");
      if (bar) bar.textContent = "live · the server did not answer; retrying";
    }).then(function () { setTimeout(poll, live.interval_ms); });
  }

  window.trainmedic = { charts: charts };  // for tests and the curious: the mounted charts
  mountAll();
  var resizeTimer = null;
  window.addEventListener("resize", function () {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(function () { Object.keys(charts).forEach(function (k) { render(charts[k]); }); }, 200);
  });
  if (DATA.live) setTimeout(poll, DATA.live.interval_ms);
})();
