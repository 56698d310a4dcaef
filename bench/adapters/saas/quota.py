"""Rate plans: the highest rate a vendor's documented quotas allow for one run.

A vendor platform limits calls per company, per app or per API over a window (a minute,
20 seconds, a day). A run that sends more than that is refused by the platform (and may
block the company's real integrations for an hour), or by the adapter's own limiter
before anything is sent; either way the result fills with ``rate_limited`` outcomes that
say nothing about the platform's speed. So before a vendor run the harness plans:

    for each quota of N calls per W seconds, with c calls charged per request of the mix
        W >= the run's length   rate <= headroom * budget / (c * length)
                                (budget: what is left of the allocation, else N)
        W <  the run's length   rate <= headroom * N / (c * W)
    for each cap of K calls in flight, users <= K

and runs at the lowest of those rates (``scaled``), or refuses with the numbers when
asked to (``--over-quota refuse``) or when the plan leaves less than one call a minute.
``rate_limited`` outcomes of a planned run then mean the vendor throttled, not the harness.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from bench.adapters.base import RunPlan

Action = Literal["ok", "scaled", "refused"]
OVER_QUOTA = ("scale", "refuse")
# Share of each quota a run may use: the rest is for the company's own integrations.
HEADROOM = 0.8
# Below one call a minute a run measures nothing worth its quota.
MIN_RATE = 1 / 60


@dataclass(frozen=True)
class Quota:
    """At most ``calls`` calls per ``window_s`` seconds, as the vendor documents it."""

    name: str
    calls: int
    window_s: float
    # Calls charged to this quota per operation of the mixed workload; None: 1 per op.
    costs: Mapping[str, float] | None = None
    # What the platform reports is left of the allocation now (daily allocations).
    remaining: int | None = None
    source: str = ""
    # The documentation leaves the figure uncertain; a safe value is used.
    assumed: bool = False

    def per_request(self, mix: Mapping[str, float]) -> float:
        """Calls charged to this quota by one request of ``mix`` (weights, any scale)."""
        total = sum(w for w in mix.values() if w > 0)
        if total <= 0:
            return 0.0
        if self.costs is None:
            return 1.0
        return sum(w * float(self.costs.get(op, 0.0)) for op, w in mix.items() if w > 0) / total

    def describe(self) -> str:
        window = _window(self.window_s)
        left = f", {self.remaining:,} left" if self.remaining is not None else ""
        flag = " (assumed: the documentation is not definite)" if self.assumed else ""
        src = f" [{self.source}]" if self.source else ""
        return f"{self.name}: {self.calls:,} calls per {window}{left}{flag}{src}"


@dataclass(frozen=True)
class Concurrency:
    """At most ``limit`` calls in flight at once (only calls that last longer than
    ``over_s`` seconds, when set: then it caps nothing a healthy run sends)."""

    name: str
    limit: int
    source: str = ""
    assumed: bool = False
    over_s: float | None = None

    @property
    def caps_users(self) -> bool:
        return self.over_s is None

    def describe(self) -> str:
        flag = " (assumed: the documentation is not definite)" if self.assumed else ""
        src = f" [{self.source}]" if self.source else ""
        which = f" lasting over {self.over_s:g} s" if self.over_s is not None else ""
        return f"{self.name}: at most {self.limit:,} calls{which} in flight{flag}{src}"


@dataclass(frozen=True)
class RatePlan:
    """What the run asked for, what the quotas allow, and what the harness does about it."""

    requested: float
    allowed: float
    action: Action
    binding: str | None
    users: int
    lines: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {"requested_rate": self.requested, "allowed_rate": self.allowed,
                "action": self.action, "binding": self.binding, "users": self.users,
                "quotas": list(self.lines)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RatePlan:
        return cls(float(data["requested_rate"]), float(data["allowed_rate"]),
                   data["action"], data.get("binding"), int(data["users"]),
                   tuple(str(x) for x in data.get("quotas", ())))

    def summary(self) -> str:
        if self.action == "ok" and not self.lines:
            return (f"no quota is documented: {self.requested:g} req/s is sent as asked; "
                    "throttling answers count as rate_limited")
        if self.action == "ok":
            return (f"{self.requested:g} req/s fits the documented quotas "
                    f"(at most {self.allowed:.4g} req/s)")
        verb = "scaled" if self.action == "scaled" else "refused"
        return (f"{verb}: {self.requested:g} req/s asked, the documented quotas allow "
                f"{self.allowed:.4g} req/s with {self.users} users (bound by {self.binding})")


def _window(seconds: float) -> str:
    for size, unit in ((86_400, "day"), (3_600, "hour"), (60, "minute"), (1, "second")):
        if seconds >= size and seconds % size == 0:
            n = int(seconds // size)
            return unit if n == 1 else f"{n} {unit}s"
    return f"{seconds:g} s"


def quota_rate(quota: Quota, plan: RunPlan, headroom: float = HEADROOM) -> float:
    """The highest rate (req/s) at which ``plan``'s mix stays inside ``quota``, beside the
    in-run probes' calls (charged to quotas that count every call)."""
    per_request = quota.per_request(plan.mix) if plan.mix else 1.0
    if per_request <= 0:
        return math.inf
    if quota.window_s >= plan.duration_s > 0:
        budget = quota.calls if quota.remaining is None else min(quota.remaining, quota.calls)
        calls_per_s = headroom * max(budget, 0) / plan.duration_s
    else:
        calls_per_s = headroom * quota.calls / quota.window_s
    probes = plan.probe_rate if quota.costs is None else 0.0
    return max(calls_per_s - probes, 0.0) / per_request


def plan_rate(
    quotas: Sequence[Quota], plan: RunPlan, *, concurrency: Sequence[Concurrency] = (),
    headroom: float = HEADROOM,
) -> RatePlan:
    """The plan for ``plan``: ``ok``, ``scaled`` to the binding quota, or ``refused``."""
    requested = float(plan.rate)
    allowed, binding = math.inf, None
    for quota in quotas:
        rate = quota_rate(quota, plan, headroom)
        if rate < allowed:
            allowed, binding = rate, quota.name
    users = plan.users
    cap = min((c for c in concurrency if c.caps_users), key=lambda c: c.limit, default=None)
    if cap is not None and cap.limit < users:
        users = max(cap.limit, 1)
    lines = tuple(q.describe() for q in quotas) + tuple(c.describe() for c in concurrency)
    if allowed == math.inf:
        allowed = requested
    if allowed >= requested and users == plan.users:
        return RatePlan(requested, allowed, "ok", binding, users, lines)
    if cap is not None and users != plan.users and allowed >= requested:
        binding = cap.name
    allowed = min(allowed, requested)
    refuse = plan.over_quota == "refuse" or allowed < MIN_RATE
    return RatePlan(requested, allowed, "refused" if refuse else "scaled", binding, users,
                    lines)
