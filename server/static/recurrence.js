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

  // The date is typed day first (31/12/2026; an ISO 2026-12-31 is read too): say it
  // back with its weekday, so a slip of day and month shows at once.
  function dayInWords() {
    var value = form.querySelector('input[name="day"]').value.trim();
    var iso = /^(\d{4})-(\d{2})-(\d{2})$/.exec(value);
    var typed = /^(\d{1,2})[\/.-](\d{1,2})[\/.-](\d{4})$/.exec(value);
    var y, m, d;
    if (iso) { y = +iso[1]; m = +iso[2]; d = +iso[3]; }
    else if (typed) { y = +typed[3]; m = +typed[2]; d = +typed[1]; }
    else return "";
    var when = new Date(Date.UTC(y, m - 1, d));
    if (when.getUTCMonth() !== m - 1 || when.getUTCDate() !== d) return "";
    var weekday = (when.getUTCDay() + 6) % 7;
    var two = function (n) { return (n < 10 ? "0" : "") + n; };
    return boxes[weekday].dataset.name + " " + two(d) + "/" + two(m) + "/" + y + " ";
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
