"""The one table of probes, and how a probe's verdicts are decided before it runs.

A probe declares the capability ids it decides, the protocols of ``bench.adapters`` it
needs, an options type built from its scenario table, and either a ``run`` function (it
runs in the harness, with an opened adapter) or a ``stream`` (it runs beside the workload
in the load generator, which reports what it observed). Adding a probe takes its module,
its line in :data:`MODULES` and its test.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar, cast

import msgspec

from bench.adapters.base import CAPABILITY_IDS
from bench.errors import UserError
from bench.probes.verdict import Verdict, verdict

Section = Literal["probes", "engines"]
Say = Callable[[str], None]
# A probe's findings: its entry of the result's dimensions (None when it measures none)
# and the verdicts of the capabilities it decides.
Findings = tuple[dict[str, Any] | None, dict[str, Verdict]]
OptionsT = TypeVar("OptionsT", bound=msgspec.Struct)

# Modules whose import registers their probes; probes run in this order.
MODULES = ("bench.probes.inrun", "bench.probes.workflow", "bench.probes.sla",
           "bench.probes.pack", "bench.probes.capability", "bench.probes.sovereignty")


class NoOptions(msgspec.Struct, frozen=True):
    """Options of a probe that takes none."""


@dataclass(frozen=True)
class ProbeContext:
    """What a probe knows of its run: the id its records are named after, and a printer."""

    run_id: str
    say: Say


@dataclass(frozen=True)
class Probe(Generic[OptionsT]):
    """One probe: what turns it on, what it needs, what it decides and how it runs."""

    name: str
    # The scenario table and key that turn it on (a true flag or a positive rate).
    trigger: tuple[Section, str]
    needs: tuple[type, ...]
    options: type[OptionsT]
    capabilities: tuple[str, ...] = ()
    # The measured dimension: its catalogue id and its key in the result's dimensions.
    dimension: str | None = None
    result_key: str | None = None
    run: Callable[[Any, ProbeContext, OptionsT], Findings] | None = None
    # In-run probes: the name under which the load generator reports this probe.
    stream: str | None = None

    @property
    def ids(self) -> tuple[str, ...]:
        """Every catalogue id the probe decides, its dimension first."""
        return (self.dimension, *self.capabilities) if self.dimension else self.capabilities

    def enabled(self, tables: Mapping[Section, Mapping[str, Any]]) -> bool:
        section, key = self.trigger
        value = tables.get(section, {}).get(key)
        return bool(value) and not (isinstance(value, int | float) and value <= 0)

    def settings(self, tables: Mapping[Section, Mapping[str, Any]]) -> OptionsT:
        """The options from the probe's scenario table (the file's names, see the type)."""
        try:
            return msgspec.convert(dict(tables.get(self.trigger[0], {})), self.options)
        except msgspec.ValidationError as exc:
            raise UserError(f"[{self.trigger[0]}] settings of the {self.name} probe: {exc}") \
                from None


PROBES: dict[str, Probe[Any]] = {}


def register(probe: Probe[OptionsT]) -> Probe[OptionsT]:
    """Add a probe to the table (once per name)."""
    if probe.name in PROBES and PROBES[probe.name] is not probe:
        raise ValueError(f"a probe named {probe.name!r} is registered already")
    unknown = [cid for cid in probe.ids if cid not in CAPABILITY_IDS]
    if unknown:
        raise ValueError(f"probe {probe.name!r}: unknown capability ids {unknown}")
    PROBES[probe.name] = probe
    return probe


def all_probes() -> dict[str, Probe[Any]]:
    """The table, with every probe module imported, in the order of :data:`MODULES`."""
    for module in MODULES:
        importlib.import_module(module)

    def place(probe: Probe[Any]) -> int:
        home = (probe.run or probe.options).__module__
        return MODULES.index(home) if home in MODULES else len(MODULES)

    return dict(sorted(PROBES.items(), key=lambda item: place(item[1])))


def _fields(options: type[msgspec.Struct]) -> set[str]:
    return {f.encode_name for f in msgspec.structs.fields(options)}


def check_tables(tables: Mapping[Section, Mapping[str, Any]]) -> list[str]:
    """Problems of a scenario's probe tables: keys no registered probe knows, bad values."""
    problems: list[str] = []
    probes = all_probes().values()
    for section, table in tables.items():
        mine = [p for p in probes if p.trigger[0] == section]
        for key, value in table.items():
            owners = [p for p in mine if key in _fields(p.options)]
            if owners:
                try:
                    msgspec.convert({key: value}, owners[0].options)
                except msgspec.ValidationError as exc:
                    problems.append(f"{section}.{key}: {exc}")
            elif not any(p.trigger[1] == key for p in mine):
                known = sorted({k for p in mine for k in (p.trigger[1], *_fields(p.options))})
                problems.append(f"{section}.{key}: no probe takes it; known: "
                                f"{', '.join(known)}")
            elif not isinstance(value, bool):
                problems.append(f"{section}.{key}: expected true or false")
    return problems


def triggered(tables: Mapping[Section, Mapping[str, Any]]) -> list[Probe[Any]]:
    """The probes a scenario turns on, in table order."""
    return [p for p in all_probes().values() if p.enabled(tables)]


def _declared(adapter: Any, cid: str) -> tuple[str, str]:
    cap = (getattr(adapter, "capabilities", None) or {}).get(cid)
    return str(getattr(cap, "support", "unknown")), str(getattr(cap, "note", "") or "")


def gate(probe: Probe[Any], adapter: Any) -> Findings | None:
    """The findings of a probe the adapter cannot serve, or None when it may run.

    Declared ``unsupported`` is reported as such by every probe; an adapter without a
    protocol the probe needs leaves the probe's ids ``not-measured``.
    """
    absent = {cid: _declared(adapter, cid)[1] or "declared unsupported by the adapter"
              for cid in probe.ids if _declared(adapter, cid)[0] == "unsupported"}
    if absent:
        rest = f"not probed: the adapter declares {', '.join(absent)} unsupported"
        found = {cid: verdict("unsupported", reason=absent[cid]) if cid in absent
                 else verdict("not-measured", reason=rest) for cid in probe.ids}
    else:
        missing = [p.__name__ for p in probe.needs if not isinstance(adapter, p)]
        if not missing:
            return None
        name = getattr(adapter, "name", type(adapter).__name__)
        reason = (f"the {name} adapter does not implement the "
                  f"{' and '.join(missing)} verbs (bench.adapters)")
        found = {cid: verdict("not-measured", reason=reason) for cid in probe.ids}
    return _split(probe, found)


def _split(probe: Probe[Any], found: dict[str, Verdict]) -> Findings:
    if probe.dimension is None:
        return None, found
    head = found.pop(probe.dimension)
    entry: dict[str, Any] = {"capability": probe.dimension, "status": head.status}
    if head.reason:
        entry["reason"] = head.reason
    return entry, found


def run_probe(probe: Probe[OptionsT], adapter: Any, ctx: ProbeContext,
              options: OptionsT) -> Findings:
    """A harness-side probe's findings: the adapter's own measurement of the probe's ids
    (``adapter.own_probe(probe, ctx, options)``, for platforms whose means cannot take the
    probe's documents), else those of the gate, else what the probe observed."""
    own = getattr(adapter, "own_probe", None)
    found = own(probe, ctx, options) if callable(own) else None
    if found is not None:
        return cast(Findings, found)
    gated = gate(probe, adapter)
    if gated is not None:
        return gated
    if probe.run is None:
        raise ValueError(f"probe {probe.name!r} runs in the load generator, not here")
    return probe.run(adapter, ctx, options)
