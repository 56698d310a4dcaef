"""Export and erasure latency of the reference CRM under a mixed load (not a test).

While ``--users`` greenlets run the mixed workload's reads and writes (customer reads,
360 views, searches, updates, lead creation) against the target, N exports and N
erasures of customers of the loaded profile are timed one after another; p50, p99 and max
go to stdout as JSON. Erasure destroys data: against ``reference://embedded`` (default)
each run has its own database copy; a running target needs ``--allow-erase``.

Run: ``.venv/bin/python benchmarks/privacy_latency.py [--n 200] [--users 16]
[--target reference+http://HOST:PORT] [--fixtures fixtures/data/default]``
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import json  # noqa: E402
import random  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import IO, Any  # noqa: E402

import gevent  # noqa: E402

from bench.adapters.base import CustomerChanges, LeadInput, SearchQuery, Status  # noqa: E402
from bench.adapters.embedded import EmbeddedReference  # noqa: E402
from bench.adapters.reference import ReferenceAdapter  # noqa: E402
from bench.measure.hdr import LatencyHistogram  # noqa: E402

FIXTURES = Path("fixtures/data/default")


class _Sink:
    """Counts the bundle's bytes and keeps none, as a client streaming to disk would."""

    def __init__(self) -> None:
        self.bytes = 0

    def write(self, chunk: bytes) -> int:
        self.bytes += len(chunk)
        return len(chunk)


def _load(adapter: ReferenceAdapter, customers: int, stop: list[bool], seed: int) -> None:
    """One user of the mixed workload's verbs, back to back, until ``stop``."""
    rng = random.Random(seed)
    while not stop:
        cid = rng.randint(1, customers)
        pick = rng.random()
        if pick < 0.4:
            adapter.get_customer(cid)
        elif pick < 0.6:
            adapter.customer_360(cid)
        elif pick < 0.8:
            adapter.search_customers(SearchQuery(name_prefix="A", limit=20))
        elif pick < 0.9:
            adapter.update_customer(cid, CustomerChanges(employees=rng.randint(1, 9999)))
        else:
            adapter.create_lead(LeadInput(company_name="privacy bench", contact_name="Bench",
                                          region_id=1, source="web"))


def _timed(histogram: LatencyHistogram, call: Any, *args: Any) -> Status:
    started = time.perf_counter_ns()
    status: Status = call(*args)
    histogram.record_ns(time.perf_counter_ns() - started)
    return status


def _summary(histogram: LatencyHistogram) -> dict[str, float]:
    return {"count": histogram.count, "p50_ms": round(histogram.percentile_ms(50), 2),
            "p99_ms": round(histogram.percentile_ms(99), 2),
            "max_ms": round(histogram.max_ms, 2)}


def measure(adapter: ReferenceAdapter, n: int, users: int, seed: int) -> dict[str, Any]:
    """Time ``n`` exports and ``n`` erasures while ``users`` greenlets load the target."""
    customers = adapter.keyspace().customers
    stop: list[bool] = []
    load = [gevent.spawn(_load, adapter, customers, stop, seed + i) for i in range(users)]
    gevent.sleep(1.0)
    rng = random.Random(seed)
    exports, erasures = LatencyHistogram(), LatencyHistogram()
    statuses: dict[str, int] = {}
    sink = _Sink()
    out: IO[bytes] = sink  # type: ignore[assignment]
    for cid in rng.sample(range(1, customers + 1), n):
        status = _timed(exports, adapter.export_customer, cid, out)
        statuses[f"export {status.value}"] = statuses.get(f"export {status.value}", 0) + 1
    for cid in rng.sample(range(1, customers + 1), n):
        status = _timed(erasures, lambda c: adapter.erase_customer(c)[0], cid)
        statuses[f"erase {status.value}"] = statuses.get(f"erase {status.value}", 0) + 1
    stop.append(True)
    gevent.joinall(load, timeout=10)
    return {"customers": customers, "load_users": users, "export": _summary(exports),
            "erase": _summary(erasures), "statuses": statuses,
            "export_bytes_mean": round(sink.bytes / max(n, 1))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", default="reference://embedded")
    parser.add_argument("--fixtures", type=Path, default=FIXTURES)
    parser.add_argument("--n", type=int, default=200, help="exports and erasures each")
    parser.add_argument("--users", type=int, default=16, help="greenlets of mixed load")
    parser.add_argument("--seed", type=int, default=17)
    parser.add_argument("--allow-erase", action="store_true",
                        help="erase customers of a running target (destroys them)")
    args = parser.parse_args(argv)
    say = lambda msg: print(msg, file=sys.stderr)  # noqa: E731
    if args.target == "reference://embedded":
        with EmbeddedReference(args.fixtures, say=say) as ref:
            adapter = ReferenceAdapter.from_url(ref.url, env={"CRMBENCH_API_TOKEN": ref.token})
            adapter.open()
            try:
                result = measure(adapter, args.n, args.users, args.seed)
            finally:
                adapter.close()
    else:
        if not args.allow_erase:
            parser.error("erasing customers of a running target needs --allow-erase")
        adapter = ReferenceAdapter.from_url(args.target)
        adapter.open()
        try:
            result = measure(adapter, args.n, args.users, args.seed)
        finally:
            adapter.close()
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
