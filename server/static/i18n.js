// The words scripts show, in the reader's language: the page carries them, translated by
// the server from the message catalogues, as JSON in <script id="messages">. Scripts
// hold no text of their own. Usage: loaxaT("key", {n: 3}) → "…" with %(n)s filled in.
(function () {
  "use strict";
  var node = document.getElementById("messages");
  var table = {};
  try { table = node ? JSON.parse(node.textContent) : {}; } catch (e) { table = {}; }
  window.loaxaT = function (key, values) {
    var text = Object.prototype.hasOwnProperty.call(table, key) ? table[key] : key;
    return text.replace(/%\((\w+)\)s|%%/g, function (match, name) {
      if (match === "%%") return "%";
      return values && name in values ? String(values[name]) : "";
    });
  };
  window.loaxaLang = document.documentElement.lang || "vi";
  window.loaxaNumber = function (value, digits) {
    var text = value.toFixed(digits);
    return window.loaxaLang === "vi" ? text.replace(".", ",") : text;
  };
})();
