// hexdbt's status page: times in the browser's zone (UTC on hover), details of the timeline's
// bars on hover and focus, and the page's live part refreshed in place. The page reads fine
// without it.
(function () {
  "use strict";

  function localTimes(root) {
    var found = root.querySelectorAll("[data-utc]");
    for (var i = 0; i < found.length; i++) {
      var el = found[i];
      var iso = el.getAttribute("datetime") || el.getAttribute("data-utc");
      var moment = new Date(iso);
      if (isNaN(moment.getTime())) continue;
      var utc = moment.toISOString().replace("T", " ").replace(/\.\d+Z$/, " UTC");
      if (el.hasAttribute("data-short")) {
        el.textContent = moment.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
        var title = document.createElementNS("http://www.w3.org/2000/svg", "title");
        title.textContent = utc;
        el.appendChild(title);
      } else {
        el.textContent = moment.toLocaleString();
        el.setAttribute("title", utc);
      }
    }
  }

  // A bar or a build mark of the timeline says what it is in its <title>.
  function showDetails(event) {
    var target = event.target.closest ? event.target.closest(".bar, .build") : null;
    var title = target ? target.querySelector("title") : null;
    var line = document.getElementById("bar-details");
    if (title && line) line.textContent = title.textContent;
  }

  function start() {
    localTimes(document);
    document.addEventListener("focusin", showDetails);
    document.addEventListener("mouseover", showDetails);
    var live = document.getElementById("live");
    if (!live || !live.getAttribute("data-fragment-url") || !window.fetch) return;
    var every = Math.max(1, Number(live.getAttribute("data-refresh-s")) || 15) * 1000;
    var etag = null;
    function refresh() {
      if (document.hidden) return later();
      var headers = etag ? { "If-None-Match": etag } : {};
      fetch(live.getAttribute("data-fragment-url"), { headers: headers, credentials: "same-origin" })
        .then(function (answer) {
          if (answer.status !== 200) return null;
          etag = answer.headers.get("ETag");
          return answer.text().then(function (html) {
            live.innerHTML = html;
            localTimes(live);
          });
        })
        .catch(function () { /* the server is away: try again later */ })
        .then(later);
    }
    function later() { window.setTimeout(refresh, every); }
    later();
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
