// The admin's live pages (templates/admin/videojobs/), kept out of the templates so that the
// Content-Security-Policy (script-src 'self') runs them and nothing inline.
"use strict";
document.addEventListener("DOMContentLoaded", function () {
  // A page whose auto-refresh note carries data-refresh-seconds reloads the same URL (filters
  // kept), but not under an operator who is ticking rows or typing.
  var note = document.querySelector("#auto-refresh[data-refresh-seconds]");
  if (note) {
    var delay = Number(note.dataset.refreshSeconds) * 1000;
    var tick = function () {
      var focused = document.activeElement ? document.activeElement.tagName : "";
      var busy = document.querySelector("#result_list input.action-select:checked") ||
        ["INPUT", "SELECT", "TEXTAREA"].indexOf(focused) >= 0;
      if (busy) { setTimeout(tick, delay); } else { window.location.reload(); }
    };
    setTimeout(tick, delay);
  }
  // A job action whose form carries data-confirm asks first.
  document.querySelectorAll("form[data-confirm]").forEach(function (form) {
    form.addEventListener("submit", function (event) {
      if (!window.confirm(form.dataset.confirm)) { event.preventDefault(); }
    });
  });
});
