// Acknowledging an alarm from the list: POST /api/v1/alarms/{id}/acknowledge with the
// note, then redraw the list (live.js) so the alarm moves to its new state.
//
// The list itself is rendered by the server; this only turns the form into a JSON
// call, since the API is the one place that checks and records an acknowledgement.
(function () {
  "use strict";
  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (!form.matches || !form.matches("form.ack")) return;
    event.preventDefault();
    var button = form.querySelector("button");
    var note = form.querySelector("input[name=note]").value.trim();
    button.disabled = true;
    fetch("/api/v1/alarms/" + encodeURIComponent(form.dataset.alarm) + "/acknowledge", {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", Accept: "application/json" },
      body: JSON.stringify({ note: note || null }),
    }).then(function (response) {
      if (!response.ok) throw new Error(String(response.status));
      return window.loaxaRefresh();
    }).catch(function (error) {
      button.disabled = false;
      var message = form.querySelector(".error") || document.createElement("p");
      message.className = "error";
      message.setAttribute("role", "alert");
      message.textContent = window.loaxaT("ack_failed", { why: error.message });
      form.append(message);
    });
  });
})();
