/*
 * Live updates: a "Pause live updates" / "Resume live updates" switch for htmx polling.
 *
 * The convention, for any page:
 *   - An element that refreshes itself by polling carries `data-live` beside its htmx
 *     attributes, e.g.
 *       <section id="x" hx-get="/same/url" hx-trigger="every 2s" hx-swap="outerHTML" data-live>
 *   - The page shows one switch, hidden until this script reveals it. It shows only while
 *     something on the page is live: not without JavaScript (nothing polls then), and not
 *     once the last data-live element has been swapped for a final, still version:
 *       <button type="button" data-live-toggle aria-pressed="false" hidden>Pause live updates</button>
 *     {% include "runs/_live_toggle.html" %} renders exactly that.
 *
 * While paused, every htmx request issued by a `data-live` element is cancelled before it
 * is sent (htmx keeps its timers; the next tick after resuming fetches again). Requests
 * from anything else, such as forms and buttons inside a live element, still go out.
 * The choice holds for the browser tab, across pages, in sessionStorage.
 */
(function () {
  "use strict";

  var KEY = "threadsite.live.paused";
  var paused = read();

  function read() {
    try {
      return window.sessionStorage.getItem(KEY) === "1";
    } catch (error) {
      return false; // storage disabled: the switch still works on this page
    }
  }

  function remember(value) {
    try {
      if (value) {
        window.sessionStorage.setItem(KEY, "1");
      } else {
        window.sessionStorage.removeItem(KEY);
      }
    } catch (error) {
      // storage disabled or full: nothing to remember it in
    }
  }

  function render() {
    var live = document.querySelector("[data-live]") !== null;
    var buttons = document.querySelectorAll("[data-live-toggle]");
    for (var i = 0; i < buttons.length; i++) {
      buttons[i].hidden = !live;
      buttons[i].setAttribute("aria-pressed", paused ? "true" : "false");
      buttons[i].textContent = paused ? "Resume live updates" : "Pause live updates";
    }
    document.documentElement.toggleAttribute("data-live-paused", paused);
  }

  document.addEventListener("click", function (event) {
    var target = event.target instanceof Element ? event.target : null;
    var button = target && target.closest("[data-live-toggle]");
    if (!button) {
      return;
    }
    paused = !paused;
    remember(paused);
    render();
  });

  document.body.addEventListener("htmx:beforeRequest", function (event) {
    var source = event.target;
    if (paused && source instanceof Element && source.hasAttribute("data-live")) {
      event.preventDefault();
    }
  });

  // New content (a swap) may add or remove live elements.
  document.body.addEventListener("htmx:load", render);

  // Back/forward cache: the choice may have changed on another page of this tab.
  window.addEventListener("pageshow", function () {
    paused = read();
    render();
  });

  render();
})();

/*
 * Running clocks: an element with data-since="<epoch seconds>" shows the time since then
 * ("45 s", "2 min 05 s", "1 h 02 min", "3 d 4 h", as the server writes it) and is counted
 * here every second. The server sends an unchanged live block again as it was first
 * rendered, so the count must come from here. data-server-time (the server's clock when
 * the page was rendered) and each poll's X-Server-Time header correct for a wrong clock
 * on this computer.
 */
(function () {
  "use strict";

  var offset = 0; // the server's clock minus this computer's, in seconds

  function readOffset() {
    var page = document.querySelector("[data-server-time]");
    var serverTime = page ? parseFloat(page.getAttribute("data-server-time")) : NaN;
    if (isFinite(serverTime)) {
      offset = serverTime - Date.now() / 1000;
    }
  }

  function two(number) {
    return number < 10 ? "0" + number : String(number);
  }

  function duration(seconds) {
    var total = Math.max(0, Math.floor(seconds));
    var days = Math.floor(total / 86400);
    var hours = Math.floor((total % 86400) / 3600);
    var minutes = Math.floor((total % 3600) / 60);
    var secs = total % 60;
    if (days) {
      return days + " d " + hours + " h";
    }
    if (hours) {
      return hours + " h " + two(minutes) + " min";
    }
    if (minutes) {
      return minutes + " min " + two(secs) + " s";
    }
    return secs + " s";
  }

  function tick() {
    var now = Date.now() / 1000 + offset;
    var clocks = document.querySelectorAll("[data-since]");
    for (var i = 0; i < clocks.length; i++) {
      var since = parseFloat(clocks[i].getAttribute("data-since"));
      if (isFinite(since)) {
        var text = duration(now - since);
        if (clocks[i].textContent !== text) {
          clocks[i].textContent = text;
        }
      }
    }
  }

  readOffset(); // as the page arrives
  tick();
  // Each poll's answer carries the server's clock too (X-Server-Time): a page restored
  // from the browser's cache has an old data-server-time.
  document.body.addEventListener("htmx:beforeSwap", function (event) {
    var xhr = event.detail && event.detail.xhr;
    var serverTime = xhr ? parseFloat(xhr.getResponseHeader("X-Server-Time")) : NaN;
    if (isFinite(serverTime)) {
      offset = serverTime - Date.now() / 1000;
    }
  });
  // At once for swapped-in content, before it is painted; then every second.
  document.body.addEventListener("htmx:load", tick);
  window.setInterval(tick, 1000);
  // Back/forward cache: the offset still holds (data-server-time does not, by then).
  window.addEventListener("pageshow", tick);
})();
