// The main menu folds behind one button on a phone: the page starts with its content, not
// with a third of the screen of links. CSS shows the button only on narrow screens and
// only once this script has run, so without it the menu simply stays open.
(function () {
  "use strict";
  var header = document.querySelector("header.top");
  var button = header && header.querySelector(".menu-button");
  if (!button) return;
  header.classList.add("js-menu");
  button.addEventListener("click", function () {
    var open = header.classList.toggle("open");
    button.setAttribute("aria-expanded", open ? "true" : "false");
  });
})();
