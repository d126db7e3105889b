"""Crash safety: a writer killed with SIGKILL at random moments, over and over, on one
store. Every file still parses (or is a temp file the store ignores), every acknowledged
write is there, and a torn last line of messages.jsonl costs only itself."""

from __future__ import annotations

import json
import os
import random
import select
import signal
import subprocess
import sys
import time
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from stores_testkit import make_run, make_step, make_thread, message_ids, sv

from stores import RunInTerminalState, ThreadStore, is_safe_id, new_message

HERE = Path(__file__).resolve().parent
WRITER = HERE / "crash_writer.py"
REPO_ROOT = HERE.parents[1]

KILLS = 100
DELAY_RANGE = (0.005, 0.060)
FULL_CHECK_EVERY = 25

RUN_RANK = {"queued": 0, "in_progress": 1, "requires_action": 1, "cancelling": 2}
STEP_RANK = {"in_progress": 0}
TERMINAL_RANK = 3
ALLOWED_AFTER_CRASH = {"orphan_temp_file", "unparsable_line", "unindexed_thread"}


@dataclass
class Acks:
    threads: set[str] = field(default_factory=set)
    messages: dict[str, list[str]] = field(default_factory=dict)
    runs: dict[tuple[str, str], str] = field(default_factory=dict)
    steps: dict[tuple[str, str, str], str] = field(default_factory=dict)
    metas: dict[str, str] = field(default_factory=dict)

    def add(self, line: str) -> None:
        kind, *args = line.split(" ")
        if kind == "thread":
            self.threads.add(args[0])
        elif kind == "msg":
            self.messages.setdefault(args[0], []).append(args[1])
        elif kind == "run":
            self.runs[(args[0], args[1])] = args[2]
        elif kind == "step":
            self.steps[(args[0], args[1], args[2])] = args[3]
        elif kind == "meta":
            self.metas[args[0]] = args[1]
        elif kind not in ("ready", "done"):
            raise AssertionError(f"unknown acknowledgement {line!r}")

    def merge(self, other: Acks) -> None:
        self.threads |= other.threads
        for thread_id, ids in other.messages.items():
            self.messages.setdefault(thread_id, []).extend(ids)
        self.runs.update(other.runs)
        self.steps.update(other.steps)
        self.metas.update(other.metas)


def writer_env() -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "PYTHONDONTWRITEBYTECODE": "1"}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    return env


def run_writer(
    root: Path, shared: str, seed: int, *, kill_after: float | None, iterations: int = 0
) -> tuple[Acks, int]:
    """Start the writer; once it is ready, SIGKILL it after `kill_after` seconds (or let
    it finish `iterations`). Returns the acknowledged writes and how many lines."""
    proc = subprocess.Popen(
        [sys.executable, str(WRITER), str(root), shared, str(seed), str(iterations)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=writer_env(),
    )
    try:
        received = b""
        deadline = time.monotonic() + 30
        fd = proc.stdout.fileno()
        while b"\n" not in received:
            remaining = deadline - time.monotonic()
            assert remaining > 0, "the writer never became ready"
            readable, _, _ = select.select([fd], [], [], remaining)
            if readable:
                chunk = os.read(fd, 65536)
                assert chunk, f"the writer exited early: {proc.wait(10)} {proc.stderr.read()!r}"
                received += chunk
        assert received.startswith(b"ready\n"), received[:200]
        if kill_after is not None:
            # A random moment to strike, not a synchronisation: the kill lands wherever
            # the writer happens to be.
            time.sleep(kill_after)
            proc.send_signal(signal.SIGKILL)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    received += out
    if kill_after is None:
        assert proc.returncode == 0, err.decode(errors="replace")
        assert received.endswith(b"done\n")
    else:
        assert proc.returncode in (-signal.SIGKILL, 0), err.decode(errors="replace")
    acks = Acks()
    lines = received.split(b"\n")[:-1]  # the last piece is unfinished (or empty)
    for line in lines:
        acks.add(line.decode())
    return acks, len(lines)


def rank(status: str, ranks: dict[str, int]) -> int:
    return ranks.get(status, TERMINAL_RANK)


def verify_acks(store: ThreadStore, acks: Acks) -> None:
    listed = set(store.list_thread_ids())
    for thread_id in acks.threads:
        assert thread_id in listed, f"acknowledged thread {thread_id} not listed"
        store.get_thread(thread_id)
    for thread_id, ids in acks.messages.items():
        present = message_ids(store, thread_id)
        missing = set(ids) - set(present)
        assert not missing, f"acknowledged messages lost in {thread_id}: {sorted(missing)[:3]}"
        assert len(present) == len(set(present)), f"duplicate messages in {thread_id}"
        positions = {m: i for i, m in enumerate(present)}
        assert [positions[m] for m in ids] == sorted(positions[m] for m in ids)
    for (thread_id, run_id), acked in acks.runs.items():
        now = sv(store.get_run(thread_id, run_id).status)
        if rank(acked, RUN_RANK) == TERMINAL_RANK:
            assert now == acked, f"run {run_id}: acknowledged {acked}, found {now}"
        else:
            assert rank(now, RUN_RANK) >= rank(acked, RUN_RANK), (run_id, acked, now)
    for (thread_id, run_id, step_id), acked in acks.steps.items():
        now = sv(store.get_step(thread_id, run_id, step_id).status)
        if rank(acked, STEP_RANK) == TERMINAL_RANK:
            assert now == acked, f"step {step_id}: acknowledged {acked}, found {now}"
    for thread_id, value in acks.metas.items():
        assert store.get_thread(thread_id).metadata.get("n") == value


def verify_files(store: ThreadStore, root: Path, kills: int) -> None:
    """Every record file parses and names itself; the rest is what check() accounts for."""
    for path in root.rglob("*"):
        if path.is_symlink() or not path.is_file():
            continue
        parts = path.relative_to(root).parts
        if not is_safe_id(parts[0]):
            continue
        expected_id = None
        if len(parts) == 2 and parts[1] == "meta.json":
            expected_id = parts[0]
        elif len(parts) == 4 and parts[1] == "runs" and parts[3] == "status.json":
            expected_id = parts[2]
        elif len(parts) == 6 and parts[1] == "runs" and parts[3] == "steps":
            name = parts[5]
            if name.endswith(".json") and is_safe_id(name[:-5]):
                expected_id = name[:-5]
        if expected_id is not None:
            record = json.loads(path.read_bytes())
            assert isinstance(record, dict), path
            assert record["id"] == expected_id, path
    report = store.check()
    kinds = {problem.kind for problem in report.problems}
    assert kinds <= ALLOWED_AFTER_CRASH, report.problems
    torn = [p for p in report.problems if p.kind == "unparsable_line"]
    assert all(Path(p.path).name == "messages.jsonl" for p in torn), torn
    assert len(torn) <= kills, f"{len(torn)} unparsable lines after {kills} kills"


def test_acknowledged_writes_survive_repeated_sigkill(tmp_path: Path) -> None:
    root = tmp_path / "store"
    store = ThreadStore(root)
    shared = make_thread(store).id
    rng = random.Random(20240611)
    everything = Acks()
    total_lines = 0
    for kill in range(1, KILLS + 1):
        acks, lines = run_writer(root, shared, kill, kill_after=rng.uniform(*DELAY_RANGE))
        total_lines += lines
        reopened = ThreadStore(root)
        verify_acks(reopened, acks)
        everything.merge(acks)
        if kill % FULL_CHECK_EVERY == 0:
            verify_acks(reopened, everything)
            verify_files(reopened, root, kill)

    # The writers really worked between kills, on many threads.
    assert total_lines > 3 * KILLS
    assert len(everything.threads) > 20

    # A last writer that is not killed: locks left by the dead ones do not block it.
    acks, _ = run_writer(root, shared, 0, kill_after=None, iterations=5)
    everything.merge(acks)
    final = ThreadStore(root)
    verify_acks(final, everything)
    verify_files(final, root, KILLS)

    # The shared log: every line that parses is a message, and the rest are torn lines,
    # at most one per kill.
    raw = (root / shared / "messages.jsonl").read_bytes()
    parsed, torn = 0, 0
    for line in raw.split(b"\n"):
        if not line.strip():
            continue
        try:
            json.loads(line)
        except ValueError:
            torn += 1
        else:
            parsed += 1
    assert torn <= KILLS
    assert len(final.list_messages(shared)) == parsed

    # Listing pages still shows every acknowledged thread exactly once.
    walked: list[str] = []
    cursor = None
    for _ in range(1000):
        page = final.list_threads(limit=50, cursor=cursor)
        walked.extend(t.id for t in page.items)
        cursor = page.next_cursor
        if cursor is None:
            break
    assert len(walked) == len(set(walked))
    assert everything.threads <= set(walked)


def _log(root: Path, thread_id: str) -> Path:
    return root / thread_id / "messages.jsonl"


def test_a_torn_tail_costs_only_itself(store: ThreadStore, store_root: Path) -> None:
    thread = make_thread(store)
    first = new_message(thread.id, "user", "one")
    second = new_message(thread.id, "assistant", "two")
    store.append_message(thread.id, first)
    store.append_message(thread.id, second)
    torn = json.dumps(new_message(thread.id, "user", "never acknowledged").to_dict())
    with _log(store_root, thread.id).open("ab") as f:
        f.write(torn[: len(torn) // 2].encode())  # a crash mid-write: no newline
    assert message_ids(store, thread.id) == [first.id, second.id]
    assert [m.id for m in store.latest_messages(thread.id).items] == [first.id, second.id]

    third = new_message(thread.id, "user", "three")
    store.append_message(thread.id, third)
    fourth = new_message(thread.id, "assistant", "four")
    store.append_message(thread.id, fourth)
    assert message_ids(store, thread.id) == [first.id, second.id, third.id, fourth.id]
    assert [m.id for m in store.latest_messages(thread.id).items] == [
        first.id,
        second.id,
        third.id,
        fourth.id,
    ]
    assert store.last_message(thread.id).id == fourth.id

    lines = _log(store_root, thread.id).read_bytes().split(b"\n")
    assert lines[-1] == b""
    assert json.loads(lines[-2])["id"] == fourth.id
    assert json.loads(lines[-3])["id"] == third.id  # on a line of its own
    report = store.check()
    assert [p.kind for p in report.problems] == ["unparsable_line"]


def test_a_tail_torn_inside_a_multibyte_character(store: ThreadStore, store_root: Path) -> None:
    thread = make_thread(store)
    first = new_message(thread.id, "user", "before")
    store.append_message(thread.id, first)
    line = json.dumps({"id": "msg_" + "a" * 32, "text": "é✓"}, ensure_ascii=False).encode()
    cut = line.index("✓".encode()) + 1  # one byte into a three-byte character
    with _log(store_root, thread.id).open("ab") as f:
        f.write(line[:cut])
    assert message_ids(store, thread.id) == [first.id]
    after = new_message(thread.id, "user", "after")
    store.append_message(thread.id, after)
    assert message_ids(store, thread.id) == [first.id, after.id]
    assert [m.id for m in store.latest_messages(thread.id).items] == [first.id, after.id]


def test_a_whole_line_missing_only_its_newline(store: ThreadStore, store_root: Path) -> None:
    """The crash hit between the record and its newline: the record may count or not,
    but the next append must not be glued to it."""
    thread = make_thread(store)
    first = new_message(thread.id, "user", "before")
    store.append_message(thread.id, first)
    unacked = new_message(thread.id, "user", "complete but unterminated")
    with _log(store_root, thread.id).open("ab") as f:
        f.write(json.dumps(unacked.to_dict()).encode())
    after = new_message(thread.id, "user", "after")
    store.append_message(thread.id, after)
    ids = message_ids(store, thread.id)
    assert ids in ([first.id, after.id], [first.id, unacked.id, after.id])
    assert ids[-1] == after.id


def _wait_for_line(proc: subprocess.Popen[bytes], timeout: float) -> bytes:
    received = b""
    deadline = time.monotonic() + timeout
    fd = proc.stdout.fileno()
    while b"\n" not in received:
        remaining = deadline - time.monotonic()
        assert remaining > 0, "the writer never became ready"
        readable, _, _ = select.select([fd], [], [], remaining)
        if readable:
            chunk = os.read(fd, 65536)
            assert chunk, f"the writer exited early with {proc.wait(10)}"
            received += chunk
    return received


def test_a_kill_in_the_middle_of_an_append_tears_only_that_line(
    store: ThreadStore, store_root: Path
) -> None:
    """A real torn tail: SIGKILL while a 64 MiB line is being written (the moment the
    log starts to grow), then the next append must land on a line of its own."""
    thread = make_thread(store)
    acked = []
    for i in range(3):
        msg = store.append_message(thread.id, new_message(thread.id, "user", f"small {i}"))
        acked.append(msg.id)
    log = _log(store_root, thread.id)
    torn_tails = 0
    for _ in range(3):
        before = log.stat().st_size
        proc = subprocess.Popen(
            [sys.executable, str(HERE / "torn_append_writer.py"), str(store_root), thread.id,
             str(64 * 1024 * 1024)],
            stdout=subprocess.PIPE,
            env=writer_env(),
        )  # fmt: skip
        try:
            received = _wait_for_line(proc, 30)
            assert received.startswith(b"ready\n")
            deadline = time.monotonic() + 30
            while log.stat().st_size == before:  # strike as soon as the write begins
                assert time.monotonic() < deadline, "the append never started"
                assert proc.poll() is None, "the writer exited before appending"
            proc.send_signal(signal.SIGKILL)
            out, _ = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        finished = b"appended" in received + out
        if not finished and not log.read_bytes().endswith(b"\n"):
            torn_tails += 1
        after = store.append_message(thread.id, new_message(thread.id, "user", "after"))
        acked.append(after.id)
        ids = message_ids(store, thread.id)
        assert [i for i in ids if i in set(acked)] == acked
        assert ids[-1] == after.id
        assert store.last_message(thread.id).id == after.id
    assert torn_tails >= 1, "no kill landed inside a write: nothing was torn"
    unparsable = [p for p in store.check().problems if p.kind == "unparsable_line"]
    assert len(unparsable) == torn_tails


CRASH_POINTS = (
    [("fsync", n) for n in range(1, 9)]
    + [("write", n) for n in range(1, 4)]
    + [("publish", n) for n in range(1, 5)]
)


@pytest.mark.parametrize(("kind", "n"), CRASH_POINTS)
def test_a_crash_inside_complete_run_never_leaves_a_reply_on_a_cancelled_run(
    tmp_path: Path, kind: str, n: int
) -> None:
    """The process completing a run dies just before its n-th `kind` call; the run is
    then cancelled. Whatever point the crash hit, the outcome is one of the two the
    contract allows: completed with its reply, or cancelled with no reply."""
    root = tmp_path / "store"
    store = ThreadStore(root)
    thread = make_thread(store)
    store.append_message(thread.id, new_message(thread.id, "user", "question"))
    run = make_run(store, thread.id, "in_progress")
    step = make_step(store, thread.id, run.id)
    result = subprocess.run(
        [sys.executable, str(HERE / "crash_point_writer.py"), str(root), thread.id, run.id,
         kind, str(n)],
        capture_output=True,
        env=writer_env(),
        timeout=60,
    )  # fmt: skip
    said = result.stdout.decode().split()
    assert said, result.stderr.decode(errors="replace")
    reply_id, finished = said[0], "completed" in said[1:]
    assert result.returncode == (0 if finished else 137), result.stderr.decode(errors="replace")

    reopened = ThreadStore(root)
    with suppress(RunInTerminalState):  # a completion that landed: judged below
        reopened.cancel_run(thread.id, run.id)
    final = sv(reopened.get_run(thread.id, run.id).status)
    messages = [m for m in reopened.list_messages(thread.id) if m.run_id == run.id]
    replies = [m.id for m in messages if m.status == "completed"]
    if finished:
        assert final == "completed"
    if final == "completed":
        assert replies == [reply_id]
        assert len(messages) == 1
        got = reopened.get_step(thread.id, run.id, step.id)
        assert sv(got.status) == "completed"
    else:
        assert final in ("cancelled", "cancelling"), final
        # The contract forbids a completed reply on a cancelled run; text the dead writer
        # got onto the log is kept, marked incomplete, like a cancel's partial text.
        assert replies == [], f"run {final} after a crash at {kind} #{n}, yet shows its reply"
        assert all(m.status == "incomplete" and m.id == reply_id for m in messages)
    assert not {p.kind for p in reopened.check().problems} & {"bad_record"}
