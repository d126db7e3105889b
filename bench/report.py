"""The results table: each row's measurement, its baseline, the ratio and the target."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Row:
    name: str
    measured: str
    baseline: str
    result: str  # the number compared with the target ("0.93x", "84 runs/s")
    target: str
    ok: bool | None  # None: shown for reference, no target


def table(rows: list[Row]) -> str:
    """A Markdown table (readable in a terminal, pasteable into docs/performance.md)."""
    header = ("Row", "Measured", "Baseline (same run)", "Result", "Target", "Met")
    cells = [header] + [
        (r.name, r.measured, r.baseline, r.result, r.target, _met(r.ok)) for r in rows
    ]
    widths = [max(len(line[i]) for line in cells) for i in range(len(header))]

    def line(values: tuple[str, ...]) -> str:
        return "| " + " | ".join(v.ljust(w) for v, w in zip(values, widths, strict=True)) + " |"

    rule = "| " + " | ".join("-" * w for w in widths) + " |"
    return "\n".join([line(cells[0]), rule, *(line(c) for c in cells[1:])])


def _met(ok: bool | None) -> str:
    return "—" if ok is None else "yes" if ok else "**NO**"


def ratio(value: float) -> str:
    return f"{value:.2f}x"


def per_second(value: float) -> str:
    return f"{value:,.0f}/s"


def millis(value: float) -> str:
    return f"{value:.2f} ms" if value < 10 else f"{value:.1f} ms"
