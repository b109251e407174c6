// Live delivery of one alert: follows GET /api/v1/alerts/{id}/stream (server-sent events,
// each {counts, stations: [changed rows], state}) and moves the progress bars and the
// station rows. EventSource reconnects by itself after a network cut; the first event
// after a (re)connect carries every station, so nothing is missed. Times are shown in
// Vietnam's time whatever the PC's time zone.
(function () {
  "use strict";
  var root = document.getElementById("alert");
  if (!root || !window.EventSource) return;
  var T = window.loaxaT;
  var words = JSON.parse(document.getElementById("alert-words").textContent);
  var total = parseInt(root.dataset.total, 10) || 0;
  var status = document.getElementById("stream-status");
  var cancel = document.getElementById("cancel-form");
  var VN_OFFSET_MS = 7 * 3600 * 1000;

  if (cancel) {
    cancel.addEventListener("submit", function (event) {
      if (!window.confirm(T("confirm_cancel_alert"))) event.preventDefault();
    });
  }
  if (root.dataset.open !== "true") return;

  function pad(n) { return (n < 10 ? "0" : "") + n; }
  function local(iso) {
    if (!iso) return "—";
    var d = new Date(Date.parse(iso) + VN_OFFSET_MS);
    return pad(d.getUTCDate()) + "/" + pad(d.getUTCMonth() + 1) + "/" + d.getUTCFullYear() + " " +
      pad(d.getUTCHours()) + ":" + pad(d.getUTCMinutes()) + ":" + pad(d.getUTCSeconds());
  }

  function setBar(key, n) {
    var bar = root.querySelector('[data-bar="' + key + '"]');
    if (!bar) return;
    bar.value = n;
    root.querySelector('[data-count="' + key + '"]').textContent = n;
    root.querySelector('[data-pct="' + key + '"]').textContent =
      total ? Math.round((100 * n) / total) : 0;
  }

  // The bars count the rows: a station that received the alert stays counted after a
  // cancel (its state becomes "cancelled", its received time stays).
  var REACHED = ["received", "playing", "finished"];
  function count(attr) {
    return root.querySelectorAll("tr[data-" + attr + '="1"]').length;
  }

  function update(data) {
    (data.stations || []).forEach(function (s) {
      var row = root.querySelector('tr[data-station="' + CSS.escape(s.station_id) + '"]');
      if (!row) return;
      var reached = s.received_at || s.playing_at || REACHED.indexOf(s.state) >= 0;
      row.dataset.reached = reached ? "1" : "0";
      row.dataset.finished = s.state === "finished" ? "1" : "0";
      var cell = row.querySelector('[data-field="state"]');
      cell.textContent = (words.delivery[s.state] || s.state) + (s.reason ? " (" + (words.reasons[s.reason] || s.reason) + ")" : "");
      cell.className = "d-" + s.state;
      row.querySelector('[data-field="received_at"]').textContent = local(s.received_at);
      row.querySelector('[data-field="finished_at"]').textContent = local(s.finished_at);
    });
    setBar("received", count("reached"));
    setBar("finished", count("finished"));
    var state = document.getElementById("alert-state");
    if (data.state && state.dataset.state !== data.state) {
      state.dataset.state = data.state;
      state.textContent = words.states[data.state] || data.state;
    }
  }

  var source = new EventSource("/api/v1/alerts/" + encodeURIComponent(root.dataset.alert) + "/stream");
  source.onmessage = function (event) {
    status.textContent = "";
    var data = JSON.parse(event.data);
    update(data);
    if (data.state && ["finished", "cancelled", "expired"].indexOf(data.state) >= 0) {
      source.close();
      if (cancel) cancel.hidden = true;
    }
  };
  source.onerror = function () {
    if (source.readyState !== EventSource.CLOSED) status.textContent = T("stream_lost");
  };
})();
