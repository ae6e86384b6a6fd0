// A little JavaScript, no framework: the heatmap switch, and a batch page's live progress.
(function () {
  var toggle = document.getElementById("heatmap-toggle");
  if (toggle) {
    var picture = document.getElementById("picture");
    var apply = function () { picture.classList.toggle("show-heatmap", toggle.checked); };
    toggle.addEventListener("change", apply);
    apply();
  }

  var progress = document.getElementById("batch-progress");
  if (!progress) { return; }
  var url = progress.dataset.url;
  var lastFinished = Number(progress.dataset.finished);
  var polls = 0;

  function text(id, value) {
    var element = document.getElementById(id);
    if (element) { element.textContent = value; }
  }

  function timeLeft(seconds) {
    if (seconds === null) { return "estimating…"; }
    if (seconds < 60) { return "about " + Math.max(1, seconds) + " s left"; }
    return "about " + Math.round(seconds / 60) + " min left";
  }

  function refreshTable() {
    fetch(window.location.href, { credentials: "same-origin" }).then(function (response) {
      return response.text();
    }).then(function (html) {
      var fresh = new DOMParser().parseFromString(html, "text/html").getElementById("images");
      var current = document.getElementById("images");
      if (fresh && current) { current.replaceWith(fresh); }
    });
  }

  function poll() {
    fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } }).then(function (response) {
      if (!response.ok) { throw new Error(response.status); }
      return response.json();
    }).then(function (p) {
      polls += 1;
      text("p-finished", p.finished); text("p-done", p.done); text("p-rejected", p.rejected);
      text("p-failed", p.failed); text("p-alerts", p.alerts); text("p-status", p.status);
      text("p-left", p.status === "done" ? "finished" : timeLeft(p.seconds_left));
      document.getElementById("p-bar").style.width = (p.total ? 100 * p.finished / p.total : 100) + "%";
      progress.setAttribute("aria-valuenow", p.finished);
      var changed = p.finished !== lastFinished;
      lastFinished = p.finished;
      if (p.status === "done") { refreshTable(); return; }
      if (changed && (p.total <= 500 || polls % 10 === 0)) { refreshTable(); }
      window.setTimeout(poll, 2000);
    }).catch(function () { window.setTimeout(poll, 5000); });
  }

  if (progress.dataset.status !== "done") { window.setTimeout(poll, 1000); }
})();
