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
