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

/*
 * Problems with requests made in place: htmx swaps nothing when the server answers with
 * an error or cannot be reached, so without this a failed post, button or poll would
 * look as if nothing happened. #request-problem (in base.html) says what went wrong: the
 * heading and text of the server's error page, or a plain sentence. A poll's problem
 * clears at the next poll that succeeds; a form's or button's stays until the next one
 * is sent or it is dismissed. What was typed into a form stays where it was.
 */
(function () {
  "use strict";

  var box = document.getElementById("request-problem");
  if (!box) {
    return;
  }
  var text = box.querySelector("[data-problem-text]");
  var shownFor = null; // "poll" | "action": what the problem on show came from

  function kind(event) {
    // The element that made the request: a poll's may have been swapped out by its own
    // answer, and htmx then tells the element's parent (detail.elt) instead.
    var detail = event.detail || {};
    var source = (detail.requestConfig && detail.requestConfig.elt) || detail.elt;
    return source instanceof Element && source.hasAttribute("data-live") ? "poll" : "action";
  }

  function show(message, from) {
    text.textContent = message;
    shownFor = from;
    box.hidden = false;
  }

  function clear(from) {
    if (shownFor === from) {
      box.hidden = true;
      shownFor = null;
    }
  }

  function errorPageText(xhr) {
    var type = xhr.getResponseHeader("Content-Type") || "";
    if (type.indexOf("text/html") !== 0 || !xhr.responseText) {
      return "";
    }
    // A parsed document runs no scripts; only its text is used.
    var page = new DOMParser().parseFromString(xhr.responseText, "text/html");
    var heading = page.querySelector("main h1");
    if (!heading) {
      return "";
    }
    var parts = [heading.textContent.trim() + "."];
    var paragraphs = page.querySelectorAll("main h1 ~ p");
    for (var i = 0; i < paragraphs.length; i++) {
      if (!paragraphs[i].querySelector("a")) {
        parts.push(paragraphs[i].textContent.trim());
      }
    }
    return parts.join(" ");
  }

  document.body.addEventListener("htmx:responseError", function (event) {
    var xhr = event.detail.xhr;
    show(
      errorPageText(xhr) ||
        "The server could not do this (error " + xhr.status + "). Try again in a moment.",
      kind(event)
    );
  });

  document.body.addEventListener("htmx:sendError", function (event) {
    var from = kind(event);
    show(
      from === "poll"
        ? "Lost contact with the server: this page is not being updated. It catches up " +
            "by itself once the server answers again."
        : "Could not reach the server. Check the connection, then try again.",
      from
    );
  });

  document.body.addEventListener("htmx:beforeRequest", function (event) {
    if (kind(event) === "action") {
      clear("action");
    }
  });

  document.body.addEventListener("htmx:afterRequest", function (event) {
    if (event.detail.successful && kind(event) === "poll") {
      clear("poll");
    }
  });

  box.querySelector("[data-problem-dismiss]").addEventListener("click", function () {
    box.hidden = true;
    shownFor = null;
  });
})();
