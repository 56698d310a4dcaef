"""Which cores a local target and the load generator run on.

On a small machine the load generator and a local single-process target share the same
cores: the scheduler moves them between cores and each evicts the other's working set from
the caches it lands on. The target then spends more CPU per request, and by how much
depends on where the scheduler happened to put things. The harness therefore runs such a
target on a core of its own (the last one it may use) and the load generator on the others.
The result records the split (``target.cpus``). ``--no-pin`` leaves placement to the
scheduler.

Processes inherit the affinity of the thread that starts them, so ``spawning_on`` narrows
the calling thread's affinity while a child is started and restores it afterwards. The
child's threads (the SQLite checkpointer, libuv workers) inherit it too, and the child's
code needs no option for it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass


@dataclass(frozen=True)
class CpuSplit:
    """The cores of the local target and those of the load generator."""

    server: tuple[int, ...]
    generator: tuple[int, ...]

    def to_json(self) -> dict[str, list[int]]:
        return {"server": list(self.server), "generator": list(self.generator)}


def usable_cpus() -> list[int]:
    """The cores this process may run on, in order (empty where the OS cannot tell)."""
    if not hasattr(os, "sched_getaffinity"):
        return []
    return sorted(os.sched_getaffinity(0))


def split_cpus(cpus: Sequence[int] | None = None) -> CpuSplit | None:
    """The last usable core for the target and the others for the generator; None with
    fewer than two cores (nothing to split) or where affinity cannot be set."""
    found = sorted(cpus) if cpus is not None else usable_cpus()
    if len(found) < 2 or not hasattr(os, "sched_setaffinity"):
        return None
    return CpuSplit(server=(found[-1],), generator=tuple(found[:-1]))


@contextmanager
def spawning_on(cpus: Sequence[int] | None) -> Iterator[None]:
    """Processes started inside the block run on ``cpus`` (no change when None)."""
    if not cpus:
        yield
        return
    # pid 0 is the calling thread on Linux: the harness's other threads keep their cores.
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def affinity_of(pid: int) -> list[int]:
    """The cores process ``pid`` may run on."""
    return sorted(os.sched_getaffinity(pid))
