"""The overview page and its live fragment, against stores built in each test."""

from __future__ import annotations

import re
import time

import pytest
from django.test import Client
from django.urls import reverse

from stores import (
    RunError,
    RunRef,
    ThreadStore,
    WorkerHeartbeat,
    new_message,
    new_run,
    new_thread,
)

pytestmark = pytest.mark.django_db

HTMX = {"HX-Request": "true"}
URL = reverse("overview")


@pytest.fixture
def viewer_client(django_user_model, password):
    user = django_user_model.objects.create_user(username="vic", password=password)
    client = Client()
    client.force_login(user)
    return client


def add_run(store: ThreadStore, status: str, *, error: RunError | None = None, age: int = 0):
    """A run on a thread of its own, brought to `status` the way the system would."""
    thread = store.create_thread(new_thread())
    run = new_run(thread.id, model=f"model-{status}")
    run.created_at -= age
    run = store.create_run(thread.id, run)
    if status == "queued":
        return run
    if status == "cancelled":
        return store.cancel_run(thread.id, run.id)
    run = store.update_run_status(thread.id, run.id, "in_progress")
    if status == "completed":
        reply = new_message(thread.id, "assistant", "done", run_id=run.id)
        return store.complete_run(thread.id, run.id, reply)
    if status == "in_progress":
        return run
    return store.update_run_status(thread.id, run.id, status, error)


def heartbeat(store: ThreadStore, *, age: float = 0.0, worker: str = "w1", running: int = 1):
    seen = time.time() - age
    store.record_heartbeat(WorkerHeartbeat(worker, "host-a", 42, "echo", 4, running, seen, seen))


def html(response) -> str:
    return response.content.decode()


def attention_rows(page: str) -> list[str]:
    table = re.search(r'<table class="attention">.*?</table>', page, re.S)
    return (
        re.findall(r"<tr>\s*<td data-label=\"Run\">.*?</tr>", table.group(0), re.S) if table else []
    )


def count_of(page: str, status: str) -> int:
    match = re.search(
        rf'<span class="badge status-{status}">{status}</span> <span class="count">(\d+)</span>',
        page,
    )
    assert match, status
    return int(match.group(1))


# ----------------------------------------------------------------------------- pages


def test_the_overview_is_the_home_page(staff_client):
    response = staff_client.get("/")

    assert response.status_code == 200
    page = html(response)
    assert "<h1>Overview</h1>" in page
    assert "<html" in page
    assert "HX-Request" in response["Vary"]


def test_an_empty_store_says_there_is_nothing_to_do(staff_client):
    page = html(staff_client.get(URL))

    assert "Nothing needs attention." in page
    assert "0 runs in all." in page
    assert "No worker has ever reported in." in page
    assert "No run worker is alive" not in page  # nothing waits, so no alarm
    assert "No runs ended in the last 24 hours" in page


def test_the_fragment_is_the_live_block_and_always_keeps_polling(staff_client, thread_store):
    add_run(thread_store, "completed")

    response = staff_client.get(URL, headers=HTMX)

    assert response.status_code == 200  # never 286: the overview can always change
    assert "HX-Request" in response["Vary"]
    page = html(response)
    assert "<html" not in page
    assert "<h1>" not in page
    opening = re.match(r"\s*(<div id=\"overview-live\"[^>]*>)", page)
    assert opening is not None
    assert 'hx-get="/"' in opening.group(1)
    assert 'hx-trigger="every 2s"' in opening.group(1)
    assert 'hx-swap="outerHTML"' in opening.group(1)
    assert "data-live" in opening.group(1)


def test_the_full_page_has_the_pause_switch_and_no_inline_script(staff_client):
    page = html(staff_client.get(URL))

    assert (
        '<button type="button" class="live-toggle" data-live-toggle aria-pressed="false" hidden>'
        in page
    )
    assert "<script>" not in page
    assert " style=" not in page


def test_viewers_see_the_overview(viewer_client, thread_store):
    add_run(thread_store, "failed")

    response = viewer_client.get(URL)

    assert response.status_code == 200
    assert len(attention_rows(html(response))) == 1


def test_the_overview_needs_a_login(client):
    response = client.get(URL)

    assert response.status_code == 302
    assert response["Location"] == f"{reverse('login')}?next=/"


def test_the_overview_only_answers_get(staff_client):
    assert staff_client.post(URL).status_code == 405


# ---------------------------------------------------------------------------- numbers


def test_counts_by_status_match_the_store(staff_client, thread_store):
    wanted = {
        "queued": 2,
        "in_progress": 1,
        "requires_action": 1,
        "completed": 3,
        "failed": 2,
        "cancelled": 1,
        "expired": 1,
    }
    for status, n in wanted.items():
        for _ in range(n):
            add_run(thread_store, status)

    page = html(staff_client.get(URL))

    for status in (
        "queued",
        "in_progress",
        "requires_action",
        "cancelling",
        "completed",
        "failed",
        "cancelled",
        "expired",
        "incomplete",
    ):
        assert count_of(page, status) == wanted.get(status, 0), status
    assert "11 runs in all." in page


def test_counts_follow_changes_made_after_the_first_look(staff_client, thread_store):
    run = add_run(thread_store, "queued")
    assert count_of(html(staff_client.get(URL, headers=HTMX)), "queued") == 1

    thread_store.cancel_run(run.thread_id, run.id)
    page = html(staff_client.get(URL, headers=HTMX))

    assert count_of(page, "queued") == 0
    assert count_of(page, "cancelled") == 1


def test_failed_expired_and_waiting_runs_need_attention(staff_client, thread_store):
    heartbeat(thread_store)  # a live worker: nothing is stuck
    failed = add_run(
        thread_store, "failed", error=RunError("server_error", "<script>boom()</script>")
    )
    expired = add_run(thread_store, "expired")
    waiting = add_run(thread_store, "requires_action")
    add_run(thread_store, "completed")
    add_run(thread_store, "cancelled")
    add_run(thread_store, "in_progress")
    add_run(thread_store, "queued", age=3600)

    page = html(staff_client.get(URL))

    rows = attention_rows(page)
    assert len(rows) == 3
    # Most recent change first.
    assert [re.search(r"<code>(run_\w+)</code>", row).group(1) for row in rows] == [
        waiting.id,
        expired.id,
        failed.id,
    ]
    assert 'Needs attention <span class="count">(3)</span>' in page
    failed_row = rows[2]
    assert '<span class="badge status-failed">failed</span>' in failed_row
    assert "&lt;script&gt;boom()&lt;/script&gt;" in failed_row
    assert "<script>boom" not in page
    url = reverse("run-detail", kwargs={"thread_id": failed.thread_id, "run_id": failed.id})
    assert f'href="{url}"' in failed_row
    assert "Waiting for tool output" in rows[0]


def test_active_runs_are_stuck_when_no_worker_is_alive(staff_client, thread_store):
    in_progress = add_run(thread_store, "in_progress")
    cancelling = add_run(thread_store, "cancelling")
    old_queued = add_run(thread_store, "queued", age=600)
    add_run(thread_store, "queued", age=10)  # just queued: not stuck yet
    heartbeat(thread_store, age=120)  # a worker that died two minutes ago

    page = html(staff_client.get(URL))

    rows = attention_rows(page)
    found = {re.search(r"<code>(run_\w+)</code>", row).group(1): row for row in rows}
    assert set(found) == {in_progress.id, cancelling.id, old_queued.id}
    assert "no worker is alive to finish it" in found[in_progress.id]
    assert "no worker is alive to finish the cancel" in found[cancelling.id]
    assert "Stuck: waiting 10 minutes with no worker alive" in found[old_queued.id]


def test_active_runs_are_not_stuck_while_a_worker_is_alive(staff_client, thread_store):
    add_run(thread_store, "in_progress")
    add_run(thread_store, "queued", age=600)
    heartbeat(thread_store, age=1)

    page = html(staff_client.get(URL))

    assert attention_rows(page) == []
    assert "Nothing needs attention." in page


def test_only_the_most_recent_runs_needing_attention_are_listed(staff_client, thread_store):
    for _ in range(23):
        add_run(thread_store, "failed")

    page = html(staff_client.get(URL))

    assert len(attention_rows(page)) == 20
    assert "The 20 most recent of 23." in page


def test_waiting_runs_without_a_live_worker_raise_a_warning(staff_client, thread_store):
    add_run(thread_store, "queued")
    add_run(thread_store, "queued")

    page = html(staff_client.get(URL))

    assert '<div class="warning-box prominent">' in page
    assert "No run worker is alive" in page
    assert "2 runs are waiting" in page
    assert '<strong class="big-number">2</strong> runs waiting for a worker.' in page


def test_a_stale_heartbeat_does_not_count_as_alive(staff_client, thread_store):
    add_run(thread_store, "queued")
    heartbeat(thread_store, age=60)

    page = html(staff_client.get(URL))

    assert "No run worker is alive" in page
    assert "none alive" in page
    assert "Last heartbeat" in page


def test_a_live_worker_is_reported_and_silences_the_warning(staff_client, thread_store):
    add_run(thread_store, "queued")
    heartbeat(thread_store, worker="w1", running=1)
    heartbeat(thread_store, worker="w2", running=2)

    page = html(staff_client.get(URL))

    assert "No run worker is alive" not in page
    assert '<span class="badge status-completed">alive</span>' in page
    assert "2 workers running 3 of 8 runs at once." in page
    assert '<strong class="big-number">1</strong> run waiting for a worker.' in page


def test_a_run_whose_record_vanished_is_still_listed(staff_client, thread_store):
    run = add_run(thread_store, "failed", error=RunError("server_error", "gone"))
    status = thread_store.root / run.thread_id / "runs" / run.id / "status.json"
    status.unlink()

    response = staff_client.get(URL)

    assert response.status_code == 200
    assert len(attention_rows(html(response))) == 1


# ------------------------------------------------------------------------------ chart


def chart_of(page: str) -> str:
    match = re.search(r"<svg class=\"chart-svg\".*?</svg>", page, re.S)
    assert match is not None
    return match.group(0)


def test_the_chart_is_inline_svg_with_a_summary(staff_client, thread_store):
    for _ in range(3):
        add_run(thread_store, "completed")
    add_run(thread_store, "failed")
    add_run(thread_store, "queued")  # not ended: not in the chart

    page = html(staff_client.get(URL))

    svg = chart_of(page)
    summary = (
        "Runs ended per hour over the last 24 hours (UTC): 4 runs (3 completed, 1 failed). "
        f"Busiest hour: {time.strftime('%H:00', time.gmtime())} UTC with 4 runs."
    )
    assert f'role="img" aria-label="{summary}"' in svg
    assert f"<title>{summary}</title>" in svg
    # One bar (this hour), two segments: completed below failed.
    assert svg.count('<g class="bar">') == 1
    segments = re.findall(r'<rect class="seg seg-(\w+)"', svg)
    assert segments == ["completed", "failed"]
    # A legend in words, with the 24-hour totals.
    assert 'seg-completed" aria-hidden="true"></span>completed <span class="count">3</span>' in page
    assert 'seg-failed" aria-hidden="true"></span>failed <span class="count">1</span>' in page
    assert "<script" not in svg


def test_an_empty_chart_says_so(staff_client, thread_store):
    add_run(thread_store, "queued")

    svg = chart_of(html(staff_client.get(URL)))

    assert "<rect" not in svg
    assert "No runs ended in the last 24 hours" in svg
    assert 'aria-label="Runs ended per hour over the last 24 hours: none ended."' in svg


def test_runs_need_not_have_been_claimed_to_count(staff_client, thread_store):
    """A run a worker never touched (cancelled while queued) still counts as cancelled."""
    run = add_run(thread_store, "queued")
    thread_store.cancel_run(run.thread_id, run.id)
    assert (
        thread_store.claim_run(
            RunRef(run.id, run.thread_id), worker_id="w", lease_seconds=5, run_timeout=60
        )
        is None
    )

    svg = chart_of(html(staff_client.get(URL)))

    assert re.findall(r'<rect class="seg seg-(\w+)"', svg) == ["cancelled"]
