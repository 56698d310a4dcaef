"""Progress of a run on stderr (live on a terminal, a line every few seconds otherwise)."""

from __future__ import annotations

import time
from types import TracebackType
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table

from bench.scenarios.config import Scenario

PLAIN_EVERY_S = 5.0


class RunProgress:
    """Shows phase, time left, current rate, running p99 and errors."""

    def __init__(self, console: Console, scenario: Scenario) -> None:
        self.console = console
        self.scenario = scenario
        self.total = scenario.phases.total_s
        self._live: Live | None = None
        self._last_plain = 0.0
        self._errors = 0
        self._p99: list[float] = []

    def __enter__(self) -> RunProgress:
        if self.console.is_terminal:
            self._live = Live(self._render(None), console=self.console, transient=True,
                              refresh_per_second=2)
            self._live.__enter__()
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._live is not None:
            self._live.__exit__(et, ev, tb)

    def say(self, message: str) -> None:
        self.console.print(message, highlight=False, markup=False)

    def _render(self, summary: dict[str, Any] | None) -> Table:
        table = Table.grid(padding=(0, 2))
        if summary is None:
            table.add_row("starting...")
            return table
        left = max(self.total - summary["t"], 0.0)
        p99 = max(self._p99[-5:], default=0.0)
        table.add_row(
            f"[bold]{summary['phase']}[/]", f"{left:5.0f} s left",
            f"{summary['count']:6d} req/s", f"p99 (5 s) {p99:8.2f} ms",
            f"errors {self._errors}",
        )
        return table

    def update(self, summary: dict[str, Any], _acc: Any) -> None:
        self._errors += int(summary["failed"])
        self._p99.append(float(summary["p99"]))
        if self._live is not None:
            self._live.update(self._render(summary))
            return
        now = time.monotonic()
        if now - self._last_plain >= PLAIN_EVERY_S:
            self._last_plain = now
            left = max(self.total - summary["t"], 0.0)
            self.console.print(
                f"{summary['phase']:>8}  {left:4.0f} s left  {summary['count']:6d} req/s  "
                f"p99(5 s) {max(self._p99[-5:], default=0.0):.2f} ms  errors {self._errors}",
                highlight=False,
            )


def summary_table(result: dict[str, Any]) -> Table:
    """Per-operation figures of the measurement phase."""
    load = result["load"]
    table = Table(
        title=(f"{result['scenario']['name']} on {result['target']['url']}: "
               f"{load['achieved_rate']:.0f} of {load['target_rate']:g} req/s, "
               f"{load['users']} users"),
        title_justify="left",
    )
    for col in ("operation", "count", "errors", "req/s", "p50 ms", "p99 ms", "p99.9 ms",
                "max ms", "p99 svc ms"):
        table.add_column(col, justify="left" if col == "operation" else "right")
    rows = [*result["operations"].items(), ("overall", result["overall"])]
    for op, o in rows:
        lat, svc = o["latency_ms"]["intended"], o["latency_ms"]["actual"]
        table.add_row(
            op, str(o["count"]), str(o["errors"]), f"{o['throughput']:.1f}",
            f"{lat['p50']:.2f}", f"{lat['p99']:.2f}", f"{lat['p99_9']:.2f}", f"{lat['max']:.2f}",
            f"{svc['p99']:.2f}",
        )
    overhead = result.get("harness_overhead") or {}
    if overhead.get("latency_ms"):
        lat = overhead["latency_ms"]["intended"]
        table.caption = (f"harness overhead ({overhead['target']}): p50 {lat['p50']:.3f} ms, "
                         f"p99 {lat['p99']:.3f} ms")
    return table


def probes_table(result: dict[str, Any]) -> Table:
    """The probes' verdicts: each measured dimension with its figure, each capability."""
    table = Table(title="probes", title_justify="left")
    for col in ("capability", "status", "value", "reason"):
        table.add_column(col)
    for entry in (result.get("dimensions") or {}).values():
        value = entry.get("value")
        shown = "" if value is None else f"{value} {entry.get('unit', '')}".strip()
        table.add_row(str(entry.get("capability")), str(entry.get("status")), shown,
                      str(entry.get("reason") or ""))
    for cid, found in (result.get("capabilities") or {}).items():
        table.add_row(cid, str(found.get("status")), "", str(found.get("reason") or ""))
    return table
