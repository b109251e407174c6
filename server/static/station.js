// Remote actions on the station page: send the command, then follow it to its answer.
//
// POST /api/v1/stations/{id}/commands returns at once with state "sent"; the station
// answers over MQTT some seconds later, so the page polls the command until it is
// done or failed and shows the station's own words. Only rendered for users who hold
// station.command in the station's area; the API checks that again anyway.
(function () {
  "use strict";
  var box = document.getElementById("actions");
  if (!box) return;
  var station = box.dataset.station;
  var out = document.getElementById("command-result");
  var POLL_MS = 1000;
  var GIVE_UP_MS = 90000;
  var T = window.loaxaT;
  var LABELS = {
    test_tone: T("cmd_test_tone"),
    set_amp: T("cmd_set_amp"),
    set_volume: T("cmd_set_volume"),
    restart: T("cmd_restart"),
    fetch_log: T("cmd_fetch_log"),
  };

  function show(text, outcome) {
    out.className = "result" + (outcome ? " " + outcome : "");
    out.textContent = text;
  }

  function reason(response) {
    return response.json().then(
      function (body) { return body.detail || response.status; },
      function () { return response.status; }
    );
  }

  function describe(name, command) {
    var head = LABELS[name] + ": " + (command.ok ? T("success") : T("failure"));
    if (command.detail) head += " — " + command.detail;
    var result = command.result || {};
    if (Array.isArray(result.lines)) return head + "\n\n" + result.lines.join("\n");
    return head;
  }

  function poll(name, url, startedAt) {
    return fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (response) {
        if (!response.ok) return reason(response).then(function (why) { throw new Error(why); });
        return response.json();
      })
      .then(function (command) {
        if (command.state === "done" || command.state === "failed") {
          show(describe(name, command), command.ok ? "ok" : "fail");
          return;
        }
        if (Date.now() - startedAt > GIVE_UP_MS) {
          show(LABELS[name] + ": " + T("no_answer", { n: GIVE_UP_MS / 1000 }), "fail");
          return;
        }
        return new Promise(function (resolve) { window.setTimeout(resolve, POLL_MS); })
          .then(function () { return poll(name, url, startedAt); });
      });
  }

  function send(button) {
    var name = button.dataset.command;
    var args = JSON.parse(button.dataset.args || "{}");
    if (button.dataset.volume) {
      var input = document.getElementById(button.dataset.volume);
      var percent = parseInt(input.value, 10);
      if (!(percent >= 0 && percent <= 100)) {
        show(T("volume_range"), "fail");
        input.focus();
        return;
      }
      args = { percent: percent };
    }
    if (button.dataset.confirm && !window.confirm(button.dataset.confirm)) return;
    var buttons = box.querySelectorAll("button[data-command]");
    buttons.forEach(function (b) { b.disabled = true; });
    show(LABELS[name] + ": " + T("sending"));
    var base = "/api/v1/stations/" + encodeURIComponent(station) + "/commands";
    fetch(base, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", Accept: "application/json" },
      body: JSON.stringify({ name: name, args: args }),
    })
      .then(function (response) {
        if (!response.ok) return reason(response).then(function (why) { throw new Error(why); });
        return response.json();
      })
      .then(function (command) {
        show(LABELS[name] + ": " + T("sent_waiting"));
        // The page's own address answers the same, with the reply in the reader's words.
        var reply = "/stations/" + encodeURIComponent(station) + "/commands/" +
          encodeURIComponent(command.id) + "/reply";
        return poll(name, reply, Date.now());
      })
      .catch(function (error) {
        show(LABELS[name] + ": " + T("send_failed", { why: error.message }), "fail");
      })
      .finally(function () {
        buttons.forEach(function (b) { b.disabled = false; });
      });
  }

  box.querySelectorAll("button[data-command]").forEach(function (button) {
    button.addEventListener("click", function () { send(button); });
  });
})();
