"""The run views: start a run, its page and live fragment, cancel."""

from __future__ import annotations

import re
import time

import pytest
from django.contrib.auth.models import Group
from django.contrib.messages import get_messages
from django.test import Client
from django.urls import reverse

from stores import (
    RunError,
    RunRef,
    RunStatus,
    RunUsage,
    ThreadStore,
    WorkerHeartbeat,
    new_message,
    new_run,
    new_step,
    new_thread,
)
from threadsite.dashboard.permissions import READ_ONLY_MESSAGE, VIEWERS_GROUP

pytestmark = pytest.mark.django_db

HTMX = {"HX-Request": "true"}
UNSAFE_IDS = ["..%2Fetc", "thread_x%00", "a" * 300, ".hidden", "-dash"]
TERMINAL = ["completed", "failed", "cancelled", "expired", "incomplete"]


# ---------------------------------------------------------------------------- helpers


@pytest.fixture
def viewer_client(django_user_model, password):
    """A signed-in account that may look but not change: not staff."""
    user = django_user_model.objects.create_user(username="vic", password=password)
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def staff_viewer_client(django_user_model, password):
    """A staff account in the viewers group: also read-only."""
    user = django_user_model.objects.create_user(username="sam", password=password, is_staff=True)
    user.groups.add(Group.objects.get_or_create(name=VIEWERS_GROUP)[0])
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def thread(thread_store: ThreadStore):
    created = thread_store.create_thread(new_thread({"ticket": "T-1"}))
    thread_store.append_message(created.id, new_message(created.id, "user", "Hello there"))
    return created


def start(store: ThreadStore, thread_id: str, **kwargs):
    return store.create_run(thread_id, new_run(thread_id, **kwargs))


def detail_url(run) -> str:
    return reverse("run-detail", kwargs={"thread_id": run.thread_id, "run_id": run.id})


def cancel_url(run) -> str:
    return reverse("run-cancel", kwargs={"thread_id": run.thread_id, "run_id": run.id})


def create_url(thread_id: str) -> str:
    return reverse("run-create", kwargs={"thread_id": thread_id})


def running(store: ThreadStore, run, *, worker: str | None = None):
    """Put `run` in progress: claimed by `worker` (a live lease), or just marked."""
    if worker:
        claimed = store.claim_run(
            RunRef(run.id, run.thread_id), worker_id=worker, lease_seconds=60, run_timeout=600
        )
        assert claimed is not None
        return claimed
    return store.update_run_status(run.thread_id, run.id, "in_progress")


def completed(store: ThreadStore, run, text: str = "Echo: Hello there", usage=None):
    running(store, run)
    step = store.append_step(run.thread_id, run.id, new_step(run.thread_id, run.id))
    message = new_message(run.thread_id, "assistant", text, run_id=run.id)
    store.complete_run(run.thread_id, run.id, message, usage=usage)
    return step, message


def ended(store: ThreadStore, run, status: str):
    if status == "completed":
        completed(store, run)
    else:
        running(store, run)
        store.update_run_status(run.thread_id, run.id, status)
    return store.get_run(run.thread_id, run.id)


def html(response) -> str:
    return response.content.decode()


def badge(status: str) -> str:
    return f'<span class="badge status-{status}">{status}</span>'


# ------------------------------------------------------------------------- run_create


def test_starting_a_run_queues_it_and_goes_to_its_page(staff_client, thread_store, thread):
    response = staff_client.post(
        create_url(thread.id), {"model": "echo", "instructions": "Be brief.\nBe kind."}
    )

    run = thread_store.latest_run(thread.id)
    assert run is not None
    assert response.status_code == 302
    assert response["Location"] == detail_url(run)
    assert run.status is RunStatus.QUEUED
    assert run.model == "echo"
    assert run.instructions == "Be brief.\nBe kind."
    assert [ref.run_id for ref in thread_store.queued_runs()] == [run.id]


def test_starting_a_run_with_htmx_redirects_the_browser(staff_client, thread_store, thread):
    response = staff_client.post(create_url(thread.id), {"model": "gpt-x"}, headers=HTMX)

    run = thread_store.latest_run(thread.id)
    assert response.status_code == 200
    assert response["HX-Redirect"] == detail_url(run)
    assert run.model == "gpt-x"
    assert run.instructions is None


def test_blank_instructions_are_stored_as_none(staff_client, thread_store, thread):
    staff_client.post(create_url(thread.id), {"model": "echo", "instructions": "  \n "})

    assert thread_store.latest_run(thread.id).instructions is None


@pytest.mark.parametrize(
    ("data", "error"),
    [
        ({"model": ""}, "Name the model that should answer"),
        ({"model": "m" * 257}, "A model name is at most 256 characters."),
        ({"model": "bad\x07name"}, "cannot contain control characters"),
        (
            {"model": "echo", "instructions": "x" * 32_001},
            "Instructions are at most 32,000 characters (these have 32001).",
        ),
    ],
)
def test_bad_input_is_shown_on_the_form_without_javascript(
    staff_client, thread_store, thread, data, error
):
    response = staff_client.post(create_url(thread.id), data)

    assert response.status_code == 400
    page = html(response)
    assert "<h1>Start a run</h1>" in page
    assert error in page
    assert 'aria-invalid="true"' in page
    assert thread_store.latest_run(thread.id) is None


def test_bad_input_with_htmx_replaces_the_posting_form(staff_client, thread_store, thread):
    response = staff_client.post(
        create_url(thread.id), {"model": "", "instructions": "<b>keep me</b>"}, headers=HTMX
    )

    assert response.status_code == 200
    assert response["HX-Retarget"] == "closest form"
    assert response["HX-Reswap"] == "outerHTML"
    page = html(response)
    assert "<html" not in page
    assert page.lstrip().startswith("<form")
    assert "Name the model that should answer" in page
    assert "&lt;b&gt;keep me&lt;/b&gt;" in page  # what was typed comes back, escaped
    assert 'name="csrfmiddlewaretoken"' in page
    assert thread_store.latest_run(thread.id) is None


def test_the_longest_instructions_are_accepted(staff_client, thread_store, thread):
    response = staff_client.post(
        create_url(thread.id), {"model": "echo", "instructions": "y" * 32_000}
    )

    assert response.status_code == 302
    assert thread_store.latest_run(thread.id).instructions == "y" * 32_000


def test_a_busy_thread_sends_you_back_with_a_notice(staff_client, thread_store, thread):
    active = start(thread_store, thread.id)

    response = staff_client.post(create_url(thread.id), {"model": "echo"})

    assert response.status_code == 302
    assert response["Location"] == reverse("thread-detail", kwargs={"thread_id": thread.id})
    notices = [str(m) for m in get_messages(response.wsgi_request)]
    assert notices == [
        f"This thread already has an active run ({active.id}): wait for it to end or cancel "
        "it, then start a new one."
    ]
    assert [run.id for run in thread_store.list_runs(thread.id)] == [active.id]


def test_a_busy_thread_with_htmx_shows_the_message_in_the_form(staff_client, thread_store, thread):
    active = start(thread_store, thread.id)

    response = staff_client.post(create_url(thread.id), {"model": "echo"}, headers=HTMX)

    assert response.status_code == 200
    page = html(response)
    assert 'role="alert"' in page
    assert f"This thread already has an active run ({active.id})" in page
    assert f'href="{detail_url(active)}"' in page
    assert len(thread_store.list_runs(thread.id)) == 1


def test_a_run_can_start_once_the_previous_one_ended(staff_client, thread_store, thread):
    ended(thread_store, start(thread_store, thread.id), "completed")

    response = staff_client.post(create_url(thread.id), {"model": "echo"})

    assert response.status_code == 302
    assert len(thread_store.list_runs(thread.id)) == 2


@pytest.mark.parametrize("client_name", ["viewer_client", "staff_viewer_client"])
def test_viewers_cannot_start_runs(request, client_name, thread_store, thread):
    client = request.getfixturevalue(client_name)

    response = client.post(create_url(thread.id), {"model": "echo"})

    assert response.status_code == 403
    assert READ_ONLY_MESSAGE in html(response)
    assert thread_store.latest_run(thread.id) is None


def test_starting_a_run_needs_a_csrf_token(staff_user, thread_store, thread):
    client = Client(enforce_csrf_checks=True)
    client.force_login(staff_user)

    response = client.post(create_url(thread.id), {"model": "echo"})

    assert response.status_code == 403
    assert thread_store.latest_run(thread.id) is None


def test_starting_a_run_needs_a_login(client, thread_store, thread):
    response = client.post(create_url(thread.id), {"model": "echo"})

    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))
    assert thread_store.latest_run(thread.id) is None


def test_starting_a_run_only_answers_post(staff_client, thread):
    assert staff_client.get(create_url(thread.id)).status_code == 405


@pytest.mark.parametrize("thread_id", ["thread_missing", *UNSAFE_IDS])
def test_starting_a_run_on_an_unknown_or_unsafe_thread_is_404(staff_client, thread_id):
    response = staff_client.post(f"/threads/{thread_id}/runs", {"model": "echo"})

    assert response.status_code == 404
    assert "<h1>Page not found</h1>" in html(response)


# ------------------------------------------------------------------------- run_detail


def test_the_run_page_shows_the_run(staff_client, thread_store, thread):
    run = start(thread_store, thread.id, model="echo", instructions="Line one\nLine two")

    response = staff_client.get(detail_url(run))

    assert response.status_code == 200
    page = html(response)
    assert f"<h1>Run <code>{run.id}</code></h1>" in page
    assert badge("queued") in page
    assert "<code>echo</code>" in page
    assert "Line one\nLine two" in page
    assert f'href="{reverse("thread-detail", kwargs={"thread_id": thread.id})}"' in page
    assert "No reply yet: the run has not started." in page
    assert "No steps yet." in page
    assert "<html" in page


def test_the_run_page_varies_on_hx_request(staff_client, thread_store, thread):
    run = start(thread_store, thread.id)

    for headers in ({}, HTMX):
        response = staff_client.get(detail_url(run), headers=headers)
        assert "HX-Request" in response["Vary"]


def test_an_active_run_polls_its_live_block(staff_client, thread_store, thread):
    run = start(thread_store, thread.id)

    page = html(staff_client.get(detail_url(run)))

    live = re.search(r'<section id="run-live"[^>]*>', page).group(0)
    assert f'hx-get="{detail_url(run)}"' in live
    assert 'hx-trigger="every 1s"' in live
    assert 'hx-swap="outerHTML"' in live
    assert "data-live" in live
    assert "data-live-toggle" in page
    assert "<script>" not in page  # no inline scripts: a strict CSP comes later


def test_the_fragment_is_the_live_block_alone(staff_client, thread_store, thread):
    run = start(thread_store, thread.id)

    response = staff_client.get(detail_url(run), headers=HTMX)

    assert response.status_code == 200
    page = html(response)
    assert "<html" not in page
    assert "<h1>" not in page
    assert page.lstrip().startswith('<section id="run-live"')
    assert 'hx-trigger="every 1s"' in page
    assert badge("queued") in page


@pytest.mark.parametrize("status", ["in_progress", "requires_action", "cancelling"])
def test_the_fragment_keeps_polling_while_the_run_is_active(
    staff_client, thread_store, thread, status
):
    run = running(thread_store, start(thread_store, thread.id), worker="w1")
    if status != "in_progress":
        run = thread_store.update_run_status(thread.id, run.id, status)

    response = staff_client.get(detail_url(run), headers=HTMX)

    assert response.status_code == 200
    assert 'hx-trigger="every 1s"' in html(response)
    assert badge(status) in html(response)


@pytest.mark.parametrize("status", TERMINAL)
def test_the_fragment_stops_polling_once_the_run_ended(staff_client, thread_store, thread, status):
    run = ended(thread_store, start(thread_store, thread.id), status)

    response = staff_client.get(detail_url(run), headers=HTMX)

    assert response.status_code == 286
    page = html(response)
    assert badge(status) in page
    assert "hx-trigger" not in page
    assert "data-live" not in page


@pytest.mark.parametrize("status", TERMINAL)
def test_an_ended_run_page_does_not_poll(staff_client, thread_store, thread, status):
    run = ended(thread_store, start(thread_store, thread.id), status)

    response = staff_client.get(detail_url(run))

    assert response.status_code == 200
    page = html(response)
    assert "hx-trigger" not in page
    assert "data-live-toggle" not in page


def test_the_growing_text_shows_while_the_run_streams(staff_client, thread_store, thread):
    run = running(thread_store, start(thread_store, thread.id), worker="w1")
    thread_store.append_step(thread.id, run.id, new_step(thread.id, run.id))
    thread_store.write_draft(thread.id, run.id, "Echo: <script>alert(1)</script>\nsecond")

    page = html(staff_client.get(detail_url(run), headers=HTMX))

    assert "Being written…" in page
    assert "Echo: &lt;script&gt;alert(1)&lt;/script&gt;\nsecond" in page
    assert "<script>alert(1)</script>" not in page


def test_a_running_run_without_text_yet_says_so(staff_client, thread_store, thread):
    run = running(thread_store, start(thread_store, thread.id), worker="w1")

    page = html(staff_client.get(detail_url(run), headers=HTMX))

    assert "Waiting for the first words…" in page


def test_a_completed_run_shows_its_reply_steps_and_usage(staff_client, thread_store, thread):
    run = start(thread_store, thread.id)
    step, message = completed(
        thread_store, run, "Echo: <b>bold</b>", usage=RunUsage(prompt_tokens=7, completion_tokens=3)
    )

    response = staff_client.get(detail_url(run))

    page = html(response)
    assert badge("completed") in page
    assert "Echo: &lt;b&gt;bold&lt;/b&gt;" in page
    assert "Being written" not in page
    assert "10 (7 prompt, 3 completion)" in page
    row = re.search(rf"<tr>\s*<td data-label=\"Step\"><code>{step.id}</code>.*?</tr>", page, re.S)
    assert row is not None
    assert "message_creation" in row.group(0)
    assert badge("completed") in row.group(0)
    assert f"<code>{message.id}</code>" in row.group(0)


def test_the_reply_is_found_among_later_messages(staff_client, thread_store, thread):
    run = start(thread_store, thread.id)
    completed(thread_store, run, "The right reply")
    for n in range(120):
        thread_store.append_message(thread.id, new_message(thread.id, "user", f"later {n}"))

    page = html(staff_client.get(detail_url(run)))

    assert "The right reply" in page


def test_without_a_step_the_reply_is_found_by_its_run_id(staff_client, thread_store, thread):
    run = running(thread_store, start(thread_store, thread.id))
    other = new_message(thread.id, "assistant", "Someone else's", run_id="run_other")
    thread_store.append_message(thread.id, other)
    thread_store.complete_run(
        thread.id, run.id, new_message(thread.id, "assistant", "Mine", run_id=run.id)
    )
    thread_store.append_message(thread.id, new_message(thread.id, "assistant", "Unrelated"))

    page = html(staff_client.get(detail_url(run)))

    assert '<div class="text-block">Mine</div>' in page
    assert "Someone else" not in page


def test_a_cancelled_run_labels_its_partial_text_incomplete(staff_client, thread_store, thread):
    run = running(thread_store, start(thread_store, thread.id), worker="w1")
    thread_store.append_step(thread.id, run.id, new_step(thread.id, run.id))
    thread_store.cancel_run(thread.id, run.id)
    partial = new_message(thread.id, "assistant", "Echo: half a", run_id=run.id)
    thread_store.finish_run(thread.id, run.id, "cancelled", partial=partial)

    response = staff_client.get(detail_url(run), headers=HTMX)

    assert response.status_code == 286
    page = html(response)
    assert badge("cancelled") in page
    assert badge("incomplete") in page
    assert "The run ended before the reply was finished" in page
    assert "Echo: half a" in page


def test_a_run_that_wrote_nothing_says_so(staff_client, thread_store, thread):
    run = ended(thread_store, start(thread_store, thread.id), "expired")

    page = html(staff_client.get(detail_url(run)))

    assert "This run wrote no reply." in page


def test_the_last_error_is_shown_escaped(staff_client, thread_store, thread):
    run = running(thread_store, start(thread_store, thread.id))
    thread_store.append_step(thread.id, run.id, new_step(thread.id, run.id))
    error = RunError("rate_limit_exceeded", "<script>alert('x')</script> try later")
    thread_store.finish_run(thread.id, run.id, "failed", error)

    page = html(staff_client.get(detail_url(run)))

    assert badge("failed") in page
    assert "<code>rate_limit_exceeded</code>" in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; try later" in page
    assert "<script>alert" not in page
    # The failed step carries the error too.
    assert page.count("rate_limit_exceeded") == 2


def test_model_and_instructions_are_escaped(staff_client, thread_store, thread):
    run = start(thread_store, thread.id, model="<i>m</i>", instructions="<img src=x onerror=1>")

    page = html(staff_client.get(detail_url(run)))

    assert "&lt;i&gt;m&lt;/i&gt;" in page
    assert "&lt;img src=x onerror=1&gt;" in page
    assert "<img src=x" not in page


def test_times_are_utc_and_the_duration_is_shown(staff_client, thread_store, thread):
    run = running(thread_store, start(thread_store, thread.id))
    thread_store.update_run_status(thread.id, run.id, "failed")
    record = thread_store.get_run(thread.id, run.id)
    stamp = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(record.created_at))
    iso = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(record.created_at))

    page = html(staff_client.get(detail_url(run)))

    assert f'<time datetime="{iso}">{stamp}</time>' in page
    assert "<dt>Duration</dt><dd>" in page
    assert re.search(r"<dt>Duration</dt><dd>\d+ s</dd>", page)


def test_a_queued_run_with_no_worker_alive_warns(staff_client, thread_store, thread):
    run = start(thread_store, thread.id)

    assert "No run worker is alive" in html(staff_client.get(detail_url(run)))

    thread_store.record_heartbeat(
        WorkerHeartbeat("w1", "host", 1, "echo", 4, 0, time.time(), time.time())
    )
    assert "No run worker is alive" not in html(staff_client.get(detail_url(run)))


@pytest.mark.parametrize("status", ["queued", "in_progress", "requires_action"])
def test_staff_see_a_cancel_form_while_the_run_can_be_cancelled(
    staff_client, thread_store, thread, status
):
    run = start(thread_store, thread.id)
    if status != "queued":
        run = running(thread_store, run, worker="w1")
        run = thread_store.update_run_status(thread.id, run.id, status)

    page = html(staff_client.get(detail_url(run)))

    form = re.search(r"<form class=\"cancel-form\".*?</form>", page, re.S)
    assert form is not None
    assert 'method="post"' in form.group(0)
    assert f'action="{cancel_url(run)}"' in form.group(0)
    assert f'hx-post="{cancel_url(run)}"' in form.group(0)
    assert 'name="csrfmiddlewaretoken"' in form.group(0)
    assert ">Cancel run</button>" in form.group(0)


def test_a_cancelling_run_says_so_instead_of_a_button(staff_client, thread_store, thread):
    run = running(thread_store, start(thread_store, thread.id), worker="w1")
    thread_store.cancel_run(thread.id, run.id)

    page = html(staff_client.get(detail_url(run)))

    assert badge("cancelling") in page
    assert "Cancelling…" in page
    assert "Cancel run</button>" not in page


@pytest.mark.parametrize("status", TERMINAL)
def test_an_ended_run_has_no_cancel_button(staff_client, thread_store, thread, status):
    run = ended(thread_store, start(thread_store, thread.id), status)

    assert "Cancel run</button>" not in html(staff_client.get(detail_url(run)))


def test_viewers_see_the_run_without_a_cancel_button(viewer_client, thread_store, thread):
    run = start(thread_store, thread.id, instructions="Visible to viewers")

    response = viewer_client.get(detail_url(run))

    assert response.status_code == 200
    assert "Visible to viewers" in html(response)
    assert "Cancel run</button>" not in html(response)


def test_the_run_page_needs_a_login(client, thread_store, thread):
    run = start(thread_store, thread.id)

    response = client.get(detail_url(run))

    assert response.status_code == 302
    assert response["Location"] == f"{reverse('login')}?next={detail_url(run)}"


def test_an_unknown_run_is_404(staff_client, thread_store, thread):
    other = thread_store.create_thread(new_thread())
    run = start(thread_store, other.id)

    for url in (
        f"/threads/{thread.id}/runs/run_missing/",
        f"/threads/thread_missing/runs/{run.id}/",
        f"/threads/{thread.id}/runs/{run.id}/",  # a run of another thread
    ):
        response = staff_client.get(url)
        assert response.status_code == 404, url
        assert "<h1>Page not found</h1>" in html(response)


@pytest.mark.parametrize("bad", UNSAFE_IDS)
def test_unsafe_ids_are_404(staff_client, thread_store, thread, bad):
    run = start(thread_store, thread.id)

    assert staff_client.get(f"/threads/{bad}/runs/{run.id}/").status_code == 404
    assert staff_client.get(f"/threads/{thread.id}/runs/{bad}/").status_code == 404
    assert staff_client.get(f"/threads/{thread.id}/runs/{bad}/", headers=HTMX).status_code == 404
    assert staff_client.post(f"/threads/{thread.id}/runs/{bad}/cancel").status_code == 404


def test_the_run_page_only_answers_get(staff_client, thread_store, thread):
    run = start(thread_store, thread.id)

    assert staff_client.post(detail_url(run)).status_code == 405


# ------------------------------------------------------------------------- run_cancel


def test_cancelling_a_queued_run_without_javascript(staff_client, thread_store, thread):
    run = start(thread_store, thread.id)

    response = staff_client.post(cancel_url(run))

    assert response.status_code == 302
    assert response["Location"] == detail_url(run)
    assert [str(m) for m in get_messages(response.wsgi_request)] == ["Cancelled."]
    assert thread_store.get_run(thread.id, run.id).status is RunStatus.CANCELLED


def test_the_notice_shows_on_the_run_page_after_the_redirect(staff_client, thread_store, thread):
    run = start(thread_store, thread.id)

    response = staff_client.post(cancel_url(run), follow=True)

    page = html(response)
    assert "Cancelled." in page
    assert badge("cancelled") in page


def test_cancelling_a_queued_run_with_htmx_shows_the_final_state(
    staff_client, thread_store, thread
):
    run = start(thread_store, thread.id)

    response = staff_client.post(cancel_url(run), headers=HTMX)

    assert response.status_code == 286
    page = html(response)
    assert page.lstrip().startswith('<section id="run-live"')
    assert badge("cancelled") in page
    assert '<p class="notice" role="status">Cancelled.</p>' in page
    assert "hx-trigger" not in page
    assert "Cancel run</button>" not in page


def test_cancelling_a_running_run_shows_cancelling_and_keeps_polling(
    staff_client, thread_store, thread
):
    run = running(thread_store, start(thread_store, thread.id), worker="w1")

    response = staff_client.post(cancel_url(run), headers=HTMX)

    assert response.status_code == 200
    page = html(response)
    assert badge("cancelling") in page
    assert "Cancelling…" in page
    assert "Cancel run</button>" not in page
    # It polls the run page's URL, not the cancel URL it was served from.
    assert f'hx-get="{detail_url(run)}"' in page
    assert 'hx-trigger="every 1s"' in page
    assert thread_store.get_run(thread.id, run.id).status is RunStatus.CANCELLING


def test_a_running_run_whose_worker_is_gone_is_cancelled_at_once(
    staff_client, thread_store, thread
):
    run = running(thread_store, start(thread_store, thread.id))  # no lease: no worker holds it

    response = staff_client.post(cancel_url(run), headers=HTMX)

    assert response.status_code == 286
    assert badge("cancelled") in html(response)


@pytest.mark.parametrize("status", TERMINAL)
def test_cancelling_an_ended_run_shows_its_final_state_and_a_notice(
    staff_client, thread_store, thread, status
):
    run = ended(thread_store, start(thread_store, thread.id), status)

    response = staff_client.post(cancel_url(run), headers=HTMX)

    assert response.status_code == 286
    page = html(response)
    assert f"This run had already ended: {status}." in page
    assert badge(status) in page
    assert thread_store.get_run(thread.id, run.id).status == status


def test_cancelling_an_ended_run_without_javascript(staff_client, thread_store, thread):
    run = ended(thread_store, start(thread_store, thread.id), "completed")

    response = staff_client.post(cancel_url(run))

    assert response.status_code == 302
    assert response["Location"] == detail_url(run)
    notices = [str(m) for m in get_messages(response.wsgi_request)]
    assert notices == ["This run had already ended: completed."]


@pytest.mark.parametrize("client_name", ["viewer_client", "staff_viewer_client"])
def test_viewers_cannot_cancel(request, client_name, thread_store, thread):
    client = request.getfixturevalue(client_name)
    run = start(thread_store, thread.id)

    response = client.post(cancel_url(run))

    assert response.status_code == 403
    assert READ_ONLY_MESSAGE in html(response)
    assert thread_store.get_run(thread.id, run.id).status is RunStatus.QUEUED


def test_cancelling_needs_a_csrf_token(staff_user, thread_store, thread):
    client = Client(enforce_csrf_checks=True)
    client.force_login(staff_user)
    run = start(thread_store, thread.id)

    response = client.post(cancel_url(run), headers=HTMX)

    assert response.status_code == 403
    assert thread_store.get_run(thread.id, run.id).status is RunStatus.QUEUED


def test_cancelling_with_the_pages_csrf_token_works(staff_user, thread_store, thread):
    client = Client(enforce_csrf_checks=True)
    client.force_login(staff_user)
    run = start(thread_store, thread.id)
    page = html(client.get(detail_url(run)))
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)

    response = client.post(cancel_url(run), {"csrfmiddlewaretoken": token})

    assert response.status_code == 302
    assert thread_store.get_run(thread.id, run.id).status is RunStatus.CANCELLED


def test_cancelling_needs_a_login(client, thread_store, thread):
    run = start(thread_store, thread.id)

    response = client.post(cancel_url(run))

    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))
    assert thread_store.get_run(thread.id, run.id).status is RunStatus.QUEUED


def test_cancel_only_answers_post(staff_client, thread_store, thread):
    run = start(thread_store, thread.id)

    assert staff_client.get(cancel_url(run)).status_code == 405


def test_cancelling_an_unknown_run_is_404(staff_client, thread):
    response = staff_client.post(f"/threads/{thread.id}/runs/run_missing/cancel")

    assert response.status_code == 404


# --------------------------------------------- polls answered from the last live block


def test_an_unchanged_run_gets_the_same_block_without_rendering_it_again(
    staff_client, thread_store, thread, monkeypatch
):
    from threadsite.dashboard import runs as run_views

    run = running(thread_store, start(thread_store, thread.id), worker="w1")
    first = html(staff_client.get(detail_url(run), headers=HTMX))
    renders = []
    real_run_page = run_views.run_page
    monkeypatch.setattr(
        run_views, "run_page", lambda *a, **k: renders.append(1) or real_run_page(*a, **k)
    )

    again = staff_client.get(detail_url(run), headers=HTMX)

    assert again.status_code == 200
    assert html(again) == first
    assert renders == []
    assert "HX-Request" in again["Vary"]


def test_a_settled_unchanged_run_is_not_read_again(
    staff_client, thread_store, thread, stats_settle_fast, store_calls
):
    run = running(thread_store, start(thread_store, thread.id), worker="w1")
    time.sleep(stats_settle_fast)
    first = html(staff_client.get(detail_url(run), headers=HTMX))
    reads = store_calls("run_view")

    for _ in range(3):
        again = staff_client.get(detail_url(run), headers=HTMX)
        assert again.status_code == 200 and html(again) == first

    assert reads == []
    full_page = staff_client.get(detail_url(run))  # the page itself always reads
    assert full_page.status_code == 200 and reads == [(thread.id, run.id)]


@pytest.mark.parametrize("settled", [False, True], ids=["fresh", "settled"])
@pytest.mark.parametrize(
    "change",
    ["draft", "step", "status", "worker-ends-it"],
)
def test_any_change_to_the_run_shows_at_the_next_poll(
    staff_client, thread_store, thread, settings, change, settled, stats_settle_fast, store_calls
):
    run = running(thread_store, start(thread_store, thread.id), worker="w1")
    thread_store.write_draft(thread.id, run.id, "Echo: Hel", worker_id="w1")
    assert "Echo: Hel" in html(staff_client.get(detail_url(run), headers=HTMX))
    if settled:  # the next poll reads it once more, and the one after not at all
        time.sleep(stats_settle_fast)
        staff_client.get(detail_url(run), headers=HTMX)
        reads = store_calls("run_view")
        assert "Echo: Hel" in html(staff_client.get(detail_url(run), headers=HTMX))
        assert reads == []
    elsewhere = ThreadStore(settings.THREADSITE_STORE_ROOT)  # as another process would

    if change == "draft":
        elsewhere.write_draft(thread.id, run.id, "Echo: Hello th", worker_id="w1")
        expected, status = "Echo: Hello th", 200
    elif change == "step":
        step = elsewhere.append_step(thread.id, run.id, new_step(thread.id, run.id))
        expected, status = step.id, 200
    elif change == "status":
        elsewhere.update_run_status(thread.id, run.id, "requires_action")
        expected, status = badge("requires_action"), 200
    else:
        message = new_message(thread.id, "assistant", "Echo: Hello there", run_id=run.id)
        elsewhere.complete_run(thread.id, run.id, message)
        expected, status = "Echo: Hello there", 286

    response = staff_client.get(detail_url(run), headers=HTMX)

    assert response.status_code == status
    assert expected in html(response)


def test_staff_and_viewers_polling_one_run_each_get_their_own_block(
    staff_client, viewer_client, thread_store, thread
):
    run = running(thread_store, start(thread_store, thread.id), worker="w1")
    for _ in range(2):
        assert 'id="cancel-run"' in html(staff_client.get(detail_url(run), headers=HTMX))
        assert 'id="cancel-run"' not in html(viewer_client.get(detail_url(run), headers=HTMX))


def test_a_worker_starting_clears_the_no_worker_warning_at_the_next_poll(
    staff_client, thread_store, thread
):
    run = start(thread_store, thread.id)
    for _ in range(2):
        assert "No run worker is alive" in html(staff_client.get(detail_url(run), headers=HTMX))

    thread_store.record_heartbeat(
        WorkerHeartbeat("w1", "host", 1, "echo", 4, 0, time.time(), time.time())
    )

    assert "No run worker is alive" not in html(staff_client.get(detail_url(run), headers=HTMX))


def test_growing_times_carry_the_moment_the_browser_counts_from(staff_client, thread_store, thread):
    queued = start(thread_store, thread.id)
    page = html(staff_client.get(detail_url(queued)))
    assert re.search(r'<div class="head-row" data-server-time="\d+\.\d{3}">', page)
    assert f'<dd data-since="{queued.created_at:.3f}">' in page  # waiting for

    run = running(thread_store, queued, worker="w1")
    block = html(staff_client.get(detail_url(run), headers=HTMX))
    assert f'<dd data-since="{run.started_at:.3f}">' in block  # running for
    assert block.count("data-since") == 1  # "waited" has stopped growing

    message = new_message(thread.id, "assistant", "Echo", run_id=run.id)
    thread_store.complete_run(thread.id, run.id, message)
    assert "data-since" not in html(staff_client.get(detail_url(run), headers=HTMX))


def test_live_blocks_are_kept_per_role_and_worker_state_and_none_with_size_0(thread_store, thread):
    from threadsite.dashboard.runs import LiveBlocks

    view = thread_store.run_view(thread.id, start(thread_store, thread.id).id)
    keeping, keeping_none = LiveBlocks(1), LiveBlocks(0)
    for blocks in (keeping, keeping_none):
        blocks.put(view, can_write=True, no_worker_alive=False, body=b"<section>")

    assert keeping.get(view, can_write=True, no_worker_alive=False) == b"<section>"
    assert keeping.get(view, can_write=False, no_worker_alive=False) is None
    assert keeping.get(view, can_write=True, no_worker_alive=True) is None
    assert keeping_none.get(view, can_write=True, no_worker_alive=False) is None


def test_every_poll_answer_says_the_servers_clock(staff_client, thread_store, thread):
    """A block sent again was rendered earlier: the page's clocks count from the time in
    the header, not from anything in the block."""
    run = running(thread_store, start(thread_store, thread.id), worker="w1")
    for _ in range(2):  # rendered, then sent again
        before = time.time()
        response = staff_client.get(detail_url(run), headers=HTMX)
        assert before - 0.01 <= float(response["X-Server-Time"]) <= time.time() + 0.01
