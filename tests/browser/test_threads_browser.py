"""The thread pages in Chromium: creating, posting, loading earlier messages, viewers."""

from __future__ import annotations

import os
import re
from dataclasses import replace
from pathlib import Path

import pytest
from django.contrib.auth.models import Group
from playwright.sync_api import Page, expect

from stores import RunStatus, new_message, new_run, new_thread

pytestmark = pytest.mark.browser

DOCS_SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "screenshots" / "thread-page.png"


def sign_in(page: Page, base_url: str, username: str, password: str) -> None:
    page.goto(f"{base_url}/accounts/login/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("button", name="Sign out")).to_be_visible()


def mark_page(page: Page) -> None:
    """Leave a marker on window: it survives htmx swaps but not a page load."""
    page.evaluate("() => { window.__threadsiteMarker = 'still here'; }")


def assert_not_reloaded(page: Page) -> None:
    assert page.evaluate("() => window.__threadsiteMarker") == "still here"


def assert_fits_the_width(page: Page) -> None:
    overflow = page.evaluate("() => document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"the page is {overflow}px wider than the window"


@pytest.fixture
def staff_page(page: Page, live_server, staff_user, password) -> Page:
    sign_in(page, live_server.url, staff_user.get_username(), password)
    return page


def test_creating_a_thread_with_metadata_and_a_first_message(staff_page: Page, live_server):
    page = staff_page
    page.get_by_role("navigation", name="Main").get_by_role("link", name="New thread").click()
    expect(page.get_by_role("heading", name="New thread")).to_be_visible()

    page.get_by_label("Key 1", exact=True).fill("ticket")
    page.get_by_label("Value 1", exact=True).fill("1234")
    page.get_by_role("button", name="Add a metadata row").click()  # works without JS
    page.get_by_label("Key 5", exact=True).fill("customer")
    page.get_by_label("Value 5", exact=True).fill("<Acme & Co>")
    page.get_by_label("First message (optional)").fill("My parcel <b>never</b> came.")
    page.get_by_role("button", name="Create thread").click()

    expect(page).to_have_url(re.compile(r"/threads/thread_[0-9a-f]{32}/$"))
    expect(page.get_by_role("status").first).to_contain_text("Thread created.")
    metadata = page.locator("#metadata")
    expect(metadata).to_contain_text("ticket")
    expect(metadata).to_contain_text("1234")
    expect(metadata).to_contain_text("<Acme & Co>")
    first = page.locator("#message-list > li.msg")
    expect(first).to_have_count(1)
    expect(first).to_contain_text("User")
    expect(first).to_contain_text("My parcel <b>never</b> came.")


def test_posting_a_message_appends_it_without_a_reload(staff_page: Page, live_server, thread_store):
    thread = thread_store.create_thread(new_thread())
    thread_store.append_message(thread.id, new_message(thread.id, "user", "first"))
    page = staff_page
    page.goto(f"{live_server.url}/threads/{thread.id}/")
    mark_page(page)

    box = page.get_by_label("Message", exact=True)
    box.fill("second <script>window.__pwned = 1</script>\nwith two lines")
    page.get_by_role("button", name="Post message").click()

    items = page.locator("#message-list > li.msg")
    expect(items).to_have_count(2)
    expect(items.nth(1)).to_contain_text("second <script>window.__pwned = 1</script>")
    expect(items.nth(1).locator(".role")).to_have_text("User")
    expect(page.get_by_label("Message", exact=True)).to_have_value("")
    assert_not_reloaded(page)
    assert page.evaluate("() => window.__pwned") is None
    assert [m.text for m in thread_store.list_messages(thread.id)][-1].startswith("second")

    # An empty message is refused in place, and still nothing reloads.
    page.get_by_role("button", name="Post message").click()
    expect(page.locator("#post-form .field-error")).to_contain_text("cannot be empty")
    expect(items).to_have_count(2)
    assert_not_reloaded(page)

    # The form still works after the error was swapped in.
    page.get_by_label("Message", exact=True).fill("third")
    page.get_by_role("button", name="Post message").click()
    expect(items).to_have_count(3)
    expect(page.locator("#post-form .field-error")).to_have_count(0)
    assert_not_reloaded(page)


def test_load_earlier_messages_inserts_them_above(staff_page: Page, live_server, thread_store):
    thread = thread_store.create_thread(new_thread())
    for i in range(120):
        thread_store.append_message(thread.id, new_message(thread.id, "user", f"message {i}"))
    page = staff_page
    page.goto(f"{live_server.url}/threads/{thread.id}/")
    mark_page(page)
    items = page.locator("#message-list > li.msg")
    expect(items).to_have_count(50)
    expect(items.first).to_contain_text("message 70")

    page.get_by_role("link", name="Load earlier messages").click()
    expect(items).to_have_count(100)
    expect(items.first).to_contain_text("message 20")
    expect(items.nth(50)).to_contain_text("message 70")

    page.get_by_role("link", name="Load earlier messages").click()
    expect(items).to_have_count(120)
    expect(items.first).to_contain_text("message 0")
    expect(items.last).to_contain_text("message 119")
    expect(page.get_by_text("This is the start of the thread.")).to_be_visible()
    expect(page.get_by_role("link", name="Load earlier messages")).to_have_count(0)
    assert_not_reloaded(page)


def test_the_reply_appears_when_the_run_ends(staff_page: Page, live_server, thread_store):
    thread = thread_store.create_thread(new_thread())
    thread_store.append_message(thread.id, new_message(thread.id, "user", "ping"))
    run = thread_store.create_run(thread.id, new_run(thread.id))
    page = staff_page
    page.goto(f"{live_server.url}/threads/{thread.id}/")
    mark_page(page)
    runs = page.locator("#thread-runs")
    expect(runs).to_contain_text("A run is active")
    expect(runs.locator(".run-list .badge")).to_have_text("queued")
    page.get_by_label("Message", exact=True).fill("too soon")
    page.get_by_role("button", name="Post message").click()
    expect(page.locator("#post-form")).to_contain_text("Not posted: a run is active")

    thread_store.claim_run(
        thread_store.queued_runs()[0], worker_id="test", lease_seconds=30, run_timeout=600
    )
    reply = new_message(thread.id, "assistant", "pong", run_id=run.id)
    thread_store.complete_run(thread.id, run.id, reply)

    expect(runs.locator(".run-list .badge")).to_have_text("completed", timeout=10_000)
    expect(runs).not_to_contain_text("A run is active")
    items = page.locator("#message-list > li.msg")
    expect(items).to_have_count(2)
    expect(items.last.locator(".role")).to_have_text("Assistant")
    expect(items.last).to_contain_text("pong")
    assert_not_reloaded(page)

    # The 286 answer stopped the polling: no more requests for the panel.
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    page.wait_for_timeout(2500)  # longer than one poll interval, to see that none comes
    assert [url for url in requests if f"/threads/{thread.id}/" in url] == []


def test_a_viewer_sees_no_forms_and_cannot_post(
    page: Page, live_server, django_user_model, password, thread_store
):
    viewer = django_user_model.objects.create_user(username="vic", password=password, is_staff=True)
    viewer.groups.add(Group.objects.get_or_create(name="viewers")[0])
    thread = thread_store.create_thread(new_thread({"ticket": "7"}))
    thread_store.append_message(thread.id, new_message(thread.id, "user", "visible to all"))
    sign_in(page, live_server.url, "vic", password)

    page.goto(f"{live_server.url}/threads/{thread.id}/")

    expect(page.locator("#message-list")).to_contain_text("visible to all")
    expect(page.locator("#metadata")).to_contain_text("ticket")
    expect(page.get_by_label("Message", exact=True)).to_have_count(0)
    expect(page.get_by_role("button", name="Post message")).to_have_count(0)
    expect(page.get_by_role("button", name="Start run")).to_have_count(0)
    expect(page.get_by_text("Edit metadata")).to_have_count(0)
    expect(page.get_by_role("link", name="New thread")).to_have_count(0)

    token = page.locator("body").get_attribute("hx-headers")
    csrf = re.search(r'"x-csrftoken": "([^"]+)"', token).group(1)
    response = page.request.post(
        f"{live_server.url}/threads/{thread.id}/messages",
        form={"text": "sneaky"},
        headers={"X-CSRFToken": csrf},
        max_redirects=0,
    )
    assert response.status == 403
    assert "Not allowed" in response.text()
    assert [m.text for m in thread_store.list_messages(thread.id)] == ["visible to all"]


def test_thread_pages_fit_a_laptop_and_a_narrow_window(
    staff_page: Page, live_server, thread_store, output_path
):
    thread = thread_store.create_thread(
        new_thread({"ticket": "4411", "customer": "maria@example.com", "channel": "email"})
    )
    for role, text in [
        ("user", "Hi, my order #4411 never arrived. Tracking says delivered, but nothing is here."),
        ("assistant", "I'm sorry to hear that. Could you confirm the delivery address?"),
        ("user", "12 Harbour Road, Flat 3.\nIt should have been left with the concierge."),
    ]:
        thread_store.append_message(thread.id, new_message(thread.id, role, text))
    run = thread_store.create_run(
        thread.id, replace(new_run(thread.id), status=RunStatus.COMPLETED)
    )
    thread_store.append_message(
        thread.id,
        new_message(
            thread.id, "assistant", "Thanks: I have opened a claim with the courier.", run_id=run.id
        ),
    )
    page = staff_page
    page.set_viewport_size({"width": 1280, "height": 900})
    page.goto(f"{live_server.url}/threads/{thread.id}/")
    if os.environ.get("UPDATE_DOCS_SCREENSHOTS"):
        DOCS_SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(DOCS_SCREENSHOT))

    # An unbroken string must wrap, not widen the page.
    thread_store.append_message(thread.id, new_message(thread.id, "user", "x" * 300))
    for width, height in [(1280, 900), (380, 800)]:
        page.set_viewport_size({"width": width, "height": height})
        for url in [f"/threads/{thread.id}/", "/threads/", "/threads/new"]:
            page.goto(live_server.url + url)
            assert_fits_the_width(page)
        page.goto(f"{live_server.url}/threads/{thread.id}/")
        shot = Path(output_path) / f"thread-page-{width}.png"
        page.screenshot(path=str(shot), full_page=True)
