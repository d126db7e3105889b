"""The Content-Security-Policy in Chromium: the dashboard works under it (htmx posts,
swaps and polls) and the browser reports no violation on any page."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, expect

from stores import new_message, new_thread

pytestmark = pytest.mark.browser

RECORD_VIOLATIONS = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", (event) => {
  window.__cspViolations.push(event.violatedDirective + " " + event.blockedURI);
});
"""


def test_the_dashboard_works_under_the_policy_with_no_violation(
    page: Page, live_server, staff_user, password, thread_store
) -> None:
    console: list[str] = []
    page.on("console", lambda message: console.append(message.text))
    page.add_init_script(RECORD_VIOLATIONS)
    violations: list[str] = []

    def collect() -> None:
        violations.extend(page.evaluate("() => window.__cspViolations || []"))

    thread = thread_store.create_thread(new_thread({"ticket": "42"}))
    thread_store.append_message(thread.id, new_message(thread.id, "user", "first"))

    page.goto(f"{live_server.url}/accounts/login/")
    page.get_by_label("Username").fill(staff_user.get_username())
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("button", name="Sign out")).to_be_visible()
    collect()

    page.goto(f"{live_server.url}/threads/{thread.id}/")
    page.evaluate("() => { window.__notReloaded = true; }")
    page.get_by_label("Message", exact=True).fill("posted under the policy")
    page.get_by_role("button", name="Post message").click()
    expect(page.get_by_text("posted under the policy")).to_be_visible()
    assert page.evaluate("() => window.__notReloaded") is True  # htmx did it, in place
    collect()

    page.get_by_role("button", name=re.compile("Start run", re.I)).click()
    expect(page).to_have_url(re.compile(r"/runs/run_[0-9a-f]+/$"))
    expect(page.get_by_text("queued").first).to_be_visible()
    page.wait_for_timeout(1500)  # the run page polls every second: let it
    collect()

    for path in ["/", "/threads/", "/threads/?q=ticket=42", "/nowhere"]:
        page.goto(f"{live_server.url}{path}")
        page.wait_for_load_state("networkidle")
        collect()

    reported = [text for text in console if "Content Security Policy" in text]
    assert not violations and not reported, violations + reported
