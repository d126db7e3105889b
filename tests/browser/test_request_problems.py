"""What a page says when a request it makes in place fails: htmx swaps nothing for an
error answer or a lost connection, so static/js/live.js shows the problem instead."""

from __future__ import annotations

import pytest
from django.urls import reverse
from playwright.sync_api import Page, Route, expect

from stores import ThreadStore, new_message, new_run, new_thread

pytestmark = pytest.mark.browser


def problem(page: Page):
    return page.locator("#request-problem")


def test_a_post_refused_as_expired_says_so_and_keeps_what_was_typed(
    signed_in_page: Page, live_server, thread_store: ThreadStore
):
    thread = thread_store.create_thread(new_thread())
    thread_store.append_message(thread.id, new_message(thread.id, "user", "first"))
    page = signed_in_page
    page.goto(f"{live_server.url}{reverse('thread-detail', kwargs={'thread_id': thread.id})}")
    expect(problem(page)).to_be_hidden()
    # As when the browser dropped the CSRF cookie while the page was open.
    page.context.clear_cookies(name="csrftoken")

    box = page.get_by_label("Message", exact=True)
    box.fill("a reply worth keeping")
    page.get_by_role("button", name="Post message").click()

    expect(problem(page)).to_be_visible()
    expect(problem(page)).to_contain_text("Form expired")
    expect(problem(page)).to_contain_text("reload the page and try again")
    expect(box).to_have_value("a reply worth keeping")
    assert [m.text for m in thread_store.list_messages(thread.id)] == ["first"]

    page.get_by_role("button", name="Dismiss").click()
    expect(problem(page)).to_be_hidden()

    # After a reload (a new cookie), the same post goes through and nothing shows.
    page.reload()
    page.get_by_label("Message", exact=True).fill("a reply worth keeping")
    page.get_by_role("button", name="Post message").click()
    expect(page.locator("#message-list > li.msg")).to_have_count(2)
    expect(problem(page)).to_be_hidden()


def test_a_poll_that_cannot_reach_the_server_says_so_until_it_can(
    signed_in_page: Page, live_server, thread_store: ThreadStore
):
    thread = thread_store.create_thread(new_thread())
    run = thread_store.create_run(thread.id, new_run(thread.id))  # queued: the page polls
    path = reverse("run-detail", kwargs={"thread_id": thread.id, "run_id": run.id})
    page = signed_in_page
    page.goto(f"{live_server.url}{path}")
    expect(problem(page)).to_be_hidden()

    def network_down(route: Route) -> None:
        if route.request.headers.get("hx-request") == "true":
            route.abort("connectionrefused")
        else:
            route.continue_()

    page.route(f"{live_server.url}{path}", network_down)
    expect(problem(page)).to_contain_text("Lost contact with the server")

    page.unroute(f"{live_server.url}{path}")
    expect(problem(page)).to_be_hidden()  # the next poll got through
    thread_store.cancel_run(thread.id, run.id)
    expect(page.locator("#run-live .status-line .badge")).to_have_text("cancelled")


def test_a_poll_answered_with_an_error_shows_the_servers_words(
    signed_in_page: Page, live_server, thread_store: ThreadStore
):
    thread = thread_store.create_thread(new_thread())
    run = thread_store.create_run(thread.id, new_run(thread.id))
    page = signed_in_page
    page.goto(
        f"{live_server.url}"
        f"{reverse('run-detail', kwargs={'thread_id': thread.id, 'run_id': run.id})}"
    )

    thread_store.delete_thread(thread.id)  # from another tab, say

    expect(problem(page)).to_contain_text("Page not found")
    expect(problem(page)).to_contain_text("no longer exists")
    expect(problem(page)).not_to_contain_text("Go to the list")  # the page's link is not text
