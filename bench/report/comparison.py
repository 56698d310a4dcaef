"""A comparison as a rich table (stderr) and as Markdown for pull-request comments."""

from __future__ import annotations

from collections.abc import Sequence

from rich.markup import escape
from rich.table import Table

from bench.report.matrix import fmt
from bench.results.compare import Change, Comparison, Estimate

MARKDOWN_LIMIT = 60_000
ICONS = {"regression": "🔴", "improvement": "🟢", "worse": "🟠", "better": "🟢",
         "unchanged": "⚪", "not significant": "🟡", "inconclusive": "⚪", "untested": "⚫"}
STYLES = {"regression": "bold red", "improvement": "green", "worse": "red", "better": "green",
          "not significant": "yellow", "inconclusive": "dim", "untested": "dim"}
ORDER = ("regression", "improvement", "worse", "better", "not significant", "inconclusive",
         "untested", "unchanged")


def _side(e: Estimate | None) -> str:
    if e is None:
        return "—"
    return f"{fmt(e.value)} [{fmt(e.low)}, {fmt(e.high)}]"


def _change(c: Change) -> str:
    if c.change is None:
        return "—"
    interval = ""
    if c.change_low is not None and c.change_high is not None:
        interval = f" [{c.change_low:+.1%}, {c.change_high:+.1%}]"
    return f"{c.change:+.1%}{interval}"


def _p(c: Change) -> str:
    """One-sided p-value in the direction the figure moved."""
    if c.change is None:
        return "—"
    worse = c.change > 0 if c.direction == "smaller" else c.change < 0
    p = c.p_adjusted if c.gated else c.p_worse if worse else c.p_better
    if p is None:
        return "—"
    return f"{p:.3f}" if p >= 0.001 else "<0.001"


def _cells(c: Change) -> list[str]:
    note = f" ({c.note})" if c.note else ""
    return [c.subject, f"{c.metric} ({c.unit})", _side(c.base), _side(c.current), _change(c),
            f"±{c.threshold}", _p(c), c.method, f"{c.verdict}{note}"]


HEADERS = ["subject", "metric", "base [95% CI]", "current [95% CI]", "change [95% CI]",
           "threshold", "p", "method", "verdict"]


def table(comparison: Comparison) -> Table:
    """All changes, worst first, for the terminal."""
    t = Table(title=escape(f"{comparison.current} vs {comparison.base}"), title_justify="left")
    for h in HEADERS:
        t.add_column(h, justify="left" if h in ("subject", "metric", "method", "verdict")
                     else "right")
    for c in _sorted(comparison.changes):
        t.add_row(*map(escape, _cells(c)), style=STYLES.get(c.verdict))
    if comparison.notes:
        t.caption = escape("; ".join(comparison.notes))
    return t


def _sorted(changes: Sequence[Change]) -> list[Change]:
    return sorted(changes, key=lambda c: ORDER.index(c.verdict))


def _row(c: Change) -> str:
    cells = _cells(c)
    cells[-1] = f"{ICONS[c.verdict]} {cells[-1]}"
    return "| " + " | ".join(x.replace("|", "\\|") for x in cells) + " |"


def markdown(comparison: Comparison, limit: int = MARKDOWN_LIMIT) -> str:
    """Markdown under ``limit`` characters: rows that do not fit are counted, not shown."""
    t = comparison.thresholds
    verdict = (f"**{len(comparison.regressions)} regression(s)**" if comparison.regressions
               else "**inconclusive**" if comparison.inconclusive else "**no regression**")
    scope = "overall and dimensions" if t.scope == "overall" else "every operation"
    head = [
        f"### crmbench: {comparison.current} vs {comparison.base}", "",
        f"{verdict}, {len(comparison.improvements)} improvement(s). A regression exceeds its "
        f"threshold (p50 {t.p50}, p99 {t.p99}, throughput {t.throughput}) and is "
        f"significant at alpha = {t.alpha:g} on run-level figures, Holm-adjusted over the "
        f"gated metrics ({scope}); p is one-sided, Holm-adjusted on gated rows and "
        f"unadjusted on the others (🟠 worse / 🟢 better there is a hint, not a verdict).", "",
    ]
    head += [f"> {note}" for note in comparison.notes]
    head += ["", "| " + " | ".join(HEADERS) + " |", "|" + "---|" * len(HEADERS)]
    text = "\n".join(head)
    rows = _sorted(comparison.changes)
    for i, c in enumerate(rows):
        line = _row(c)
        tail = f"\n\n_{len(rows) - i} more row(s) left out to stay under {limit:,} characters; " \
               "`--json` has them all._\n"
        if len(text) + len(line) + 1 + len(tail) > limit:
            return text + tail
        text += "\n" + line
    return text + "\n"
