"""Runs in a real browser against the live server, executed by a real run worker."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import pytest
from django.urls import reverse
from playwright.sync_api import Page, Request, expect

from stores import RunStatus, ThreadStore, new_message, new_run, new_thread

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parents[2]
DOCS_SCREENSHOT = REPO / "docs" / "screenshots" / "run-page.png"
RUN_DONE = 30_000  # ms: a worker starts (a Django process) and the echo model replies
# Long enough to watch a slow echo stream: ~30 s of words at 0.3 s each.
LONG_MESSAGE = " ".join(f"word{n}" for n in range(100))
# How long to watch for requests that should not come: three run-page poll intervals.
QUIET_MS = 3_000


def thread_with_message(store: ThreadStore, text: str, **metadata: str):
    thread = store.create_thread(new_thread(metadata))
    store.append_message(thread.id, new_message(thread.id, "user", text))
    return thread


def run_url(live_server, thread_id: str, run_id: str) -> str:
    path = reverse("run-detail", kwargs={"thread_id": thread_id, "run_id": run_id})
    return f"{live_server.url}{path}"


def start_run_from_thread_page(page: Page, live_server, thread_id: str, **fields: str) -> str:
    """Fill in the thread page's start-a-run form and submit it; returns the run's ID."""
    page.goto(f"{live_server.url}{reverse('thread-detail', kwargs={'thread_id': thread_id})}")
    form = page.locator(f'form[action="{reverse("run-create", kwargs={"thread_id": thread_id})}"]')
    form.locator('[name="model"]').fill(fields.get("model", "echo"))
    if "instructions" in fields:
        form.locator('[name="instructions"]').fill(fields["instructions"])
    form.get_by_role("button", name="Start run").click()
    expect(page).to_have_url(re.compile(rf"/threads/{thread_id}/runs/run_[0-9a-f]+/$"))
    return page.url.rstrip("/").rsplit("/", 1)[-1]


def status_badge(page: Page):
    return page.locator("#run-live .status-line .badge")


def mark_document(page: Page) -> None:
    """Tag the loaded document: a reload or navigation would lose the tag."""
    page.evaluate("() => { window.__sameDocument = true; }")


def assert_same_document(page: Page) -> None:
    assert page.evaluate("() => window.__sameDocument === true"), "the page was reloaded"


def assert_fits_the_width(page: Page) -> None:
    overflow = page.evaluate("() => document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"the page is {overflow}px wider than the window"


def live_requests(page: Page, url: str) -> list[Request]:
    """Collects, from now on, the htmx requests for `url` (the polls of a live block)."""
    seen: list[Request] = []

    def record(request: Request) -> None:
        if request.url == url and request.headers.get("hx-request") == "true":
            seen.append(request)

    page.on("request", record)
    return seen


# ------------------------------------------------------------------------------ tests


def test_a_run_started_from_the_thread_page_completes_without_a_reload(
    signed_in_page: Page, live_server, thread_store, run_worker, output_path
):
    page = signed_in_page
    page.set_viewport_size({"width": 1100, "height": 820})
    thread = thread_with_message(
        thread_store,
        "My order #4521 arrived damaged.\nCan I get a replacement?",
        ticket="T-4521",
    )

    run_id = start_run_from_thread_page(
        page, live_server, thread.id, model="echo", instructions="Be brief and kind."
    )

    # No worker yet: the run waits, and the page says so.
    expect(status_badge(page)).to_have_text("queued")
    expect(page.get_by_text("No run worker is alive")).to_be_visible()
    expect(page.get_by_text("Be brief and kind.")).to_be_visible()
    mark_document(page)
    polls = live_requests(page, run_url(live_server, thread.id, run_id))

    run_worker(echo_delay=0.15)

    expect(status_badge(page)).to_have_text("completed", timeout=RUN_DONE)
    reply = page.locator("#run-live .reply .text-block")
    expect(reply).to_have_text("Echo: My order #4521 arrived damaged.\nCan I get a replacement?")
    steps = page.locator("#run-live table.steps tbody tr")
    expect(steps).to_have_count(1)
    expect(steps.first).to_contain_text("message_creation")
    expect(steps.first.locator(".badge")).to_have_text("completed")
    expect(page.get_by_role("button", name="Cancel run")).to_have_count(0)
    # Nothing on the page is live any more: the pause switch goes away.
    expect(page.locator("[data-live-toggle]")).to_be_hidden()
    assert_same_document(page)
    assert polls, "the run page never polled"
    assert thread_store.get_run(thread.id, run_id).status is RunStatus.COMPLETED

    page.screenshot(path=str(Path(output_path) / "run-page.png"))
    if os.environ.get("UPDATE_DOCS_SCREENSHOTS"):
        DOCS_SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(DOCS_SCREENSHOT))


def test_a_slow_run_can_be_cancelled_while_it_streams(
    signed_in_page: Page, live_server, thread_store, run_worker, output_path
):
    page = signed_in_page
    page.set_viewport_size({"width": 380, "height": 800})  # a narrow window
    thread = thread_with_message(thread_store, LONG_MESSAGE)
    run_worker(echo_delay=0.3)

    run_id = start_run_from_thread_page(page, live_server, thread.id)
    mark_document(page)

    # The reply grows while the worker streams it.
    expect(page.get_by_text("Being written…")).to_be_visible(timeout=RUN_DONE)
    expect(status_badge(page)).to_have_text("in_progress")
    text = page.locator("#run-live .reply .text-block")
    expect(text).to_contain_text("Echo: word0")
    expect(text).to_contain_text("word3")

    page.get_by_role("button", name="Cancel run").click()

    expect(page.get_by_text("Cancelling…")).to_be_visible()
    expect(status_badge(page)).to_have_text("cancelled", timeout=5_000)
    expect(page.get_by_role("button", name="Cancel run")).to_have_count(0)
    partial = page.locator("#run-live .reply-incomplete")
    expect(partial).to_contain_text("incomplete")
    expect(partial.locator(".text-block")).to_contain_text("Echo: word0")
    assert_same_document(page)
    assert_fits_the_width(page)
    page.screenshot(path=str(Path(output_path) / "run-cancelled-narrow.png"), full_page=True)

    run = thread_store.get_run(thread.id, run_id)
    assert run.status is RunStatus.CANCELLED
    last = thread_store.last_message(thread.id)
    assert last.run_id == run_id
    assert last.status == "incomplete"
    assert "word99" not in last.text


def test_polling_stops_once_the_run_has_ended(
    signed_in_page: Page, live_server, thread_store, run_worker
):
    page = signed_in_page
    thread = thread_with_message(thread_store, "ping")
    run = thread_store.create_run(thread.id, new_run(thread.id))
    url = run_url(live_server, thread.id, run.id)
    polls = live_requests(page, url)
    page.goto(url)
    with page.expect_request(lambda request: request.url == url):
        pass  # it polls while the run waits
    responses: list[int] = []
    page.on("response", lambda r: responses.append(r.status) if r.url == url else None)

    run_worker()

    expect(status_badge(page)).to_have_text("completed", timeout=RUN_DONE)
    assert 286 in responses  # the final answer told htmx to stop
    after_end = len(polls)
    page.wait_for_timeout(QUIET_MS)  # an observation window: nothing may happen in it
    assert len(polls) == after_end, f"{len(polls) - after_end} requests after the run ended"
    expect(page.locator("#run-live")).not_to_have_attribute("hx-trigger", re.compile("."))


def test_pausing_live_updates_stops_polling_until_resumed(
    signed_in_page: Page, live_server, thread_store
):
    page = signed_in_page
    thread = thread_with_message(thread_store, "nobody will answer: no worker runs")
    run = thread_store.create_run(thread.id, new_run(thread.id))
    url = run_url(live_server, thread.id, run.id)
    page.goto(url)
    toggle = page.get_by_role("button", name="Pause live updates")
    expect(toggle).to_be_visible()
    expect(toggle).to_have_attribute("aria-pressed", "false")
    with page.expect_request(lambda request: request.url == url):
        pass  # live: it polls

    polls = live_requests(page, url)
    toggle.click()

    resume = page.get_by_role("button", name="Resume live updates")
    expect(resume).to_have_attribute("aria-pressed", "true")
    page.wait_for_timeout(QUIET_MS)  # an observation window: nothing may happen in it
    assert polls == []

    # The choice holds across pages of the tab.
    page.reload()
    expect(resume).to_be_visible()
    page.wait_for_timeout(QUIET_MS)
    assert polls == []

    with page.expect_request(lambda request: request.url == url, timeout=5_000):
        resume.click()
    expect(page.get_by_role("button", name="Pause live updates")).to_be_visible()


def test_the_overview_follows_workers_and_runs_live(
    signed_in_page: Page, live_server, thread_store, run_worker, output_path
):
    page = signed_in_page
    thread = thread_with_message(thread_store, "hello")
    thread_store.create_run(thread.id, new_run(thread.id))
    page.goto(f"{live_server.url}/")
    warning = page.get_by_role("heading", name="No run worker is alive")
    expect(warning).to_be_visible()
    expect(page.get_by_role("button", name="Pause live updates")).to_be_visible()
    mark_document(page)

    run_worker()

    expect(warning).to_have_count(0, timeout=RUN_DONE)
    counts = page.locator(".status-counts")
    expect(counts.locator("li").filter(has_text="completed")).to_contain_text("1", timeout=10_000)
    expect(page.locator(".chart-svg rect.seg-completed")).to_have_count(1)
    expect(page.locator("#workers-heading + .health")).to_contain_text("alive")
    assert_same_document(page)
    page.screenshot(path=str(Path(output_path) / "overview.png"), full_page=True)
    page.set_viewport_size({"width": 380, "height": 800})
    assert_fits_the_width(page)
    page.screenshot(path=str(Path(output_path) / "overview-narrow.png"), full_page=True)


def test_without_javascript_a_run_can_be_started_and_cancelled(
    browser, live_server, thread_store, staff_user, password
):
    context = browser.new_context(java_script_enabled=False)
    page = context.new_page()
    thread = thread_with_message(thread_store, "no scripts here")
    page.goto(f"{live_server.url}/accounts/login/")
    page.get_by_label("Username").fill(staff_user.get_username())
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()

    run_id = start_run_from_thread_page(page, live_server, thread.id)
    expect(status_badge(page)).to_have_text("queued")
    # Nothing to pause without scripts: the switch stays hidden.
    expect(page.locator("[data-live-toggle]")).to_be_hidden()

    page.get_by_role("button", name="Cancel run").click()

    expect(page).to_have_url(run_url(live_server, thread.id, run_id))
    expect(page.get_by_role("status").filter(has_text="Cancelled.")).to_be_visible()
    expect(status_badge(page)).to_have_text("cancelled")

    context.close()


def test_growing_times_count_in_the_browser_even_when_its_clock_is_wrong(
    signed_in_page: Page, live_server, thread_store
):
    """ "Waiting for" counts every second in the page (polls may answer with a block
    rendered earlier), from the server's clock, not this computer's."""
    page = signed_in_page
    thread = thread_with_message(thread_store, "nobody will answer: no worker runs")
    run = new_run(thread.id)
    run.created_at -= 125
    run = thread_store.create_run(thread.id, run)
    page.clock.install(time=time.time() + 3600)  # this computer's clock is an hour fast
    page.goto(run_url(live_server, thread.id, run.id))

    waiting = page.locator("#run-live dd[data-since]")
    expect(waiting).to_have_text(re.compile(r"^2 min 0[5-8] s$"))
    page.get_by_role("button", name="Pause live updates").click()  # no polls: the page counts
    page.clock.run_for(60_000)

    expect(waiting).to_have_text(re.compile(r"^3 min 0[5-9] s$"))


def test_a_page_with_an_old_server_time_takes_the_clock_from_its_next_poll(
    signed_in_page: Page, live_server, thread_store
):
    """As a copy from the browser's cache would be: the page says the server's clock was
    an hour earlier; the first poll's X-Server-Time puts the count right."""
    page = signed_in_page
    thread = thread_with_message(thread_store, "nobody will answer: no worker runs")
    run = new_run(thread.id)
    run.created_at -= 125
    run = thread_store.create_run(thread.id, run)
    url = run_url(live_server, thread.id, run.id)

    def an_hour_old(route) -> None:
        response = route.fetch()
        body = re.sub(
            r'data-server-time="([\d.]+)"',
            lambda found: f'data-server-time="{float(found.group(1)) - 3600:.3f}"',
            response.text(),
        )
        route.fulfill(response=response, body=body)

    page.route(
        url,
        lambda route: (
            an_hour_old(route)
            if route.request.headers.get("hx-request") != "true"
            else route.continue_()
        ),
    )
    page.goto(url)

    waiting = page.locator("#run-live dd[data-since]")
    # Counted from the old time, the run seems not to have been created yet.
    expect(waiting).to_have_text("0 s")
    expect(waiting).to_have_text(re.compile(r"^2 min \d\d s$"), timeout=5_000)  # one poll on
