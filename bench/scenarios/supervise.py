"""Process supervision: start the load generator, read its lines, stop it in order.

The load generator (``bench.scenarios.driver``) runs in a subprocess of its own process
group and reports one JSON line per second; a run ends when it says ``done``, reports an
error, stops answering, outlives its deadline, or the user interrupts.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from bench.errors import TargetUnreachable, stop_reason
from bench.measure.cpus import spawning_on
from bench.measure.noise import SystemSampler
from bench.scenarios.accumulate import Accumulator

CHECKPOINT_S = 10.0
DEAD_INTERVALS = 3
SILENT_INTERVALS = 5

Listener = Callable[[dict[str, Any], Accumulator], None]


@dataclass
class Outcome:
    """How the load generator's run went, and what it reported."""

    acc: Accumulator
    started: bool = False
    done: bool = False
    interrupted: bool = False
    abort_reason: str | None = None
    exit_code: int = 0
    workers: int = 1

    def abort(self, reason: str, code: int = 3) -> None:
        self.abort_reason, self.exit_code = reason, code


@dataclass
class Hooks:
    """What the harness wants to hear of a run while it goes on."""

    on_interval: Listener | None = None
    target_alive: Callable[[], bool] | None = None
    checkpoint: Callable[[Outcome], None] | None = None
    sampler: SystemSampler | None = None


@dataclass
class _Liveness:
    """Counts seconds in which every request failed, or none completed."""

    dead: int = 0
    silent: int = 0
    why: list[str] = field(default_factory=list)

    def check(self, summary: dict[str, Any]) -> str | None:
        everything_failed = summary["count"] and summary["errors"] == summary["count"]
        self.dead = self.dead + 1 if everything_failed else 0
        self.silent = self.silent + 1 if summary["count"] == 0 and summary["t"] > 2 else 0
        if self.dead >= DEAD_INTERVALS:
            return f"target stopped answering: every request failed for {DEAD_INTERVALS} s"
        if self.silent >= SILENT_INTERVALS:
            return f"target stopped answering: no response for {SILENT_INTERVALS} s"
        return None


def _reader(stream: IO[str], out: queue.Queue[dict[str, Any] | None]) -> None:
    for line in stream:
        line = line.strip()
        if not line:
            continue
        try:
            out.put(json.loads(line))
        except json.JSONDecodeError:
            continue
    out.put(None)


class _Generator:
    """The load-generator subprocess, its stdout reader and its log."""

    def __init__(self, config: dict[str, Any], log_path: Path,
                 env: Mapping[str, str] | None, cpus: Sequence[int] | None = None) -> None:
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as fh:
            json.dump(config, fh)
            self.config_path = Path(fh.name)
        role = "master" if config["workers"] > 1 or config.get("expect_remote") else "local"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self.log = log_path.open("ab")
        # Its local workers inherit the cores it starts on.
        with spawning_on(cpus):
            self.proc = self._spawn(role, env)
        self.lines: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self.reader = threading.Thread(target=_reader, args=(self.proc.stdout, self.lines),
                                       daemon=True)
        self.reader.start()

    def _spawn(self, role: str, env: Mapping[str, str] | None) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "bench.scenarios.driver", "--role", role,
             "--config", str(self.config_path)],
            stdout=subprocess.PIPE, stderr=self.log, stdin=subprocess.DEVNULL, text=True,
            env={**os.environ, **(env or {})},
            # Its own process group: Ctrl-C reaches the harness, which stops it in order.
            start_new_session=True,
        )

    def next(self) -> dict[str, Any] | None:
        """The next message; a ``tick`` after a quiet second; None at end of output."""
        try:
            return self.lines.get(timeout=1.0)
        except queue.Empty:
            return {"type": "tick"}

    def stop(self) -> None:
        proc = self.proc
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=10)
            except ProcessLookupError:
                pass
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        # The generator has exited: the reader reaches end of file and stops.
        self.reader.join(timeout=5)
        if proc.stdout is not None and not self.reader.is_alive():
            proc.stdout.close()
        self.log.close()
        self.config_path.unlink(missing_ok=True)


def _on_message(msg: dict[str, Any], outcome: Outcome, hooks: Hooks,
                live: _Liveness) -> bool:
    """Merge one message; True when the run is over."""
    kind = msg.get("type")
    if kind == "started":
        outcome.started = True
        outcome.workers = int(msg.get("workers", 1))
    elif kind == "interval":
        summary = outcome.acc.add_interval(msg)
        if hooks.sampler is not None:
            hooks.sampler.tick(summary["t"])
        if hooks.on_interval is not None:
            hooks.on_interval(summary, outcome.acc)
        why = live.check(summary)
        if why is not None:
            outcome.abort(why, TargetUnreachable.exit_code)
            return True
    elif kind == "probe_final":
        outcome.acc.add_probe_final(msg)
    elif kind == "error":
        outcome.abort(str(msg.get("message")), int(msg.get("exit_code", 3)))
        return True
    elif kind == "done":
        outcome.done = True
        outcome.interrupted = bool(msg.get("interrupted"))
        return True
    return False


def _supervise(gen: _Generator, outcome: Outcome, hooks: Hooks, deadline: float) -> None:
    live = _Liveness()
    last_checkpoint = time.monotonic()
    while (msg := gen.next()) is not None:
        if _on_message(msg, outcome, hooks, live):
            return
        if hooks.target_alive is not None and not hooks.target_alive():
            outcome.abort("the target process exited during the run",
                          TargetUnreachable.exit_code)
            return
        if time.monotonic() > deadline:
            outcome.abort("the load generator did not finish in time")
            return
        if hooks.checkpoint is not None and time.monotonic() - last_checkpoint > CHECKPOINT_S:
            try:
                hooks.checkpoint(outcome)
            except OSError as exc:
                # Going on would lose everything measured from here: stop while the data
                # already written is still the run's record.
                outcome.abort(f"cannot write the result checkpoint: {exc.strerror or exc}")
                return
            last_checkpoint = time.monotonic()


def drive(config: dict[str, Any], log_path: Path, hooks: Hooks | None = None, *,
          env: Mapping[str, str] | None = None, cpus: Sequence[int] | None = None) -> Outcome:
    """Run the load generator with ``config`` and merge what it reports; ``cpus`` are the
    cores it runs on (any when None)."""
    outcome = Outcome(Accumulator(config["phases"]))
    deadline = time.monotonic() + config["total_s"] + float(config.get("worker_wait_s", 60)) + 30
    gen = _Generator(config, log_path, env, cpus)
    try:
        _supervise(gen, outcome, hooks or Hooks(), deadline)
    except KeyboardInterrupt as exc:
        outcome.interrupted = True
        outcome.abort(stop_reason(exc))
    finally:
        gen.stop()
    if not outcome.done and outcome.abort_reason is None:
        outcome.abort(f"the load generator exited early (code {gen.proc.returncode}); "
                      f"see {log_path}")
    return outcome
