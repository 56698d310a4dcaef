"""The target of one run: how to reach it, and its adapter opened once per role.

Roles: preflight (fail fast, let guarded adapters refuse, learn the keyspace and which
in-run probes the adapter can serve), engine probes, capability probes and cleanup. Each
builds the adapter with ``create_adapter(url, env=..., run_id=...)``: credentials travel
as data, never through the process environment.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.adapters.base import Adapter, Guarded, RunPlan
from bench.adapters.embedded import EMBEDDED_URL, parse_embedded
from bench.adapters.load import DEFAULT_STATE_DIR, ensure_loaded, loaded_record
from bench.adapters.registry import create_adapter, load_adapter, scheme_of
from bench.errors import UserError
from bench.measure.cpus import CpuSplit, split_cpus
from bench.probes.registry import Findings, Probe, ProbeContext, gate, run_probe
from bench.probes.verdict import Verdict
from reference_impl.fixtures import MANIFEST_NAME

Say = Callable[[str], None]


@dataclass(frozen=True)
class ResolvedTarget:
    """The adapter URL of a target, what reaching it needs, and what runs it locally."""

    url: str
    # Variables the adapter and the load generator need beside the process environment.
    env: dict[str, str] = field(default_factory=dict)
    alive: Callable[[], bool] | None = None
    fixture_hash: str | None = None
    server_pid: int | None = None
    # The cores of a target the harness started and of the load generator (None: unpinned).
    cpus: CpuSplit | None = None

    @property
    def adapter_env(self) -> Mapping[str, str] | None:
        return {**os.environ, **self.env} if self.env else None


@contextmanager
def resolve_target(
    url: str, fixtures: Path, say: Say, server_log: Path | None = None,
    *, test_clock: bool = False, pin: bool = False, generators: int = 1,
) -> Iterator[ResolvedTarget]:
    """Start an embedded target if ``url`` asks for one; yield how to reach it.

    ``pin`` runs an embedded reference CRM of one SQLite process on a core of its own and
    names the others for the ``generators`` load-generator processes (``cpu_plan``)."""
    if scheme_of(url) == "tryton":
        from bench.adapters.tryton_embedded import EmbeddedTryton, parse_tryton_embedded

        with EmbeddedTryton(parse_tryton_embedded(url), say=say, keep_log=server_log) as tryton:
            yield ResolvedTarget(tryton.url, tryton.env, tryton.alive, None, tryton.pid)
        return
    options = parse_embedded(url)
    if options is not None:
        from bench.adapters.embedded import EmbeddedReference
        from reference_impl.fixtures import manifest_hash

        split = cpu_plan(url, generators) if pin else None
        if split is not None:
            say(f"the reference CRM runs on core {_cores(split.server)}, the load generator "
                f"on {_cores(split.generator)}")
        with EmbeddedReference(
            fixtures, say=say, keep_log=server_log, test_clock=test_clock, options=options,
            cpus=split.server if split is not None else None,
        ) as ref:
            yield ResolvedTarget(ref.url, {"CRMBENCH_API_TOKEN": ref.token}, ref.alive,
                                 manifest_hash(fixtures), ref.pid, split)
        return
    if scheme_of(url) == "reference":
        raise UserError(f"reference:// supports only {EMBEDDED_URL}[?options]; "
                        "use reference+http://HOST:PORT for a running reference CRM")
    yield ResolvedTarget(url)


def cpu_plan(url: str, generators: int = 1) -> CpuSplit | None:
    """The cores of ``url``'s server and of the load generator when the harness pins them.

    Only an embedded reference CRM serving from one SQLite process is pinned: it is the whole
    system under test and cannot use a second core. A PostgreSQL-backed one shares the
    machine with the database's own processes, which the harness does not place. Nor is
    anything pinned when fewer cores than ``generators`` (load-generator processes on this
    machine) would be left for the generator: they would queue behind each other.
    """
    options = parse_embedded(url)
    if options is None or options.db is not None or options.workers != 1:
        return None
    split = split_cpus()
    if split is None or len(split.generator) < generators:
        return None
    return split


def _cores(cpus: Sequence[int]) -> str:
    return ", ".join(str(c) for c in cpus)


def check_target_url(url: str) -> None:
    """Refuse URLs whose scheme no installed adapter serves, before anything starts."""
    if parse_embedded(url) is not None:
        return
    if scheme_of(url) == "tryton":
        from bench.adapters.tryton_embedded import parse_tryton_embedded

        parse_tryton_embedded(url)
        return
    create_adapter(url)


def platform_of(url: str) -> str:
    """The platform name of a target URL's adapter, without building it."""
    return str(getattr(load_adapter(scheme_of(url)), "platform", scheme_of(url)))


@dataclass
class Preflight:
    """What the harness learnt of the target before sending load."""

    platform: str
    version: str | None
    keyspace: dict[str, int]
    facts: dict[str, Any] | None
    # The keyspace as the load generators receive it: counts, and keys when not 1..n.
    keyspace_json: dict[str, Any] = field(default_factory=dict)
    # Manifest hash of the fixture profile the harness loaded (or found loaded) through
    # the adapter's load hook; None when the target loads its own data or has no hook.
    loaded_fixtures: str | None = None
    # In-run probes the adapter cannot serve, with their findings: they are not started.
    gated: dict[str, Findings] = field(default_factory=dict)


@dataclass
class Probed:
    """Findings of the probes of one role: dimensions by result key, capability verdicts."""

    dimensions: dict[str, dict[str, Any]] = field(default_factory=dict)
    capabilities: dict[str, Verdict] = field(default_factory=dict)

    def add(self, probe: Probe[Any], findings: Findings) -> None:
        entry, verdicts = findings
        if entry is not None and probe.result_key is not None:
            self.dimensions[probe.result_key] = entry
        self.capabilities.update(verdicts)


class TargetSession:
    """The adapter of one run's target, built and opened once per role."""

    def __init__(self, target: ResolvedTarget, run_id: str, say: Say) -> None:
        self.target = target
        self.run_id = run_id
        self.say = say

    def build(self) -> Adapter:
        return create_adapter(self.target.url, env=self.target.adapter_env, run_id=self.run_id)

    @contextmanager
    def opened(self) -> Iterator[Adapter]:
        adapter = self.build()
        adapter.open()
        try:
            yield adapter
        finally:
            adapter.close()

    def preflight(
        self, plan: RunPlan, in_run: Sequence[Probe[Any]], fixtures: Path | None = None,
        load_state: Path = DEFAULT_STATE_DIR, *, fixtures_given: bool = True,
    ) -> Preflight:
        """Open the adapter once: fail fast, let guarded adapters refuse, load an empty
        target through the load hook, learn the keyspace, gate probes."""
        with self.opened() as adapter:
            facts = adapter.preflight(plan) if isinstance(adapter, Guarded) else None
            version = adapter.platform_version()
            loaded = self._load(adapter, fixtures, load_state, fixtures_given)
            ks = adapter.keyspace()
            gated = {p.name: found for p in in_run if (found := gate(p, adapter)) is not None}
        return Preflight(str(getattr(adapter, "platform", scheme_of(self.target.url))),
                         version, ks.counts(), facts, keyspace_json=ks.to_json(),
                         loaded_fixtures=loaded, gated=gated)

    def _load(self, adapter: Adapter, fixtures: Path | None, state_dir: Path,
              given: bool) -> str | None:
        """Load the fixture profile if the target is empty (targets the harness started
        load their own); the manifest hash of what the target holds, when known.

        A target that holds data is used as it is unless a profile was asked for by name
        (``--fixtures``): then it must hold that one."""
        if fixtures is None or self.target.fixture_hash is not None or not adapter.load_tables:
            return None
        holds_data = adapter.keyspace().customers > 0
        if holds_data and not given:
            found = loaded_record(adapter, self.target.url, state_dir)
            if found is not None:
                self.say(f"the target holds fixture profile {found.manifest_sha256[:12]}; "
                         "it is used as it is")
            return found.manifest_sha256 if found is not None else None
        if not (fixtures / MANIFEST_NAME).is_file() and holds_data:
            return None
        record = ensure_loaded(adapter, fixtures, self.say, target=self.target.url,
                               state_dir=state_dir)
        return record.manifest_sha256 if record is not None else None

    def probe(self, probes: Sequence[tuple[Probe[Any], Any]], label: str) -> Probed:
        """Run harness-side probes with their options, on one opened adapter."""
        out = Probed()
        if not probes:
            return out
        self.say(f"probing {label}: " + ", ".join(p.name for p, _ in probes))
        ctx = ProbeContext(self.run_id, self.say)
        with self.opened() as adapter:
            for probe, options in probes:
                out.add(probe, run_probe(probe, adapter, ctx, options))
        return out

    def cleanup(self) -> int | None:
        """Delete what the run created on a guarded target; None when it keeps nothing."""
        adapter = self.build()
        if not isinstance(adapter, Guarded):
            return None
        adapter.open()
        try:
            return adapter.cleanup(self.run_id)
        finally:
            adapter.close()
