"""The benchmark's own plumbing: reading wrk's report and printing the table. No timings
are asserted anywhere in the test suite; `make bench` checks the targets."""

from __future__ import annotations

import pytest

from bench.load import LoadResult, parse_wrk
from bench.report import Row, table
from bench.server import BenchError

WRK_REPORT = """\
Running 4s test @ http://127.0.0.1:8765/healthz
  2 threads and 16 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    19.48ms   30.94ms 288.38ms   93.90%
    Req/Sec   641.64    254.84     1.22k    61.46%
  Latency Distribution
     50%  850.00us
     75%   21.67ms
     90%   38.39ms
     99%    1.20s
  6198 requests in 5.03s, 3.42MB read
Requests/sec:   1232.67
Transfer/sec:    696.01KB
"""


def test_wrk_report_gives_rate_and_percentiles_in_milliseconds():
    assert parse_wrk(WRK_REPORT) == LoadResult(
        rate=1232.67, p50_ms=0.85, p99_ms=1200.0, requests=6198
    )


@pytest.mark.parametrize(
    "failure",
    [
        "  Non-2xx or 3xx responses: 12\n",
        "  Socket errors: connect 0, read 0, write 0, timeout 3\n",
    ],
)
def test_failed_requests_make_the_measurement_invalid(failure):
    report = WRK_REPORT.replace("Requests/sec:", failure + "Requests/sec:")

    with pytest.raises(BenchError, match="failed requests"):
        parse_wrk(report)


def test_an_unreadable_report_is_an_error_not_a_zero():
    with pytest.raises(BenchError):
        parse_wrk("Requests/sec: 10\n")


def test_the_table_marks_missed_targets():
    rows = [
        Row("Poll", "900/s", "/healthz 1,000/s", "0.90x", ">= 0.6x", True),
        Row("Memory", "170 MB", "workers: 160 MB, 170 MB", "170 MB", "< 150 MB", False),
        Row("  Poll, rendered", "500/s", "/healthz 1,000/s", "0.50x", "(shown, no target)", None),
    ]

    lines = table(rows).splitlines()

    assert lines[0].startswith("| Row ")
    assert set(lines[1]) <= {"|", "-", " "}
    assert lines[2].rstrip().endswith("| yes    |")
    assert "**NO**" in lines[3]
    assert lines[4].rstrip().endswith("| —      |")  # no target: neither met nor missed
    assert len({len(line) for line in lines}) == 1  # columns line up
