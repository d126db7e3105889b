"""`make bench`: build the stores, serve them with real gunicorn, measure every row
against its same-run baseline, print the table, exit 1 if a target is missed.

    python -m bench.run [--seconds 4] [--keep] [--gunicorn-args "--threads 8"]

Exit status: 0 every target met, 1 a target missed, 2 the benchmark could not run.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import signal
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from stores import ThreadStore
from stores.files import filesystem_type

from . import durable, workers
from .load import CONNECTIONS, LoadResult, ensure_wrk, run_wrk
from .report import Row, millis, per_second, ratio, table
from .server import BenchError, Server, prepare_data_dir, rss_kib
from .stores import add_finished_runs, add_long_thread, add_polled_run, add_threads

BIG_STORE = 100_000
SMALL_STORE = 100
LONG_THREAD = 10_000
SHORT_THREAD = 20
FINISHED_RUNS = 100  # on the newest threads, so list rows show a run status
SOAK_SECONDS = 60  # the big store is served at least this long before its RSS is read
MEMORY_LIMIT_MB = 150
# Measurements of each side in a comparison. On a shared machine a side's rate moves
# 2-3x between one window and the next, and so does a single round's ratio (0.3x-2x for
# the poll): the median of ten pairs still moved 0.5x-1.4x between runs of one tree.
# Thirty pairs of one second each, the two sides a second apart, narrow that.
ROUNDS = 30

Side = tuple[Server, str, bool]  # server, path, as htmx


@dataclass(frozen=True)
class Comparison:
    a: LoadResult  # each side's measurements, averaged (for the table)
    b: LoadResult
    rate: float  # median over rounds of a's requests/s over b's
    p99: float  # median over rounds of a's p99 latency over b's


def _fs_type(path: Path) -> str:
    return filesystem_type(path) or "unknown"


def _memory_dir() -> str | None:
    """A tmpfs to build the served stores in, when the machine has one with room."""
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK) and _fs_type(shm) == "tmpfs":
        stats = os.statvfs(shm)
        if stats.f_bavail * stats.f_frsize > 4 * 1024**3:
            return str(shm)
    return None


class Bench:
    def __init__(self, args: argparse.Namespace, scratch: Path, disk_scratch: Path) -> None:
        self.args = args
        self.scratch = scratch
        self.disk_scratch = disk_scratch
        self.seconds: float = args.seconds
        self.wrk = ensure_wrk()
        self.rows: list[Row] = []
        self.notes: list[str] = []

    def log(self, message: str) -> None:
        print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)

    # --------------------------------------------------------------- load helpers

    def load(self, server: Server, path: str, *, htmx: bool = False, seconds: float) -> LoadResult:
        """The dashboard's pages with the signed-in session; /healthz without one, as a
        load balancer asks for it."""
        headers = {} if path == "/healthz" else {"Cookie": server.cookie}
        if htmx:
            headers["HX-Request"] = "true"
        return run_wrk(self.wrk, server.base_url + path, seconds=seconds, headers=headers)

    def warm(self, server: Server, path: str) -> None:
        """Load `path` until every gunicorn worker has answered it (a worker's first
        thread list replays the store's journal into its catalog, which takes seconds
        for 100,000 threads) and two runs in a row agree within 15%. Each request comes
        on a new connection, so that every worker takes some."""
        headers = {"Cookie": server.cookie, "Connection": "close"}
        previous = 0.0
        for _ in range(10):
            rate = run_wrk(self.wrk, server.base_url + path, seconds=3, headers=headers).rate
            if previous and abs(rate - previous) <= 0.15 * max(rate, previous):
                return
            previous = rate

    def compare(self, a: Side, b: Side) -> Comparison:
        """Warm both, then ROUNDS rounds of one measurement each, A then B, then B then
        A, and so on. Each round gives a ratio of two measurements taken seconds apart;
        the result is the median of those ratios, so that a burst of load from elsewhere
        on a shared machine spoils one round, not the row."""
        for server, path, htmx in (a, b):
            self.load(server, path, htmx=htmx, seconds=1)
        results: dict[int, list[LoadResult]] = {0: [], 1: []}
        for n in range(ROUNDS):
            for side in (0, 1) if n % 2 == 0 else (1, 0):
                server, path, htmx = (a, b)[side]
                results[side].append(self.load(server, path, htmx=htmx, seconds=self.seconds))
        pairs = list(zip(results[0], results[1], strict=True))
        return Comparison(
            a=_mean(results[0]),
            b=_mean(results[1]),
            rate=statistics.median(x.rate / y.rate for x, y in pairs),
            p99=statistics.median(x.p99_ms / y.p99_ms for x, y in pairs),
        )

    # --------------------------------------------------------------------- setup

    def build(self) -> tuple[Server, Server, dict[str, str]]:
        big_dir, small_dir = self.scratch / "big", self.scratch / "small"
        with ThreadPoolExecutor(3) as pool:
            passwords = [
                pool.submit(prepare_data_dir, d, self.args.django_settings)
                for d in (big_dir, small_dir)
            ]
            started = time.perf_counter()
            built = add_threads(big_dir / "threads", BIG_STORE)
            self.log(f"built {BIG_STORE:,} threads in {built:.1f}s")
            add_threads(small_dir / "threads", SMALL_STORE)
            for root in (big_dir / "threads", small_dir / "threads"):
                add_finished_runs(root, FINISHED_RUNS)
            ids = {
                "long": add_long_thread(big_dir / "threads", LONG_THREAD),
                "short": add_long_thread(big_dir / "threads", SHORT_THREAD),
            }
            ids["poll_thread"], ids["poll_run"] = add_polled_run(big_dir / "threads")
            ids["small_poll_thread"], ids["small_poll_run"] = add_polled_run(small_dir / "threads")
            big_pw, small_pw = (p.result() for p in passwords)
        self.notes.append(
            f"Stores built in {time.perf_counter() - started:.1f}s "
            f"({BIG_STORE:,} threads: {built:.1f}s, 2 processes, on {_fs_type(big_dir)})."
        )
        # Cursors for "a later page": halfway down the big store, page 2 of the small one.
        ids["big_later"] = (
            ThreadStore(big_dir / "threads").list_threads(limit=BIG_STORE // 2).next_cursor or ""
        )
        ids["small_later"] = (
            ThreadStore(small_dir / "threads").list_threads(limit=50).next_cursor or ""
        )
        extra = shlex.split(self.args.gunicorn_args)
        big = Server(big_dir, self.scratch / "gunicorn-big.log", extra)
        # The small store's server renders every poll (the rendered-poll row); what it
        # serves in the threads rows has no live block.
        small = Server(
            small_dir, self.scratch / "gunicorn-small.log", extra, {"THREADSITE_LIVE_BLOCKS": "0"}
        )
        big.start(big_pw, settings=self.args.django_settings)
        small.start(small_pw, settings=self.args.django_settings)
        self.log("warming up: every worker loads the stores' catalogs")
        warmed = time.perf_counter()
        self.warm(big, "/threads/")
        self.warm(small, "/threads/")
        self.notes.append(
            f"Warm-up (catalogs loaded in every worker): {time.perf_counter() - warmed:.0f}s."
        )
        return big, small, ids

    def check(
        self, server: Server, path: str, expect: str, *, htmx: bool = False, status: int = 200
    ) -> None:
        """One request before the load: the page must be the real thing, not a redirect
        to the login page or an error (wrk counts those as answers too)."""
        code, body = server.get(path, htmx=htmx)
        if code != 200 or expect not in body:
            raise BenchError(f"GET {path} answered {code} without {expect!r}:\n{body[:500]}")

    # ---------------------------------------------------------------------- rows

    def poll_row(self, big: Server, ids: dict[str, str]) -> None:
        path = f"/threads/{ids['poll_thread']}/runs/{ids['poll_run']}/"
        self.check(big, path, 'id="run-live"', htmx=True)
        self.check(big, "/healthz", "ok")
        found = self.compare((big, path, True), (big, "/healthz", False))
        poll, health, rate, p99 = found.a, found.b, found.rate, found.p99
        self.rows.append(
            Row(
                f"Run status poll (htmx fragment), {CONNECTIONS} clients: requests/s",
                per_second(poll.rate),
                f"/healthz {per_second(health.rate)}",
                ratio(rate),
                ">= 0.6x",
                rate >= 0.6,
            )
        )
        self.rows.append(
            Row(
                "Run status poll: p99 latency",
                millis(poll.p99_ms),
                f"/healthz {millis(health.p99_ms)}",
                ratio(p99),
                "<= 3x",
                p99 <= 3.0,
            )
        )

    def rendered_poll_row(self, small: Server, ids: dict[str, str]) -> None:
        """The poll when every answer is rendered, as when the run changed since its last
        poll (a reply streaming in): the small store's server keeps no live blocks
        (THREADSITE_LIVE_BLOCKS=0), against its own /healthz."""
        path = f"/threads/{ids['small_poll_thread']}/runs/{ids['small_poll_run']}/"
        self.check(small, path, 'id="run-live"', htmx=True)
        found = self.compare((small, path, True), (small, "/healthz", False))
        self.rows.append(
            Row(
                "  the same, every answer rendered (no live block kept)",
                per_second(found.a.rate),
                f"/healthz {per_second(found.b.rate)}",
                ratio(found.rate),
                "(shown, no target)",
                None,
            )
        )

    def threads_rows(self, big: Server, small: Server, ids: dict[str, str]) -> None:
        for label, big_path, small_path in (
            ("first page", "/threads/", "/threads/"),
            (
                "a later page",
                f"/threads/?cursor={ids['big_later']}",
                f"/threads/?cursor={ids['small_later']}",
            ),
        ):
            for server, path in ((big, big_path), (small, small_path)):
                self.check(server, path, '<table class="threads">')
            found = self.compare((big, big_path, False), (small, small_path, False))
            large, baseline, value = found.a, found.b, found.rate
            where = " (thread 50,001 on)" if label != "first page" else ""
            self.rows.append(
                Row(
                    f"Threads, {label}{where}: 100,000 threads vs 100",
                    per_second(large.rate),
                    f"100 threads {per_second(baseline.rate)}",
                    ratio(value),
                    ">= 0.8x",
                    value >= 0.8,
                )
            )

    def thread_page_row(self, big: Server, ids: dict[str, str]) -> None:
        long_path, short_path = f"/threads/{ids['long']}/", f"/threads/{ids['short']}/"
        self.check(big, long_path, "Load earlier messages")
        self.check(big, short_path, "Thread <code>")
        found = self.compare((big, long_path, False), (big, short_path, False))
        long, short, value = found.a, found.b, found.rate
        self.rows.append(
            Row(
                f"Thread page, {LONG_THREAD:,} messages (latest 50) vs {SHORT_THREAD}",
                per_second(long.rate),
                f"{SHORT_THREAD} messages {per_second(short.rate)}",
                ratio(value),
                ">= 0.8x",
                value >= 0.8,
            )
        )

    def memory_row(self, big: Server, ids: dict[str, str]) -> None:
        """Every kind of page of the big store, in turn, until it has been served for at
        least SOAK_SECONDS; then the largest worker's RSS."""
        store = ThreadStore(big.data_dir / "threads")
        page = store.list_threads(limit=50)
        paths = ["/", "/threads/", f"/threads/?cursor={ids['big_later']}"]
        paths += [f"/threads/{t.id}/" for t in page.items[:20]]
        paths += [
            "/threads/?q=customer%3Dcustomer42%40example.com",
            "/threads/?status=completed",
            f"/threads/{ids['long']}/",
            f"/threads/{ids['poll_thread']}/runs/{ids['poll_run']}/",
        ]
        for path in paths:
            self.check(big, path, "</html>")
        remaining = SOAK_SECONDS - (time.monotonic() - big.started_at)
        soak = max(10.0, remaining)
        run_wrk(
            self.wrk,
            big.base_url + "/",
            seconds=soak,
            headers={"Cookie": big.cookie},
            paths=paths,
            scratch=self.scratch,
        )
        served = time.monotonic() - big.started_at
        sizes = {pid: rss_kib(pid) / 1024 for pid in big.worker_pids()}
        if not sizes:
            raise BenchError("found no gunicorn worker processes to measure")
        largest = max(sizes.values())
        self.rows.append(
            Row(
                f"Memory: RSS of a gunicorn worker, 100,000 threads served {served:.0f}s",
                f"{largest:.0f} MB",
                "workers: " + ", ".join(f"{mb:.0f} MB" for mb in sorted(sizes.values())),
                f"{largest:.0f} MB",
                f"< {MEMORY_LIMIT_MB} MB",
                largest < MEMORY_LIMIT_MB,
            )
        )

    def worker_rows(self) -> None:
        data = self.disk_scratch / "worker-data"
        data.mkdir()
        result = workers.measure(data, self.disk_scratch, settings=self.args.django_settings)
        self.rows.append(
            Row(
                f"Worker throughput: echo, zero delay, {workers.WORKERS} workers "
                f"(concurrency {result.concurrency})",
                f"{result.runs_per_second:.0f} runs/s",
                f"{workers.BURST_RUNS} runs queued at once",
                f"{result.runs_per_second:.0f} runs/s",
                ">= 50 runs/s",
                result.runs_per_second >= 50,
            )
        )
        self.rows.append(
            Row(
                "Worker pickup latency (queued to in_progress), p50",
                f"{result.pickup_p50_ms:.0f} ms (p90 {result.pickup_p90_ms:.0f} ms)",
                f"{workers.PACED_RUNS} runs at {workers.PACED_RATE:.0f}/s",
                f"{result.pickup_p50_ms:.0f} ms",
                "<= 200 ms",
                result.pickup_p50_ms <= 200,
            )
        )

    def durable_rows(self) -> None:
        data = self.disk_scratch / "durable-data"
        data.mkdir()
        found = durable.measure(data)
        bare_append, bare_record = "open+write+fsync", "write+fsync+rename+dir fsync"
        for key, name, bare, target in (
            ("append", "Durable append (files.append_line)", bare_append, True),
            ("record", "Durable record write (files.write_record)", bare_record, True),
            ("append_message", "  whole operation: append_message", bare_append, False),
            ("update_metadata", "  whole operation: update_thread_metadata", bare_record, False),
        ):
            store_s, bare_s = found[key]
            value = store_s / bare_s
            self.rows.append(
                Row(
                    name,
                    millis(store_s * 1000),
                    f"{bare} {millis(bare_s * 1000)}",
                    ratio(value),
                    "<= 1.5x" if target else "(shown, no target)",
                    value <= 1.5 if target else None,
                )
            )
        self.notes.append(
            f"Durable writes and the worker run on {_fs_type(data)}; a whole store "
            "operation adds the thread's lock, the busy check and the journal to its write."
        )


def _mean(results: list[LoadResult]) -> LoadResult:
    n = len(results)
    return LoadResult(
        rate=sum(r.rate for r in results) / n,
        p50_ms=sum(r.p50_ms for r in results) / n,
        p99_ms=sum(r.p99_ms for r in results) / n,
        requests=sum(r.requests for r in results),
    )


def _gunicorn_shape(server: Server) -> str:
    """Worker count and threads as the running gunicorn has them."""
    pids = server.worker_pids()
    threads = []
    for pid in pids:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        found = re.search(r"^Threads:\s+(\d+)", status, re.MULTILINE)
        if found:
            threads.append(found.group(1))
    return f"{len(pids)} worker processes ({'/'.join(threads)} OS threads)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--seconds", type=float, default=1.0, help=f"each wrk measurement ({ROUNDS} rounds a side)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the scratch directories")
    parser.add_argument(
        "--django-settings",
        default=os.environ.get("BENCH_DJANGO_SETTINGS", ""),
        help="a settings module to serve with instead of threadsite.settings, to try settings",
    )
    parser.add_argument(
        "--gunicorn-args",
        default=os.environ.get("BENCH_GUNICORN_ARGS", ""),
        help="extra gunicorn flags, to try settings (e.g. '--workers 3 --threads 8')",
    )
    args = parser.parse_args(argv)
    # SIGTERM (a CI timeout, kill) unwinds like Ctrl-C: servers stopped, scratch removed.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    started = time.monotonic()
    scratch = Path(tempfile.mkdtemp(prefix="threadsite-bench-", dir=_memory_dir()))
    disk_scratch = Path(tempfile.mkdtemp(prefix="threadsite-bench-disk-"))
    servers: list[Server] = []
    bench: Bench | None = None
    try:
        bench = Bench(args, scratch, disk_scratch)
        bench.log(
            f"scratch: {scratch} ({_fs_type(scratch)}), {disk_scratch} ({_fs_type(disk_scratch)})"
        )
        big, small, ids = bench.build()
        servers += [big, small]
        bench.log("measuring: run status poll")
        bench.poll_row(big, ids)
        bench.rendered_poll_row(small, ids)
        bench.log("measuring: threads pages")
        bench.threads_rows(big, small, ids)
        bench.log("measuring: thread page")
        bench.thread_page_row(big, ids)
        bench.log("measuring: memory")
        bench.memory_row(big, ids)
        bench.notes.append(f"Server: {big.describe()}, {_gunicorn_shape(big)}.")
        for server in servers:
            server.stop()
        bench.log("measuring: durable writes")
        bench.durable_rows()
        bench.log("measuring: run workers")
        bench.worker_rows()
    except BenchError as error:
        print(f"\nThe benchmark could not run: {error}", file=sys.stderr)
        return 2
    finally:
        for server in servers:
            server.stop()
        if args.keep:
            print(f"Kept {scratch} and {disk_scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)
            shutil.rmtree(disk_scratch, ignore_errors=True)
    assert bench is not None
    print()
    print(table(bench.rows))
    print()
    print(
        f"Ratios of requests/s and p99 are medians over {ROUNDS} rounds of the two sides measured "
        "in turn; the rates shown are each side's mean."
    )
    for note in bench.notes:
        print(note)
    print(f"Measured on {os.cpu_count()} CPUs in {time.monotonic() - started:.0f}s.")
    missed = [row.name for row in bench.rows if row.ok is False]
    if missed:
        print(f"\nMissed {len(missed)} target(s): " + "; ".join(missed))
        return 1
    print("\nEvery target met.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
