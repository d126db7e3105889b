"""ThreadStore.run_version and messages_version: a few `stat`s that change whenever what
a page shows of a run, or of a thread's messages, may have, so that a page asked for
again need not read them again."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from stores_testkit import make_held_run, make_run, make_step, make_thread

from stores import RunRef, ThreadStore, files, new_message

WORKER = "test-worker"  # the worker make_held_run claims runs for


def settled_version(store: ThreadStore, thread_id: str, run_id: str, wait: float) -> tuple:
    """The run's version once its files have settled (`wait`: from stats_settle_fast)."""
    time.sleep(wait)
    version = store.run_version(thread_id, run_id)
    assert version is not None
    return version


def test_a_settled_run_keeps_its_version_and_run_view_carries_it(
    store: ThreadStore, stats_settle_fast: float
) -> None:
    thread = make_thread(store)
    run = make_held_run(store, thread.id)
    make_step(store, thread.id, run.id)
    version = settled_version(store, thread.id, run.id, stats_settle_fast)

    assert store.run_version(thread.id, run.id) == version
    view = store.run_view(thread.id, run.id)
    assert view.version == version
    # The version is how a view was read, not what it shows.
    assert view == store.run_view(thread.id, run.id) and view.version is not None


def test_a_run_changed_a_moment_ago_is_not_vouched_for(store: ThreadStore) -> None:
    # Two changes within one timestamp tick could look like one: until the run has
    # settled (a second by default), only a fresh read tells.
    thread = make_thread(store)
    run = make_held_run(store, thread.id)
    assert store.run_version(thread.id, run.id) is None
    assert store.run_view(thread.id, run.id).version is None


def _update_status(store: ThreadStore, root: Path, thread_id: str, run_id: str) -> None:
    store.update_run_status(thread_id, run_id, "requires_action")


def _first_step(store: ThreadStore, root: Path, thread_id: str, run_id: str) -> None:
    make_step(store, thread_id, run_id)


def _step_status(store: ThreadStore, root: Path, thread_id: str, run_id: str) -> None:
    [step] = store.list_steps(thread_id, run_id)
    store.update_step_status(thread_id, run_id, step.id, "completed")


def _draft(store: ThreadStore, root: Path, thread_id: str, run_id: str) -> None:
    store.write_draft(thread_id, run_id, "Echo: Hel", worker_id=WORKER)


def _lease(store: ThreadStore, root: Path, thread_id: str, run_id: str) -> None:
    ref = RunRef(run_id=run_id, thread_id=thread_id)
    assert store.renew_lease(ref, worker_id=WORKER, lease_seconds=600)


def _complete(store: ThreadStore, root: Path, thread_id: str, run_id: str) -> None:
    reply = new_message(thread_id, "assistant", "Echo", run_id=run_id)
    store.complete_run(thread_id, run_id, reply, worker_id=WORKER)


def _record_edited_in_place(store: ThreadStore, root: Path, thread_id: str, run_id: str) -> None:
    # Not how the store writes (it replaces files whole), but a person or another
    # program might: the record's own change time tells.
    status = root / thread_id / "runs" / run_id / "status.json"
    record = json.loads(status.read_text())
    with status.open("r+") as handle:
        handle.write(json.dumps({**record, "instructions": "edited by hand"}))


# Each change, and whether the run has a step before it is made.
CHANGES: dict[str, tuple[Callable[[ThreadStore, Path, str, str], None], bool]] = {
    "status": (_update_status, False),
    "first step": (_first_step, False),
    "step status": (_step_status, True),
    "draft": (_draft, False),
    "lease renewed": (_lease, False),
    "completed": (_complete, False),
    "record edited in place": (_record_edited_in_place, False),
}


@pytest.mark.parametrize("change", CHANGES)
def test_every_change_to_what_the_page_shows_changes_the_version(
    store: ThreadStore, store_root: Path, stats_settle_fast: float, change: str
) -> None:
    make_change, with_a_step = CHANGES[change]
    thread = make_thread(store)
    run = make_held_run(store, thread.id)
    if with_a_step:
        make_step(store, thread.id, run.id)
    before = settled_version(store, thread.id, run.id, stats_settle_fast)

    make_change(store, store_root, thread.id, run.id)

    assert store.run_version(thread.id, run.id) is None  # changed a moment ago
    assert settled_version(store, thread.id, run.id, stats_settle_fast) != before


def test_unknown_unsafe_and_deleted_runs_have_no_version(
    store: ThreadStore, stats_settle_fast: float
) -> None:
    thread = make_thread(store)
    run = make_run(store, thread.id)
    settled_version(store, thread.id, run.id, stats_settle_fast)
    assert store.run_version(thread.id, "run_" + "0" * 32) is None
    assert store.run_version("thread_" + "0" * 32, run.id) is None
    for bad in ("../x", "a/b", ".hidden", ""):
        assert store.run_version(bad, run.id) is None
        assert store.run_version(thread.id, bad) is None

    store.delete_thread(thread.id)

    assert store.run_version(thread.id, run.id) is None


MOUNTS = [
    "proc /proc proc rw,relatime 0 0",
    "/dev/vda / ext4 rw,relatime 0 0",
    "tmpfs /dev/shm tmpfs rw,relatime 0 0",
    "server:/export /srv/data nfs4 rw,relatime 0 0",
    "/dev/vdb /srv/data/local xfs rw 0 0",
    "server:/other /srv/data2 nfs rw 0 0",
    "/dev/vdc /mnt/with\\040space ext4 rw 0 0",
    "tmpfs /mnt/stacked tmpfs rw 0 0",
    "host:/share /mnt/stacked cifs rw 0 0",
    "not a mount line",
]


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/", "ext4"),
        ("/home/site/data", "ext4"),
        ("/dev/shm/bench", "tmpfs"),
        ("/srv/data", "nfs4"),
        ("/srv/data/threads", "nfs4"),
        ("/srv/data/local/threads", "xfs"),  # the innermost mount
        ("/srv/data2/threads", "nfs"),  # not /srv/data's, whose name it starts with
        ("/srv/datafile", "ext4"),
        ("/mnt/with space/threads", "ext4"),
        ("/mnt/stacked/threads", "cifs"),  # the later of two mounts on one point
    ],
)
def test_the_filesystem_holding_a_path_is_its_innermost_mount(path: str, expected: str) -> None:
    assert files.mount_type(path, MOUNTS) == expected


def test_this_machines_test_directories_are_on_a_local_filesystem(store: ThreadStore) -> None:
    # What the other tests here rely on: they would prove nothing on a network mount.
    assert files.filesystem_type(store.root) in files.LOCAL_FILESYSTEMS
    assert store.stats_are_current


def test_on_a_filesystem_not_known_to_be_local_a_run_is_never_vouched_for(
    store_root: Path, stats_settle_fast: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(files, "filesystem_type", lambda path: "nfs4")
    store = ThreadStore(store_root)
    thread = make_thread(store)
    run = make_held_run(store, thread.id)
    time.sleep(stats_settle_fast)

    assert not store.stats_are_current
    assert store.run_version(thread.id, run.id) is None
    assert store.run_view(thread.id, run.id).version is None


# --------------------------------------------------------------------- messages_version


def test_a_threads_log_keeps_its_version_until_a_message_is_appended(
    store: ThreadStore, stats_settle_fast: float
) -> None:
    thread = make_thread(store)
    store.append_message(thread.id, new_message(thread.id, "user", "first"))
    before = store.messages_version(thread.id)
    assert before is None  # appended a moment ago
    time.sleep(stats_settle_fast)
    before = store.messages_version(thread.id)
    assert before is not None
    assert store.messages_version(thread.id) == before

    store.append_message(thread.id, new_message(thread.id, "user", "second"))

    assert store.messages_version(thread.id) is None
    time.sleep(stats_settle_fast)
    assert store.messages_version(thread.id) not in (None, before)


def test_a_log_replaced_whole_with_as_many_bytes_changes_the_version(
    store: ThreadStore, store_root: Path, stats_settle_fast: float
) -> None:
    # What store_check's repair does to a log with torn lines: a new file, renamed over.
    thread = make_thread(store)
    store.append_message(thread.id, new_message(thread.id, "user", "first"))
    log = store_root / thread.id / "messages.jsonl"
    time.sleep(stats_settle_fast)
    before = store.messages_version(thread.id)
    replacement = log.with_name(".tmp-replacement")
    replacement.write_bytes(log.read_bytes().replace(b"first", b"FIRST"))
    replacement.rename(log)
    time.sleep(stats_settle_fast)
    assert store.messages_version(thread.id) not in (None, before)


def test_unknown_and_unsafe_threads_have_no_messages_version(
    store: ThreadStore, stats_settle_fast: float
) -> None:
    thread = make_thread(store)
    time.sleep(stats_settle_fast)
    assert store.messages_version("thread_" + "0" * 32) is None
    for bad in ("../x", "a/b", ".hidden", ""):
        assert store.messages_version(bad) is None
    store.delete_thread(thread.id)
    assert store.messages_version(thread.id) is None
