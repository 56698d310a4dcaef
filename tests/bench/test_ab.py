"""Interleaved A/B runs, the paired comparison, and the calibration slowdown."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from bench.adapters.embedded import EmbeddedOptions, EmbeddedReference, parse_embedded
from bench.cli import app
from bench.errors import UserError
from bench.results.collect import Run
from bench.results.compare import compare_paired
from bench.results.thresholds import Thresholds
from bench.scenarios.ab import AbRequest, round_order, run_ab
from bench.scenarios.config import load_scenario
from reference_impl import slowdown as slow
from tests.bench.test_compare import EXAMPLE, rescaled_summaries

ROOT = Path(__file__).resolve().parents[2]
RELAXED = """
[noise]
steal_pct = 100
other_cpu_pct = 1000
late_fraction = 1
p50_cv = 100
overhead_drift_ms = 1000

[validity]
cpu_limit_pct = 1000
loop_lag_p99_ms = 10000
min_rate_fraction = 0.01
"""


def test_rounds_alternate_abba() -> None:
    assert round_order(3) == [(0, "A"), (0, "B"), (1, "B"), (1, "A"), (2, "A"), (2, "B")]


def test_paired_comparison_finds_a_slowdown_that_rides_on_round_drift() -> None:
    base = json.loads(EXAMPLE.read_text())
    # Whole rounds drift by up to 2x (a busy machine); B is 25 % slower within each pair.
    drift = (1.0, 1.6, 0.9, 2.0, 1.2, 1.4)
    pairs = [(Run(f"a{i}", rescaled_summaries(base, d, f"a{i}")),
              Run(f"b{i}", rescaled_summaries(base, d * 1.25 * (1.02 if i % 2 else 0.98), f"b{i}")))
             for i, d in enumerate(drift)]
    found = compare_paired(pairs, Thresholds())
    p50 = next(c for c in found.changes if (c.subject, c.metric) == ("overall", "p50"))
    assert p50.method == "paired" and p50.verdict == "regression"
    assert p50.change == pytest.approx(0.25, abs=0.02)
    same = [(a, Run(b.source, rescaled_summaries(base, d * (1.02 if i % 2 else 0.98), b.source)))
            for i, ((a, b), d) in enumerate(zip(pairs, drift, strict=True))]
    assert not compare_paired(same, Thresholds()).regressions
    few = compare_paired(pairs[:3], Thresholds())
    assert few.inconclusive and not few.regressions


def test_ab_of_two_noop_targets_detects_the_slower(tmp_path: Path) -> None:
    path = tmp_path / "tiny.toml"
    path.write_text('version = 1\nname = "tiny"\nusers = 20\nrate = 100\n[mix]\nget_customer = 1'
                    '\n[profiles.quick]\nwarmup_s = 0.5\nmeasure_s = 1.5\ncooldown_s = 0\n'
                    'calibration_s = 0\n' + RELAXED)
    scenario = load_scenario(str(path), profile="quick")
    # Four pairs and a 20 ms gap: with two pairs the paired t-test has one degree of
    # freedom, and on a busy machine the spread of A's sub-millisecond figures alone can
    # keep a real slowdown from significance once Holm corrects over the gated metrics.
    req = AbRequest(scenario, a="noop://?delay_ms=0", b="noop://?delay_ms=20",
                    thresholds=Thresholds(min_runs=2), pairs=4, out=tmp_path / "ab")
    outcome = run_ab(req, say=lambda _m: None)
    assert outcome.complete and outcome.exit_code == 1
    assert outcome.comparison is not None
    assert [r["side"] for r in outcome.rounds] == ["A", "B", "B", "A", "A", "B", "B", "A"]
    saved = json.loads(outcome.path.read_text())
    assert saved["complete"] and saved["usable_pairs"] == 4
    assert saved["comparison"]["regressions"] >= 1
    assert all(Path(r["result"]).is_file() for r in saved["rounds"])


def test_ab_refuses_fewer_pairs_than_the_test_needs(tmp_path: Path) -> None:
    scenario = load_scenario("mixed", profile="quick")
    with pytest.raises(UserError, match="fewer than the 5 pairs"):
        AbRequest(scenario, a="noop://", b="noop://", thresholds=Thresholds(), pairs=3)
    result = CliRunner().invoke(app, ["ab", "--b", "reference://embedded?colour=red"])
    assert isinstance(result.exception, UserError)
    assert "unknown option colour" in str(result.exception)


def test_embedded_url_options() -> None:
    assert parse_embedded("reference://embedded") == EmbeddedOptions()
    assert parse_embedded("reference+http://127.0.0.1:1") is None
    found = parse_embedded(f"reference://embedded?source={ROOT}&slowdown_pct=25")
    assert found == EmbeddedOptions(source=ROOT, slowdown_pct=25.0)
    for bad, message in (("slowdown_ms=fast", "must be a number"),
                         ("slowdown_pct=5000", "between 0 and 1000"),
                         ("delay_ms=-1", "between 0 and 1000"),
                         ("source=/nonexistent", "not a crmbench checkout")):
        with pytest.raises(UserError, match=message):
            parse_embedded(f"reference://embedded?{bad}")


def test_slowdown_is_refused_outside_test_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(slow.TEST_MODE_ENV, raising=False)
    assert not slow.checked(0, 0).active
    with pytest.raises(UserError, match="CRMBENCH_TEST_MODE=1"):
        slow.checked(1, 0)
    monkeypatch.setenv(slow.TEST_MODE_ENV, "1")
    assert slow.checked(1, 25) == slow.Slowdown(1.0, 25.0)
    with pytest.raises(UserError, match="0-1000 ms"):
        slow.checked(-1, 0)


def test_slowdown_burns_before_the_response_starts(monkeypatch: pytest.MonkeyPatch) -> None:
    burnt: list[int] = []
    events: list[str] = []
    monkeypatch.setattr(slow, "_burn", lambda ns: (burnt.append(ns), events.append("burn")))

    async def inner(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    async def send(message: Any) -> None:
        events.append(message["type"])

    async def receive() -> Any:
        return {"type": "http.request"}

    async def wait(seconds: float) -> None:
        events.append(f"wait {seconds}")

    monkeypatch.setattr(slow.asyncio, "sleep", wait)
    wrapped = slow.slowed(inner, slow.Slowdown(ms=2.0, pct=0.0, delay_ms=1.5))
    asyncio.run(wrapped({"type": "http"}, receive, send))
    assert events == ["burn", "wait 0.0015", "http.response.start", "http.response.body"]
    assert burnt == [2_000_000]
    assert slow.slowed(inner, slow.Slowdown()) is inner


def test_slowdown_slows_the_direct_path_of_the_hot_routes_alike(
        monkeypatch: pytest.MonkeyPatch) -> None:
    burnt: list[int] = []
    events: list[str] = []
    monkeypatch.setattr(slow, "_burn", lambda ns: (burnt.append(ns), events.append("burn")))

    class App:
        def eager_handler(self, scope: Any) -> Any:
            return "handler" if scope["path"] == "/hot" else None

        async def respond(self, handler: Any, request: Any) -> Any:
            events.append(f"respond {handler} {request}")
            return "response"

    async def wait(seconds: float) -> None:
        events.append(f"wait {seconds}")

    monkeypatch.setattr(slow.asyncio, "sleep", wait)
    app = App()
    wrapped = slow.slowed_eager(app, slow.Slowdown(ms=2.0, pct=0.0, delay_ms=1.5))
    assert wrapped.eager_handler({"path": "/hot"}) == "handler"
    assert wrapped.eager_handler({"path": "/cold"}) is None
    assert asyncio.run(wrapped.respond("handler", "request")) == "response"
    assert events == ["respond handler request", "burn", "wait 0.0015"]
    assert burnt == [2_000_000]
    assert slow.slowed_eager(app, slow.Slowdown()) is app


def test_embedded_source_build_gets_its_own_cache(small_fixtures: Path, tmp_path: Path) -> None:
    fixtures = tmp_path / "fx"
    fixtures.mkdir()
    for f in small_fixtures.iterdir():
        if f.suffix in (".parquet", ".json"):
            (fixtures / f.name).symlink_to(f)
    options = EmbeddedOptions(source=ROOT, slowdown_ms=0.5)
    with EmbeddedReference(fixtures, options=options) as ref:
        assert ref.alive()
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{ref.port}/health", timeout=5) as resp:
            assert json.loads(resp.read())["status"] == "ok"
    caches = sorted(p.name for p in fixtures.glob("reference-*.sqlite3"))
    assert len(caches) == 1
