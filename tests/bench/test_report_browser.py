"""report.html in headless Chromium: every chart renders, nothing errs, nothing is fetched.

Drives Debian's chromium over the DevTools protocol (websocket-client) and keeps a
full-page screenshot in reports/artifacts/. Under CI=true a missing browser fails.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import websocket

from bench.claims import load_claims
from bench.report.build import assemble, write
from bench.results.collect import load_runs
from tests.bench.test_report import report_inputs

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "reports" / "artifacts"
BROWSERS = ("chromium", "chromium-browser", "google-chrome")
# Bounds on waiting for the browser; never asserted as timings.
START_S = 60.0
RENDER_S = 60.0
LOCAL_SCHEMES = ("file:", "data:", "blob:", "about:")


def browser_path() -> str:
    found = next((p for name in BROWSERS if (p := shutil.which(name))), None)
    if found is None:
        message = "no Chromium found (Debian: apt-get install chromium)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"the browser test must run in CI: {message}")
        pytest.skip(message)
    return found


class DevTools:
    """A minimal DevTools protocol client: commands by id, events collected on the way."""

    def __init__(self, url: str) -> None:
        # Chromium refuses DevTools websockets that send an Origin header it did not allow.
        self.ws = websocket.create_connection(url, timeout=RENDER_S, suppress_origin=True)
        self.ids = itertools.count(1)
        self.events: list[dict[str, Any]] = []

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        msg_id = next(self.ids)
        self.ws.send(json.dumps({"id": msg_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == msg_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                result: dict[str, Any] = msg.get("result", {})
                return result
            self.events.append(msg)

    def wait_for(self, method: str, deadline: float) -> None:
        while not any(e.get("method") == method for e in self.events):
            if time.monotonic() > deadline:
                raise TimeoutError(f"no {method} event")
            self.events.append(json.loads(self.ws.recv()))

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return result["result"].get("value")

    def close(self) -> None:
        self.ws.close()


@pytest.fixture()
def chromium(tmp_path: Path) -> Iterator[DevTools]:
    """A fresh headless Chromium on a page target, stopped afterwards."""
    profile = tmp_path / "profile"
    proc = subprocess.Popen(
        [browser_path(), "--headless", "--no-sandbox", "--disable-gpu",
         "--disable-background-networking", f"--user-data-dir={profile}",
         "--remote-debugging-port=0", "--window-size=1280,900", "about:blank"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + START_S
        while not port_file.is_file() or not port_file.read_text().strip():
            assert proc.poll() is None, f"chromium exited with code {proc.returncode}"
            assert time.monotonic() < deadline, "chromium did not open its DevTools port"
            time.sleep(0.1)
        port = port_file.read_text().split()[0]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list") as resp:
            targets = json.load(resp)
        page = next(t for t in targets if t["type"] == "page")
        tools = DevTools(page["webSocketDebuggerUrl"])
        try:
            yield tools
        finally:
            tools.close()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def problems(events: list[dict[str, Any]]) -> list[str]:
    """Console errors, uncaught exceptions, error log entries and non-local requests."""
    out = []
    for e in events:
        method, params = e.get("method"), e.get("params", {})
        if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            out.append(f"console.{params['type']}: {params.get('args')}")
        elif method == "Runtime.exceptionThrown":
            out.append(f"exception: {params.get('exceptionDetails')}")
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            out.append(f"log: {params['entry'].get('text')}")
        elif method == "Network.requestWillBeSent":
            url = params.get("request", {}).get("url", "")
            if not url.startswith(LOCAL_SCHEMES):
                out.append(f"network request: {url}")
    return out


def test_report_renders_every_chart(tmp_path: Path, chromium: DevTools) -> None:
    runs = load_runs(report_inputs(tmp_path / "results"))
    [page] = write(assemble(runs, load_claims()), tmp_path / "report", ["html"])

    for domain in ("Page", "Runtime", "Log", "Network"):
        chromium.call(f"{domain}.enable")
    chromium.call("Page.navigate", url=page.resolve().as_uri())
    deadline = time.monotonic() + RENDER_S
    chromium.wait_for("Page.loadEventFired", deadline)
    counts = {"charts": 0, "rendered": 0}
    while time.monotonic() < deadline:
        counts = chromium.evaluate(
            "(() => { const d = [...document.querySelectorAll('.plotly-graph-div')];"
            " return {charts: d.length,"
            " rendered: d.filter(x => x.querySelector('.main-svg')).length}; })()")
        if counts["charts"] and counts["rendered"] == counts["charts"]:
            break
        time.sleep(0.2)
    assert counts == {"charts": 7, "rendered": 7}
    assert chromium.evaluate("typeof Plotly") == "object"
    claimed = chromium.evaluate("document.querySelectorAll('tr.claimed').length")
    assert claimed == 5

    metrics = chromium.call("Page.getLayoutMetrics")["cssContentSize"]
    shot = chromium.call("Page.captureScreenshot", format="png", captureBeyondViewport=True,
                         clip={"x": 0, "y": 0, "width": metrics["width"],
                               "height": metrics["height"], "scale": 1})
    png = tmp_path / "report.png"
    png.write_bytes(base64.b64decode(shot["data"]))
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shutil.copy(png, ARTIFACTS / "report.png")
    assert png.read_bytes().startswith(b"\x89PNG")

    assert problems(chromium.events) == []


def test_png_export_through_kaleido(tmp_path: Path) -> None:
    browser_path()
    runs = load_runs(report_inputs(tmp_path / "results"))
    messages: list[str] = []
    written = write(assemble(runs, load_claims()), tmp_path / "report", ["json"], png=True,
                    say=messages.append)
    pngs = [p for p in written if p.suffix == ".png"]
    assert len(pngs) == 7 and all(p.read_bytes().startswith(b"\x89PNG") for p in pngs)
    assert messages == [f"wrote 7 PNG charts to {tmp_path / 'report' / 'charts'}"]
