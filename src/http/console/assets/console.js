// xecm-bridge console: refreshes the live parts of a page (elements with data-refresh="<s>")
// in place, unless the operator is working in a form or the tab is hidden. Everything works
// without this script; it only saves reloading.
(function () {
  "use strict";
  function busy() {
    var active = document.activeElement;
    return document.hidden || (active && active.closest && active.closest("form"));
  }
  function refresh() {
    if (busy()) { return; }
    fetch(window.location.href, { credentials: "same-origin", headers: { "Accept": "text/html" } })
      .then(function (response) { return response.ok ? response.text() : null; })
      .then(function (text) {
        if (!text || busy()) { return; }
        var fresh = new DOMParser().parseFromString(text, "text/html");
        document.querySelectorAll("[data-refresh]").forEach(function (old, index) {
          var replacement = fresh.querySelectorAll("[data-refresh]")[index];
          if (replacement) { old.replaceWith(replacement); }
        });
        var chart = document.querySelector(".chart");
        var freshChart = fresh.querySelector(".chart");
        if (chart && freshChart) { chart.replaceWith(freshChart); }
      })
      .catch(function () { /* the next round tries again */ });
  }
  document.addEventListener("DOMContentLoaded", function () {
    var live = document.querySelector("[data-refresh]");
    if (!live) { return; }
    var seconds = parseInt(live.getAttribute("data-refresh"), 10) || 10;
    window.setInterval(refresh, seconds * 1000);
  });
})();
