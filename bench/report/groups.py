"""Comparable groups of runs and the common load at which platforms are compared.

A group holds the runs of one platform, configuration label (``crmbench run --label``),
scenario, offered load (rate and users) and fixture size (customers in the keyspace).
Figures of different groups are never pooled. Runs that are incomplete, invalid or noisy
stay in their group for provenance but give no figure (:attr:`Run.exclusion`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from bench.results.collect import Run


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def column_of(platform: str, label: str | None) -> str:
    """A matrix column: the platform, with its configuration label when it has one."""
    return f"{platform} ({label})" if label else platform


def load_text(rate: float | None, users: int | None) -> str:
    """``20 req/s, 50 users``; ``no load`` for probe-only and capacity runs."""
    if rate is None:
        return "no load"
    return f"{rate:,.6g} req/s, {users if users is not None else '?'} users"


def fixture_text(customers: int | None) -> str:
    return f"{customers:,} customers" if customers is not None else "fixture size unknown"


@dataclass(frozen=True)
class GroupKey:
    """What must be equal for runs to be pooled."""

    platform: str
    label: str | None
    scenario: str
    rate: float | None
    users: int | None
    customers: int | None

    @property
    def column(self) -> str:
        return column_of(self.platform, self.label)

    @property
    def load(self) -> tuple[float, int | None] | None:
        return None if self.rate is None else (self.rate, self.users)


def key_of(run: Run) -> GroupKey:
    """The group of a run; probe-only and capacity runs offer no load of their own."""
    scenario = run.scenario
    rate: float | None = None
    users: int | None = None
    if scenario.get("workload") is not False and run.dimension("crud.capacity") is None:
        load = run.result.get("load") or {}
        rate = _number(scenario.get("rate", load.get("target_rate")))
        found = _number(scenario.get("users", load.get("users")))
        users = int(found) if found is not None else None
    return GroupKey(run.platform, run.label, str(scenario.get("name") or "?"), rate, users,
                    run.customers)


@dataclass
class Group:
    """Runs that may be pooled; ``id`` (G1, G2, ...) is how cells name their source."""

    id: str
    key: GroupKey
    runs: list[Run]

    @property
    def used(self) -> list[Run]:
        """Runs that give figures (complete, valid, not noisy)."""
        return [r for r in self.runs if r.exclusion is None]

    @property
    def measured(self) -> list[Run]:
        """Used runs holding mixed-workload figures."""
        return [r for r in self.used if r.measured]

    @property
    def title(self) -> str:
        k = self.key
        return (f"{self.id}: {k.column} · {k.scenario} · {load_text(k.rate, k.users)} · "
                f"{fixture_text(k.customers)}")


def build(runs: Sequence[Run]) -> list[Group]:
    """Groups in order of first appearance, numbered G1, G2, ..."""
    found: dict[GroupKey, list[Run]] = {}
    for run in runs:
        found.setdefault(key_of(run), []).append(run)
    return [Group(f"G{i}", key, members) for i, (key, members) in enumerate(found.items(), 1)]


@dataclass(frozen=True)
class CommonLoad:
    """The highest offered load at which every measured platform has a valid run."""

    rate: float | None
    users: int | None
    platforms: tuple[str, ...]
    note: str

    @property
    def load(self) -> tuple[float, int | None] | None:
        return None if self.rate is None else (self.rate, self.users)

    @property
    def text(self) -> str:
        return load_text(self.rate, self.users) if self.rate is not None else "no common load"


# The no-op target measures what the harness adds; it is not a platform to compare, so it
# does not decide the common load.
BASELINES = frozenset({"noop"})


def _held(groups: Sequence[Group]) -> dict[str, set[tuple[float, int | None]]]:
    held: dict[str, set[tuple[float, int | None]]] = {}
    for g in groups:
        if g.measured and g.key.load is not None and g.key.platform not in BASELINES:
            held.setdefault(g.key.platform, set()).add(g.key.load)
    return held


def _sort_key(load: tuple[float, int | None]) -> tuple[float, int]:
    return load[0], load[1] or 0


def common_load(groups: Sequence[Group]) -> CommonLoad:
    """The highest (rate, users) held by every platform with a valid mixed-workload run."""
    held = _held(groups)
    names = tuple(held)
    if not held:
        return CommonLoad(None, None, names, "no valid mixed-workload run: no common load")
    shared = set.intersection(*held.values())
    if not shared:
        each = "; ".join(f"{p}: " + ", ".join(load_text(*x) for x in sorted(s, key=_sort_key))
                         for p, s in held.items())
        return CommonLoad(None, None, names, "no common load: no offered load at which every "
                          f"platform has a valid run ({each})")
    rate, users = max(shared, key=_sort_key)
    who = "the platform" if len(names) == 1 else "every platform"
    return CommonLoad(rate, users, names,
                      f"common load {load_text(rate, users)}: the highest offered load at "
                      f"which {who} ({', '.join(names)}) has a valid run")


def at_load(groups: Sequence[Group], load: tuple[float, int | None] | None) -> list[Group]:
    """Groups with valid mixed-workload runs at ``load``: largest fixture, most runs first."""
    if load is None:
        return []
    found = [g for g in groups if g.measured and g.key.load == load]
    return sorted(found, key=lambda g: (-(g.key.customers or 0), -len(g.measured)))


def columns(groups: Sequence[Group]) -> dict[str, list[Group]]:
    """Groups per matrix column (platform and label), in order of first appearance."""
    out: dict[str, list[Group]] = {}
    for g in groups:
        out.setdefault(g.key.column, []).append(g)
    return out


def excluded(groups: Sequence[Group]) -> list[tuple[Group, Run, str]]:
    """Every run left out of the figures, with its group and why."""
    return [(g, r, why) for g in groups for r in g.runs if (why := r.exclusion) is not None]
