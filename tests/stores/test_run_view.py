"""ThreadStore.run_view: the run, its steps and its draft, read in one walk."""

from __future__ import annotations

from pathlib import Path

import pytest
from stores_testkit import (
    assert_not_found,
    make_held_run,
    make_run,
    make_step,
    make_thread,
    sv,
)

from stores import (
    Draft,
    RunNotFound,
    RunView,
    StoreError,
    ThreadNotFound,
    ThreadStore,
    new_id,
    new_message,
)

MISSING_THREAD = "thread_" + "0" * 32
MISSING_RUN = "run_" + "0" * 32
UNSAFE_IDS = ("", "../x", "../../etc", "a/b", ".hidden", "run_1\n", "x" * 129)
WORKER = "test-worker"  # the worker make_held_run claims runs for


def separately(store: ThreadStore, thread_id: str, run_id: str) -> RunView:
    """What the three single reads return, for comparison with run_view."""
    return RunView(
        run=store.get_run(thread_id, run_id),
        steps=store.list_steps(thread_id, run_id),
        draft=store.draft(thread_id, run_id),
    )


def test_queued_run_has_no_steps_and_no_draft(store: ThreadStore) -> None:
    thread = make_thread(store)
    run = make_run(store, thread.id)
    view = store.run_view(thread.id, run.id)
    assert isinstance(view, RunView)
    assert view.run == run
    assert sv(view.run.status) == "queued"
    assert view.steps == []
    assert view.draft is None
    assert view == separately(store, thread.id, run.id)


def test_in_progress_run_shows_its_step_and_draft(store: ThreadStore) -> None:
    thread = make_thread(store)
    run = make_held_run(store, thread.id)
    step = make_step(store, thread.id, run.id)
    message_id = new_id("msg")
    store.write_draft(thread.id, run.id, "Hello, wor", message_id=message_id, worker_id=WORKER)
    view = store.run_view(thread.id, run.id)
    assert sv(view.run.status) == "in_progress"
    assert view.run == store.get_run(thread.id, run.id)
    assert [s.id for s in view.steps] == [step.id]
    assert sv(view.steps[0].status) == "in_progress"
    assert view.draft == Draft("Hello, wor", message_id)
    assert view == separately(store, thread.id, run.id)


def test_in_progress_run_without_a_draft_yet(store: ThreadStore) -> None:
    thread = make_thread(store)
    run = make_held_run(store, thread.id)
    view = store.run_view(thread.id, run.id)
    assert sv(view.run.status) == "in_progress"
    assert view.steps == []
    assert view.draft is None
    assert view == separately(store, thread.id, run.id)


def test_cancelling_run_still_shows_its_draft(store: ThreadStore) -> None:
    thread = make_thread(store)
    run = make_held_run(store, thread.id)
    store.write_draft(thread.id, run.id, "partial", worker_id=WORKER)
    assert sv(store.cancel_run(thread.id, run.id).status) == "cancelling"
    view = store.run_view(thread.id, run.id)
    assert sv(view.run.status) == "cancelling"
    assert view.draft == Draft("partial", None)
    assert view == separately(store, thread.id, run.id)


def test_completed_run_has_final_steps_and_no_draft(store: ThreadStore) -> None:
    thread = make_thread(store)
    run = make_held_run(store, thread.id)
    step = make_step(store, thread.id, run.id)
    store.write_draft(thread.id, run.id, "the answ", worker_id=WORKER)
    reply = new_message(thread.id, "assistant", "the answer", run_id=run.id)
    done = store.complete_run(thread.id, run.id, reply, worker_id=WORKER)
    view = store.run_view(thread.id, run.id)
    assert view.run == done
    assert sv(view.run.status) == "completed"
    assert [s.id for s in view.steps] == [step.id]
    assert all(s.status.is_terminal for s in view.steps)
    assert view.steps == store.list_steps(thread.id, run.id)
    assert view.draft is None
    assert view == separately(store, thread.id, run.id)


@pytest.mark.parametrize("status", ["queued", "completed", "failed", "cancelled"])
def test_a_leftover_draft_file_is_not_read_unless_the_run_is_live(
    store: ThreadStore, store_root: Path, status: str
) -> None:
    """A queued run has no draft and an ended run's is removed: a file left behind (a
    crash between the two writes) is ignored, by status, not by chance."""
    thread = make_thread(store)
    run = make_run(store, thread.id, status)
    path = store_root / thread.id / "runs" / run.id / "draft.json"
    path.write_text('{"text": "stale", "message_id": null}')
    assert store.draft(thread.id, run.id) == Draft("stale", None)
    view = store.run_view(thread.id, run.id)
    assert sv(view.run.status) == status
    assert view.draft is None


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("not json", None),
        ('["a", "list"]', None),
        ('{"text": 7}', None),
        ('{"message_id": "msg_1"}', None),
        ('{"text": "hi", "message_id": "../evil"}', Draft("hi", None)),
        ('{"text": "hi", "message_id": 12}', Draft("hi", None)),
        ('{"text": "hi", "message_id": "msg_1"}', Draft("hi", "msg_1")),
    ],
)
def test_run_view_parses_the_draft_like_draft(
    store: ThreadStore, store_root: Path, body: str, expected: Draft | None
) -> None:
    thread = make_thread(store)
    run = make_held_run(store, thread.id)
    (store_root / thread.id / "runs" / run.id / "draft.json").write_text(body)
    assert store.run_view(thread.id, run.id).draft == expected
    assert store.draft(thread.id, run.id) == expected


def test_unknown_thread_raises_thread_not_found(store: ThreadStore) -> None:
    with pytest.raises(ThreadNotFound) as excinfo:
        store.run_view(MISSING_THREAD, MISSING_RUN)
    assert_not_found(excinfo.value, ThreadNotFound)


def test_unknown_run_raises_run_not_found(store: ThreadStore) -> None:
    thread = make_thread(store)
    make_run(store, thread.id)
    with pytest.raises(RunNotFound) as excinfo:
        store.run_view(thread.id, MISSING_RUN)
    assert_not_found(excinfo.value, RunNotFound)


def test_a_run_of_another_thread_is_not_found(store: ThreadStore) -> None:
    thread, other = make_thread(store), make_thread(store)
    run = make_run(store, thread.id)
    with pytest.raises(RunNotFound) as excinfo:
        store.run_view(other.id, run.id)
    assert_not_found(excinfo.value, RunNotFound)


@pytest.mark.parametrize("bad", UNSAFE_IDS)
def test_unsafe_ids_are_not_found_like_get_run(store: ThreadStore, bad: str) -> None:
    thread = make_thread(store)
    run = make_run(store, thread.id)
    cases: list[tuple[str, str, type[StoreError]]] = [
        (bad, run.id, ThreadNotFound),
        (thread.id, bad, RunNotFound),
        (bad, bad, ThreadNotFound),
    ]
    for thread_id, run_id, expected in cases:
        with pytest.raises(expected) as excinfo:
            store.run_view(thread_id, run_id)
        assert_not_found(excinfo.value, expected)
        with pytest.raises(expected) as from_get_run:
            store.get_run(thread_id, run_id)
        assert type(excinfo.value) is type(from_get_run.value)
