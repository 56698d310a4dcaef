"""Charts of the HTML report (plotly). Each chart renders; one without data says why.

Claimed figures are drawn hollow, grey and hatched, with "claimed" in their legend
entry, so they cannot be read as measurements.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from plotly import graph_objects as go
from plotly.subplots import make_subplots

from bench.claims import Claims
from bench.report.matrix import Cell
from bench.results import stats
from bench.results.collect import Run

HEIGHT = 440
CLAIMED = "#9e9e9e"
# Percentiles as "nines" (x = 1 / (1 - p)): p50 at 2, p99 at 100, p99.999 at 100,000.
NINES = np.linspace(np.log10(2), 5, 60)
SLA_LEVELS = ("field", "process", "action")
CLAIM_BARS = (("agent.latency", "agent latency (ms)"), ("cdp.event_delay", "event delay (ms)"),
              ("workflow.max_nodes", "workflow max nodes"))


@dataclass(frozen=True)
class Chart:
    """A figure with the id of its div, its title and a caption saying how to read it."""

    key: str
    title: str
    caption: str
    figure: go.Figure


def _layout(fig: go.Figure, height: int = HEIGHT) -> go.Figure:
    fig.update_layout(template="plotly_white", height=height,
                      margin={"l": 60, "r": 30, "t": 40, "b": 50},
                      legend={"font": {"size": 11}})
    return fig


def _empty(message: str) -> go.Figure:
    fig = go.Figure()
    fig.add_annotation(text=message, x=0.5, y=0.5, xref="paper", yref="paper",
                       showarrow=False, font={"size": 15, "color": "#666"})
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    return _layout(fig, 260)


def _measured(groups: dict[str, list[Run]]) -> dict[str, list[Run]]:
    return {p: m for p, runs in groups.items() if (m := [r for r in runs if r.measured])}


def spectrum(groups: dict[str, list[Run]]) -> Chart:
    """Latency percentile spectrum per operation, from the merged histograms, log-log."""
    title = "Latency percentile spectrum per operation"
    caption = ("Latency from the intended send time (coordinated omission included), "
               "from the HDR histograms merged over each group's valid runs; log scales.")
    measured = _measured(groups)
    if not measured:
        return Chart("spectrum", title, caption, _empty("not-measured: no mixed-workload run"))
    fig = go.Figure()
    for platform, runs in measured.items():
        ops = list(dict.fromkeys(op for r in runs for op in r.operations()))
        for op in ops:
            hist = stats.buckets([r.operations()[op]["histograms"]["intended"]
                                  for r in runs if op in r.operations()])
            if not hist.total:
                continue
            nines = NINES[: max(int(np.searchsorted(NINES, np.log10(hist.total), side="right")), 1)]
            ps = 100 * (1 - 10 ** -nines)
            name = op if len(measured) == 1 else f"{platform} · {op}"
            fig.add_scatter(x=10**nines, y=hist.percentiles(ps.tolist()), name=name, mode="lines",
                            legendgroup=platform, customdata=ps,
                            line={"width": 3.5 if op == "overall" else 1.5},
                            hovertemplate="p%{customdata:.3f}: %{y:.3f} ms")
    ticks = [2, 10, 100, 1_000, 10_000, 100_000]
    fig.update_xaxes(type="log", tickvals=ticks, title="percentile",
                     ticktext=["50%", "90%", "99%", "99.9%", "99.99%", "99.999%"])
    fig.update_yaxes(type="log", title="latency (ms)")
    return Chart("spectrum", title, caption, _layout(fig, 520))


def timeline(groups: dict[str, list[Run]]) -> Chart:
    """Per-second p50/p99 latency with completed requests, per platform's first run."""
    title = "Latency over time with throughput"
    caption = ("Per second: p50 and p99 latency (left, log) and completed requests (bars, "
               "right) of each group's first valid run; warm-up and cool-down shaded.")
    measured = _measured(groups)
    if not measured:
        return Chart("timeline", title, caption, _empty("not-measured: no mixed-workload run"))
    names = [f"{p}: run {runs[0].result.get('run_id')}" for p, runs in measured.items()]
    fig = make_subplots(rows=len(measured), cols=1, subplot_titles=names,
                        specs=[[{"secondary_y": True}]] * len(measured), vertical_spacing=0.12)
    for i, runs in enumerate(measured.values(), start=1):
        rows = runs[0].result.get("timeline") or []
        t = [row["t"] for row in rows]
        first = i == 1
        fig.add_bar(x=t, y=[row.get("completed", row["rate"]) for row in rows],
                    name="completed req/s", marker_color="#90caf9", opacity=0.5,
                    legendgroup="rate", showlegend=first, row=i, col=1, secondary_y=True)
        for key, colour in (("p50_ms", "#1e88e5"), ("p99_ms", "#d81b60")):
            fig.add_scatter(x=t, y=[max(row[key], 1e-3) for row in rows], mode="lines",
                            name=key.replace("_ms", " ms"), line={"color": colour},
                            legendgroup=key, showlegend=first, row=i, col=1)
        phases = runs[0].scenario.get("phases") or {}
        warm, measure = phases.get("warmup_s"), phases.get("measure_s")
        if warm and measure and t:
            for x0, x1, label in ((0, warm, "warm-up"), (warm + measure, max(t), "cool-down")):
                if x1 > x0:
                    fig.add_vrect(x0=x0, x1=x1, fillcolor="#bdbdbd", opacity=0.2, line_width=0,
                                  annotation_text=label, annotation_position="top left",
                                  row=i, col=1)
        fig.update_yaxes(type="log", title_text="ms", row=i, col=1, secondary_y=False)
        fig.update_yaxes(title_text="req/s", type="linear", rangemode="tozero", showgrid=False,
                         tickmode="auto",
                         row=i, col=1, secondary_y=True)
        fig.update_xaxes(title_text="seconds since start", row=i, col=1)
    return Chart("timeline", title, caption, _layout(fig, 330 * len(measured) + 60))


def _step_ms(value: object) -> float | None:
    # Means add up along the steps of a run, percentiles do not: stack means.
    if isinstance(value, dict):
        value = value.get("mean", value.get("p50"))
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None


def agent_breakdown(groups: dict[str, list[Run]]) -> Chart:
    """Agent latency per step (median over runs), stacked per platform."""
    title = "Agent step breakdown"
    caption = ("Lead-intake agent: mean time per step (identify, history, inventory, quote, "
               "notify), median over each platform's runs with a breakdown. Server-reported: "
               "the platform's own step durations, not timed by the harness.")
    per_platform: dict[str, dict[str, float]] = {}
    for platform, runs in groups.items():
        steps: dict[str, list[float]] = {}
        for run in runs:
            breakdown = (run.dimension("agent.latency") or {}).get("breakdown")
            if isinstance(breakdown, dict):
                for step, value in breakdown.items():
                    if (ms := _step_ms(value)) is not None:
                        steps.setdefault(str(step), []).append(ms)
        if steps:
            per_platform[platform] = {s: float(np.median(v)) for s, v in steps.items()}
    if not per_platform:
        return Chart("agent-steps", title, caption,
                     _empty("not-measured: no agent probe result with a step breakdown"))
    fig = go.Figure()
    platforms = list(per_platform)
    for step in dict.fromkeys(s for steps in per_platform.values() for s in steps):
        fig.add_bar(y=platforms, x=[per_platform[p].get(step, 0.0) for p in platforms],
                    name=step, orientation="h", hovertemplate=f"{step}: %{{x:.1f}} ms")
    fig.update_layout(barmode="stack")
    fig.update_xaxes(title="ms")
    return Chart("agent-steps", title, caption, _layout(fig, 160 + 60 * len(platforms)))


def event_delay(groups: dict[str, list[Run]]) -> Chart:
    """Distribution of event-to-profile delays per platform (from the probe histograms)."""
    title = "Event-delay histogram"
    caption = ("Behavioural event sent -> profile updated and pushed, observed by the harness "
               "on one clock; share of events per HDR bucket, log scale.")
    fig = go.Figure()
    for platform, runs in groups.items():
        encoded = [h for r in runs
                   if isinstance(h := (r.dimension("cdp.event_delay") or {}).get("histogram"),
                                 str)]
        if not encoded:
            continue
        hist = stats.buckets(encoded)
        if hist.total:
            # HDR buckets are far finer than a chart can show: regroup them per log bin.
            edges = np.logspace(np.floor(np.log10(hist.values_ms.min())),
                                np.ceil(np.log10(hist.values_ms.max())) + 1e-9, num=60)
            shares, _ = np.histogram(hist.values_ms, bins=edges, weights=hist.counts)
            fig.add_bar(x=np.sqrt(edges[:-1] * edges[1:]), y=shares / hist.total,
                        width=np.diff(edges), name=platform, opacity=0.6,
                        hovertemplate="~%{x:.3g} ms: %{y:.2%}")
    if not fig.data:
        return Chart("event-delay", title, caption,
                     _empty("not-measured: no event-delay probe result with a histogram"))
    fig.update_layout(barmode="overlay")
    fig.update_xaxes(type="log", title="delay (ms)")
    fig.update_yaxes(title="share of events", tickformat=".1%")
    return Chart("event-delay", title, caption, _layout(fig))


def workflow_scaling(groups: dict[str, list[Run]]) -> Chart:
    """Deploy and run time against workflow size, log-log, per platform."""
    title = "Workflow scaling"
    caption = ("No-code workflow (DAG) of growing size: deploy and run time per number of "
               "nodes; the largest accepted and executed size is the measured maximum. "
               "Beside each platform: what doubling N multiplies deploy + run time by, on a "
               "power law fitted to the sizes from 1,024 up (2 when linear).")
    fig = go.Figure()
    for platform, runs in groups.items():
        dim = next((d for r in runs
                    if isinstance((d := r.dimension("workflow.max_nodes") or {}).get("curve"),
                                  list) and d["curve"]), None)
        if dim is None:
            continue
        curve, fitted = dim["curve"], dim.get("fitted_doubling_ratio")
        group = platform if fitted is None else f"{platform}: x{fitted} per doubling"
        points = sorted((p for p in curve if isinstance(p, dict) and p.get("nodes")),
                        key=lambda p: float(p["nodes"]))
        nodes = [float(p["nodes"]) for p in points]
        for key, dash in (("deploy_s", "solid"), ("run_s", "dash")):
            fig.add_scatter(x=nodes, y=[p.get(key) for p in points], mode="lines+markers",
                            name=f"{platform} {key.removesuffix('_s')}", line={"dash": dash},
                            legendgroup=platform, legendgrouptitle_text=group)
    if not fig.data:
        return Chart("workflow", title, caption,
                     _empty("not-measured: no workflow probe result with a scaling curve"))
    fig.update_xaxes(type="log", title="nodes")
    fig.update_yaxes(type="log", title="seconds")
    return Chart("workflow", title, caption, _layout(fig))


def _level(text: str) -> str | None:
    lowered = text.lower()
    for level in SLA_LEVELS:
        if lowered == level or lowered.startswith(f"{level} level"):
            return level
    return None


def sla_levels(groups: dict[str, list[Run]], platforms: Sequence[str],
               claims: Claims | None) -> Chart:
    """Finest SLA level per platform: measured filled, claimed hollow and grey."""
    title = "SLA granularity per platform"
    caption = ("Finest level an SLA attaches to (field < process < action). Filled: measured "
               "by the probe. Hollow grey: claimed, where the claim names a level.")
    measured: dict[str, str] = {}
    for platform in platforms:
        for run in groups.get(platform, []):
            value = (run.dimension("sla.granularity") or {}).get("value")
            if isinstance(value, str) and (level := _level(value)):
                measured[platform] = level
    claimed: dict[str, tuple[str, str]] = {}
    if claims is not None:
        for platform in platforms:
            claim = claims.for_platform(platform).get("sla.granularity")
            if claim is not None and (level := _level(str(claim.value))):
                claimed[platform] = (level, str(claim.value))
    if not measured and not claimed:
        return Chart("sla", title, caption, _empty("not-measured: no SLA probe result"))
    labels = {p: p if p in measured else f"{p}<br>(not-measured)" for p in platforms}
    fig = go.Figure()
    # An invisible point per platform keeps every platform on the axis.
    fig.add_scatter(x=list(labels.values()), y=[SLA_LEVELS[0]] * len(labels), mode="markers",
                    marker={"opacity": 0}, showlegend=False, hoverinfo="skip")
    fig.add_scatter(x=[labels[p] for p in measured], y=list(measured.values()), mode="markers",
                    name="measured", marker={"size": 18, "color": "#1e88e5"})
    fig.add_scatter(x=[labels[p] for p in claimed], y=[c[0] for c in claimed.values()],
                    mode="markers", name="claimed (not verified)",
                    text=[c[1] for c in claimed.values()], hovertemplate="claimed: %{text}",
                    marker={"size": 18, "symbol": "diamond-open", "color": CLAIMED,
                            "line": {"width": 2}})
    fig.update_yaxes(categoryorder="array", categoryarray=list(SLA_LEVELS), title="level")
    return Chart("sla", title, caption, _layout(fig, 380))


def claimed_vs_measured(cells: Sequence[Cell], platforms: Sequence[str]) -> Chart:
    """Measured figures beside claimed ones for the numeric dimensions, log scale."""
    title = "Claimed vs measured"
    caption = ("Solid blue: measured here (median, 95% interval when repeated). Grey hatched: "
               "claimed by vendors or the trade press, never verified. A missing blue bar "
               "means not-measured.")
    fig = make_subplots(rows=1, cols=len(CLAIM_BARS), subplot_titles=[t for _, t in CLAIM_BARS])
    for col, (dim, _) in enumerate(CLAIM_BARS, start=1):
        rows = {(c.platform, c.source): c for c in cells if c.dimension == dim}
        mine = [rows.get((p, "measured")) for p in platforms]
        theirs = [rows.get((p, "claimed")) for p in platforms]
        fig.add_bar(x=list(platforms), y=[c.value if c else None for c in mine],
                    name="measured", marker_color="#1e88e5", legendgroup="measured",
                    showlegend=col == 1, row=1, col=col,
                    error_y={"type": "data", "symmetric": False,
                             "array": [(c.high - c.value) if c and c.high is not None
                                       and c.value is not None else 0 for c in mine],
                             "arrayminus": [(c.value - c.low) if c and c.low is not None
                                            and c.value is not None else 0 for c in mine]})
        fig.add_bar(x=list(platforms), y=[c.value if c else None for c in theirs],
                    name="claimed (not verified)", legendgroup="claimed", showlegend=col == 1,
                    marker={"color": "white", "line": {"color": CLAIMED, "width": 2},
                            "pattern": {"shape": "/", "fgcolor": CLAIMED}},
                    hovertext=[c.text if c else None for c in theirs], row=1, col=col,
                    hovertemplate="%{hovertext}<extra></extra>")
        for platform, claim in zip(platforms, theirs, strict=True):
            if claim is not None and claim.value is None:
                fig.add_annotation(x=platform, y=0.5, yref="y domain", text="claimed:<br>"
                                   + claim.text.removeprefix("claimed: ").split(" (")[0],
                                   showarrow=False, font={"color": "#757575", "size": 11},
                                   row=1, col=col)
        fig.update_yaxes(type="log", row=1, col=col)
    fig.update_layout(barmode="group")
    return Chart("claims", title, caption, _layout(fig, 460))


def all_charts(
    groups: dict[str, list[Run]], cells: Sequence[Cell], platforms: Sequence[str],
    claims: Claims | None, *, columns: dict[str, list[Run]] | None = None,
) -> list[Chart]:
    """The charts of the report, in page order: per group of runs, SLA levels per column."""
    return [
        spectrum(groups),
        timeline(groups),
        agent_breakdown(groups),
        event_delay(groups),
        workflow_scaling(groups),
        sla_levels(groups if columns is None else columns, platforms, claims),
        claimed_vs_measured(cells, platforms),
    ]
