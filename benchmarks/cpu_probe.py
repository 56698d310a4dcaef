"""Server CPU per request of the reference CRM in a closed loop, for A/B of CPU changes
(not a test).

Open-loop runs at 1,000 req/s put the load generator and the server on the same two cores,
and their CPU per request moves by several per cent from run to run. This probe is
steadier: it serves a copy of a loaded SQLite database with ``crmbench serve`` (on a core of
its own, the probe on the others, as ``crmbench run`` places them), sends
``--requests`` reads one after another on one keep-alive connection (360 view, customer,
search and lead list in turn, ids drawn from ``/stats`` with a fixed seed) and divides the
server process's CPU time (``/proc/PID/stat``) by the number of requests. With
``--against DIR`` (another checkout of crmbench) the two builds alternate, ``--rounds``
times each, each round on a fresh copy of the database. Results go to stdout as JSON.

Run: ``.venv/bin/python benchmarks/cpu_probe.py [--against /path/to/other/checkout]
[--rounds 3] [--requests 20000] [--db fixtures/data/default/reference.sqlite3]``
"""

from __future__ import annotations

import argparse
import json
import os
import random
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from bench.measure.cpus import spawning_on, split_cpus

DEFAULT_DB = Path("fixtures/data/default/reference.sqlite3")
WARMUP = 500


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Client:
    """One keep-alive HTTP/1.1 connection, reading each response whole."""

    def __init__(self, port: int, token: str) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.auth = f"authorization: Bearer {token}\r\n".encode()

    def get(self, path: str) -> bytes:
        self.sock.sendall(b"GET " + path.encode() + b" HTTP/1.1\r\nhost: probe\r\n"
                          + self.auth + b"\r\n")
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise SystemExit(f"the server closed the connection during GET {path}")
            buf += chunk
        head, _, body = buf.partition(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 200"):
            raise SystemExit(f"GET {path} answered {head.splitlines()[0].decode()!r}")
        length = int(head.lower().split(b"content-length: ", 1)[1].split(b"\r\n", 1)[0])
        while len(body) < length:
            body += self.sock.recv(65536)
        return body

    def close(self) -> None:
        self.sock.close()


def _paths(customers: int, count: int) -> list[str]:
    rng = random.Random(7)
    kinds = ("/customers/{}/360", "/customers/{}", "/customers?name_prefix=ma&limit=20",
             "/leads?limit=20")
    return [kinds[i % 4].format(rng.randint(1, customers)) for i in range(count)]


def probe(source: Path, db: Path, requests: int) -> dict[str, Any]:
    """Serve ``db`` (copied) with the crmbench of ``source``; CPU per request of the reads."""
    token = secrets.token_urlsafe(16)
    port = _free_port()
    env = {**os.environ, "CRMBENCH_API_TOKEN": token, "PYTHONPATH": str(source)}
    with tempfile.TemporaryDirectory(prefix="crmbench-cpu-probe-") as tmp:
        copy = Path(tmp) / "crm.sqlite3"
        shutil.copyfile(db, copy)
        log = Path(tmp) / "server.log"
        # The server on a core of its own, as crmbench run places it (bench.measure.cpus).
        split = split_cpus()
        with log.open("wb") as err_out, spawning_on(split.server if split else None):
            server = subprocess.Popen(
                [sys.executable, "-m", "bench", "serve", "--db", f"sqlite:///{copy}",
                 "--host", "127.0.0.1", "--port", str(port)],
                cwd=source, env=env, stdout=subprocess.DEVNULL, stderr=err_out,
            )
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                        break
                except OSError:
                    if server.poll() is not None or time.monotonic() > deadline:
                        err = log.read_text(errors="replace")[-2000:]
                        raise SystemExit(
                            f"the server of {source} did not start: {err}") from None
                    time.sleep(0.2)
            client = Client(port, token)
            customers = int(json.loads(client.get("/stats"))["customers"])
            if customers < 1:
                raise SystemExit(f"{db} holds no customers: load a fixture profile first")
            for path in _paths(customers, WARMUP):
                client.get(path)
            paths = _paths(customers, requests)
            cpu0, wall0 = _cpu_seconds(server.pid), time.perf_counter()
            for path in paths:
                client.get(path)
            cpu1, wall1 = _cpu_seconds(server.pid), time.perf_counter()
            client.close()
        finally:
            server.terminate()
            server.wait(15)
    return {"source": str(source), "requests": requests,
            "cpu_ms_per_request": round((cpu1 - cpu0) / requests * 1000, 4),
            "wall_ms_per_request": round((wall1 - wall0) / requests * 1000, 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", type=Path, default=DEFAULT_DB,
                        help="loaded SQLite database to copy (default: %(default)s)")
    parser.add_argument("--against", type=Path, help="another crmbench checkout to alternate with")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=20_000)
    args = parser.parse_args()
    if not args.db.is_file():
        raise SystemExit(f"{args.db} does not exist: run `make run` (or `crmbench serve "
                         "--data fixtures/data/default --load-only`) first")
    if args.rounds < 1 or args.requests < 1:
        raise SystemExit("--rounds and --requests must be at least 1")
    sources = [Path.cwd()] + ([args.against.resolve()] if args.against else [])
    for source in sources:
        if not (source / "bench" / "__main__.py").is_file():
            raise SystemExit(f"{source} is not a crmbench checkout (no bench/__main__.py)")
    split = split_cpus()
    if split is not None:
        # This process is the client: on the other cores.
        os.sched_setaffinity(0, split.generator)
    rounds: list[dict[str, Any]] = []
    for i in range(args.rounds):
        for source in sources:
            result = probe(source, args.db.resolve(), args.requests)
            print(f"round {i + 1}: {source}: {result['cpu_ms_per_request']:.4f} ms of CPU, "
                  f"{result['wall_ms_per_request']:.4f} ms wall per request", file=sys.stderr)
            rounds.append(result)
    summary = {
        str(s): statistics.mean(r["cpu_ms_per_request"] for r in rounds if r["source"] == str(s))
        for s in sources
    }
    print(json.dumps({"rounds": rounds, "mean_cpu_ms_per_request": summary}, indent=2))


if __name__ == "__main__":
    main()
