// Keeps the live parts of a page (elements with data-live and an id) fresh without
// reloading the whole page.
//
// A full <meta refresh> would throw away a keyboard user's place and flash on slow
// phones; instead the page is fetched again and each live block swapped for its new
// copy. A block is left alone while the user is working inside it or the tab is
// hidden. Other scripts call window.loaxaRefresh() after a change they made.
(function () {
  "use strict";
  var blocks = Array.prototype.slice.call(document.querySelectorAll("[data-live][id]"));
  if (!blocks.length) return;

  function busy(block) {
    return document.hidden || block.contains(document.activeElement);
  }

  function refresh(force) {
    return fetch(window.location.href, { credentials: "same-origin" })
      .then(function (response) {
        if (response.redirected || !response.ok) throw new Error(String(response.status));
        return response.text();
      })
      .then(function (html) {
        var fresh = new DOMParser().parseFromString(html, "text/html");
        blocks.forEach(function (block) {
          var copy = fresh.getElementById(block.id);
          if (copy && (force || !busy(block))) block.innerHTML = copy.innerHTML;
        });
      })
      .catch(function () { /* a poor network: keep showing the last good view */ });
  }

  window.loaxaRefresh = function () { return refresh(true); };
  var everyS = Math.min.apply(null, blocks.map(function (b) {
    return parseInt(b.dataset.refreshS, 10) || 30;
  }));
  window.setInterval(function () { if (!document.hidden) refresh(false); }, everyS * 1000);
})();
