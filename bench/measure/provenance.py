"""Provenance attached to every result: machine, Python, package versions and git commit."""

from __future__ import annotations

import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

import psutil

TRACKED_PACKAGES: tuple[str, ...] = (
    "crmbench",
    "locust",
    "gevent",
    "polars",
    "numpy",
    "hdrhistogram",
    "starlette",
    "uvicorn",
    "asyncpg",
    "faker",
    "msgspec",
)

GIT_TIMEOUT_S = 5.0


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                key, sep, value = line.partition(":")
                # x86 names it "model name"; some ARM kernels only give "Hardware"/"Processor".
                if (
                    sep
                    and key.strip() in ("model name", "Hardware", "Processor", "cpu model")
                    and value.strip()
                ):
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def package_versions(names: tuple[str, ...] = TRACKED_PACKAGES) -> dict[str, str | None]:
    """Installed distribution versions; None for packages that are not installed."""
    versions: dict[str, str | None] = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def machine_info() -> dict[str, Any]:
    """CPU, cores, memory, OS, Python and package versions of the current machine."""
    return {
        "cpu_model": _cpu_model(),
        "arch": platform.machine(),
        "logical_cores": psutil.cpu_count(logical=True) or os.cpu_count(),
        "physical_cores": psutil.cpu_count(logical=False),
        "memory_total_bytes": int(psutil.virtual_memory().total),
        "os": platform.platform(),
        "python_version": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "packages": package_versions(),
    }


def _git(args: list[str], cwd: Path) -> str:
    env = dict(os.environ)
    # Read-only inspection: never take the index lock that `git status` may otherwise grab.
    env["GIT_OPTIONAL_LOCKS"] = "0"
    env["LC_ALL"] = "C"
    done = subprocess.run(
        ["git", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=GIT_TIMEOUT_S,
        check=False,
    )
    if done.returncode != 0:
        message = done.stderr.strip().splitlines()
        raise RuntimeError(message[-1] if message else f"git {args[0]} exited {done.returncode}")
    return done.stdout.strip()


def _failed(error: str) -> dict[str, Any]:
    return {"commit": None, "branch": None, "dirty": None, "commit_time": None, "error": error}


def commit_info(path: Path | None = None) -> dict[str, Any]:
    """Git commit, branch, dirty flag and commit time of the checkout at `path`; never raises.

    `path` defaults to the directory of this harness's source.
    """
    where = Path(__file__).resolve().parent if path is None else Path(path)
    result: dict[str, Any] = {
        "commit": None,
        "branch": None,
        "dirty": None,
        "commit_time": None,
        "error": None,
    }
    if not where.is_dir():
        return _failed(f"{where} is not a directory")
    try:
        result["commit"] = _git(["rev-parse", "--verify", "HEAD"], where)
        branch = _git(["rev-parse", "--abbrev-ref", "HEAD"], where)
        result["branch"] = None if branch == "HEAD" else branch
        result["commit_time"] = _git(["show", "-s", "--format=%cI", "HEAD"], where)
        status = _git(["status", "--porcelain", "--untracked-files=no"], where)
        result["dirty"] = bool(status)
    except FileNotFoundError as exc:
        return _failed(f"git is not available: {exc}")
    except subprocess.TimeoutExpired:
        return _failed(f"git timed out after {GIT_TIMEOUT_S:g} s")
    except (RuntimeError, OSError, ValueError) as exc:
        return _failed(str(exc) or type(exc).__name__)
    return result
