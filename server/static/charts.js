// Probe charts for the station page, drawn as inline SVG with no library.
//
// Each <figure class="chart" data-metric="..."> inside #charts gets the station's
// aggregates from GET /api/v1/stations/{id}/health?range=24h|7d&metric=... and shows
// the average as a line and the min–max as a band. Times are labelled in Vietnam's
// time (UTC+7, no DST) whatever the viewing PC's time zone is set to.
(function () {
  "use strict";
  var root = document.getElementById("charts");
  if (!root) return;
  var station = root.dataset.station;
  var SVG = "http://www.w3.org/2000/svg";
  var VN_OFFSET_MS = 7 * 3600 * 1000;
  var RANGES = { "24h": 24 * 3600 * 1000, "7d": 7 * 24 * 3600 * 1000 };
  var W = 480, H = 200, L = 48, R = 12, T = 10, B = 28;
  var range = "24h";

  function el(name, attrs, text) {
    var node = document.createElementNS(SVG, name);
    Object.keys(attrs || {}).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function pad2(n) { return (n < 10 ? "0" : "") + n; }

  function vnLabel(ms, withDay) {
    var d = new Date(ms + VN_OFFSET_MS);
    return withDay
      ? pad2(d.getUTCDate()) + "/" + pad2(d.getUTCMonth() + 1)
      : pad2(d.getUTCHours()) + ":" + pad2(d.getUTCMinutes());
  }

  function vnNumber(value) {
    var digits = Math.abs(value) >= 100 ? 0 : 1;
    return window.loaxaNumber(value, digits);
  }

  // The health endpoint answers {end, series: {metric: [{t, min, avg, max, count}]}}.
  function toPoints(body, metric) {
    var rows = (body.series || {})[metric] || [];
    return rows.map(function (p) {
      return { t: Date.parse(p.t), avg: p.avg, min: p.min, max: p.max };
    }).filter(function (p) {
      return isFinite(p.t) && typeof p.avg === "number";
    }).sort(function (a, b) { return a.t - b.t; });
  }

  // Break the line where reports stopped: a dead station must look dead, not interpolated.
  function segments(points) {
    if (points.length < 2) return [points];
    var steps = [];
    for (var i = 1; i < points.length; i++) steps.push(points[i].t - points[i - 1].t);
    steps.sort(function (a, b) { return a - b; });
    var gap = steps[Math.floor(steps.length / 2)] * 3;
    var out = [[points[0]]];
    for (var j = 1; j < points.length; j++) {
      if (points[j].t - points[j - 1].t > gap) out.push([]);
      out[out.length - 1].push(points[j]);
    }
    return out;
  }

  function ticks(lo, hi, count) {
    var raw = (hi - lo) / count;
    var mag = Math.pow(10, Math.floor(Math.log10(raw)));
    var step = [1, 2, 5, 10].map(function (m) { return m * mag; })
      .filter(function (s) { return s >= raw; })[0];
    var out = [];
    for (var v = Math.ceil(lo / step) * step; v <= hi + 1e-9; v += step) out.push(v);
    return out;
  }

  function draw(figure, points, endMs) {
    var span = RANGES[range];
    var startMs = endMs - span;
    var unit = figure.dataset.unit;
    var shown = points.filter(function (p) { return p.t >= startMs; });
    if (!shown.length) {
      return Object.assign(document.createElement("p"), {
        className: "muted", textContent: window.loaxaT("no_data"),
      });
    }
    var svg = el("svg", { viewBox: "0 0 " + W + " " + H, role: "img" });
    svg.appendChild(el("title", {}, figure.querySelector("figcaption").textContent));
    var lo = Math.min.apply(null, shown.map(function (p) { return p.min; }));
    var hi = Math.max.apply(null, shown.map(function (p) { return p.max; }));
    if (hi === lo) { hi += 1; lo -= 1; }
    var margin = (hi - lo) * 0.1;
    lo -= margin; hi += margin;
    function x(t) { return L + (t - startMs) / span * (W - L - R); }
    function y(v) { return T + (hi - v) / (hi - lo) * (H - T - B); }

    ticks(lo, hi, 4).forEach(function (v) {
      svg.appendChild(el("line", { class: "gridline", x1: L, x2: W - R, y1: y(v), y2: y(v) }));
      svg.appendChild(el("text", { x: L - 6, y: y(v) + 4, "text-anchor": "end" }, vnNumber(v)));
    });
    var hourMs = 3600 * 1000;
    var stepMs = range === "7d" ? 24 * hourMs : 6 * hourMs;
    // Ticks fall on local midnights / local 00, 06, 12, 18 h.
    var first = Math.ceil((startMs + VN_OFFSET_MS) / stepMs) * stepMs - VN_OFFSET_MS;
    for (var t = first; t <= endMs; t += stepMs) {
      svg.appendChild(el("line", { class: "axis", x1: x(t), x2: x(t), y1: H - B, y2: H - B + 4 }));
      svg.appendChild(el("text", { x: x(t), y: H - 8, "text-anchor": "middle" },
        vnLabel(t, range === "7d")));
    }
    svg.appendChild(el("line", { class: "axis", x1: L, x2: W - R, y1: H - B, y2: H - B }));
    svg.appendChild(el("line", { class: "axis", x1: L, x2: L, y1: T, y2: H - B }));

    segments(shown).forEach(function (seg) {
      var top = seg.map(function (p) { return x(p.t) + "," + y(p.max); });
      var bottom = seg.slice().reverse().map(function (p) { return x(p.t) + "," + y(p.min); });
      svg.appendChild(el("polygon", { class: "band", points: top.concat(bottom).join(" ") }));
      if (seg.length === 1) {
        svg.appendChild(el("circle", { class: "avg", cx: x(seg[0].t), cy: y(seg[0].avg), r: 2 }));
      } else {
        svg.appendChild(el("polyline", {
          class: "avg",
          points: seg.map(function (p) { return x(p.t) + "," + y(p.avg); }).join(" "),
        }));
      }
    });
    var last = shown[shown.length - 1];
    svg.appendChild(el("desc", {}, window.loaxaT("chart_last", {
      value: vnNumber(last.avg) + " " + unit, time: vnLabel(last.t, false), day: vnLabel(last.t, true),
    })));
    return svg;
  }

  function load(figure) {
    var plot = figure.querySelector(".plot");
    var url = "/api/v1/stations/" + encodeURIComponent(station) + "/health?range=" + range +
      "&metric=" + encodeURIComponent(figure.dataset.metric);
    fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (response) {
        if (!response.ok) throw new Error(String(response.status));
        return response.json();
      })
      .then(function (body) {
        var end = Date.parse(body.end) || Date.now();
        plot.replaceChildren(draw(figure, toPoints(body, figure.dataset.metric), end));
      })
      .catch(function () {
        plot.replaceChildren(Object.assign(document.createElement("p"), {
          className: "muted", textContent: window.loaxaT("chart_failed"),
        }));
      });
  }

  function loadAll() {
    root.querySelectorAll("figure.chart").forEach(load);
  }

  root.querySelectorAll("button[data-range]").forEach(function (button) {
    button.addEventListener("click", function () {
      range = button.dataset.range;
      root.querySelectorAll("button[data-range]").forEach(function (b) {
        b.setAttribute("aria-pressed", String(b === button));
      });
      loadAll();
    });
  });
  loadAll();
  window.setInterval(function () { if (!document.hidden) loadAll(); }, 60000);
})();
