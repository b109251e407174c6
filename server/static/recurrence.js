// The recurrence picker says in plain words what the ticked days and the time mean,
// as the clerk changes them: "Thứ 2 đến Thứ 7, 05:00". The words come from the page
// (translated by the server); the server says the same on the programme's page.
(function () {
  "use strict";
  var form = document.getElementById("programme-form");
  var out = document.getElementById("recurrence-summary");
  if (!form || !out) return;
  var boxes = Array.prototype.slice.call(form.querySelectorAll('input[name="days"]'));
  var time = form.querySelector('input[name="at"]');

  function fill(text, values) {
    return text.replace(/%\((\w+)\)s/g, function (_m, name) { return values[name] || ""; });
  }

  function weekly() {
    var once = form.querySelector('input[name="repeat"][value="once"]');
    return !(once && once.checked);
  }

  function days() {
    var chosen = boxes.filter(function (b) { return b.checked; });
    if (chosen.length === 7) return out.dataset.everyDay;
    var n = chosen.map(function (b) { return parseInt(b.value, 10); });
    var run = n.length >= 3 && n[n.length - 1] - n[0] === n.length - 1;
    if (run) {
      return fill(out.dataset.range, {
        first: chosen[0].dataset.name, last: chosen[chosen.length - 1].dataset.name,
      });
    }
    return chosen.map(function (b) { return b.dataset.name; }).join(", ");
  }

  // The date input shows the browser's own format (often 11/26/2026): say the day in
  // words and in Vietnamese order, so nobody reads the month as the day.
  function dayInWords() {
    var value = form.querySelector('input[name="day"]').value;
    var parts = /^(\d{4})-(\d{2})-(\d{2})$/.exec(value);
    if (!parts) return "";
    var weekday = (new Date(Date.UTC(+parts[1], +parts[2] - 1, +parts[3])).getUTCDay() + 6) % 7;
    return boxes[weekday].dataset.name + " " + parts[3] + "/" + parts[2] + "/" + parts[1] + " ";
  }

  function update() {
    var hm = time.value || "—";
    boxes.forEach(function (b) { b.disabled = !weekly(); });
    out.textContent = weekly() ? days() + ", " + hm : fill(out.dataset.once, { time: dayInWords() + hm });
  }

  form.addEventListener("change", update);
  form.addEventListener("input", update);
  update();
})();
