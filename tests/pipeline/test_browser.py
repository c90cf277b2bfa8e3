"""The report pages in a real browser: headless Debian Chromium driven over the DevTools protocol.

The DevTools client is stdlib-only: Chromium's `--remote-debugging-pipe` speaks CDP as NUL-terminated
JSON on file descriptors 3 (commands in) and 4 (replies and events out), so no websocket package is needed.
Set SEGPIPE_SCREENSHOTS=DIR to keep the screenshots for a look.
"""

from __future__ import annotations

import fcntl
import json
import os
import queue
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import cv2
import numpy as np
import pandas as pd
import pytest

from segpipe.reports.html import render_audit_report, render_evaluate_report, render_leaderboard
from tests.pipeline.test_report_html import (
    make_audit_tables,
    make_instance_dataset,
    make_instance_tables,
    make_run_output,
    make_semantic_dataset,
    make_semantic_tables,
)

pytestmark = pytest.mark.browser

CHROMIUM = Path(os.environ.get("SEGPIPE_CHROMIUM", "/usr/bin/chromium"))
VIEWPORT = (1400, 900)  # the width the pages are designed for: a laptop screen
TIMEOUT_S = 60.0


def _high_fd_pipe(*, read_end: bool) -> tuple[int, int]:
    """A pipe whose child-side end is numbered 10 or above, so moving it onto fd 3 or 4 cannot clobber it."""
    r, w = os.pipe()
    child = r if read_end else w
    high = fcntl.fcntl(child, fcntl.F_DUPFD, 10)
    os.close(child)
    return (high, w) if read_end else (r, high)


class DevTools:
    """Minimal CDP client over Chromium's debugging pipe: send commands, wait for replies, keep events."""

    def __init__(self, profile: Path) -> None:
        cmd_r, self._cmd_w = _high_fd_pipe(read_end=True)
        self._evt_r, evt_w = _high_fd_pipe(read_end=False)
        args = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--no-first-run", "--disable-component-update", "--disable-sync", "--disable-extensions",
                "--disable-dev-shm-usage", "--hide-scrollbars", f"--user-data-dir={profile}", "--remote-debugging-pipe",
                f"--window-size={VIEWPORT[0]},{VIEWPORT[1]}"]
        # fds 3 and 4 are where Chromium expects the pipe: a tiny Python trampoline moves ours there and
        # execs Chromium (dash cannot redirect fds above 9; preexec_fn is not safe with threads).
        trampoline = (f"import os, sys; os.dup2({cmd_r}, 3); os.dup2({evt_w}, 4); os.close({cmd_r}); os.close({evt_w}); "
                      "os.execv(sys.argv[1], sys.argv[1:])")
        self.proc = subprocess.Popen([sys.executable, "-c", trampoline, *args], pass_fds=(cmd_r, evt_w),
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(cmd_r)
        os.close(evt_w)
        self._next_id = 0
        self._inbox: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self.events: list[dict[str, Any]] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        buf = b""
        with os.fdopen(self._evt_r, "rb", buffering=0) as pipe:
            while chunk := pipe.read(1 << 16):
                buf += chunk
                *messages, buf = buf.split(b"\0")
                for m in messages:
                    self._inbox.put(json.loads(m))
        self._inbox.put(None)

    def send(self, method: str, params: dict[str, Any] | None = None, *, session: str | None = None) -> dict[str, Any]:
        self._next_id += 1
        msg: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._cmd_w, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + TIMEOUT_S
        while True:
            reply = self._inbox.get(timeout=max(0.1, deadline - time.monotonic()))
            if reply is None:
                raise RuntimeError(f"chromium closed the pipe while waiting for {method}")
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_for(self, predicate: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        for e in self.events:
            if predicate(e):
                return e
        deadline = time.monotonic() + TIMEOUT_S
        while True:
            e = self._inbox.get(timeout=max(0.1, deadline - time.monotonic()))
            if e is None:
                raise RuntimeError("chromium closed the pipe")
            self.events.append(e)
            if predicate(e):
                return e

    def close(self) -> None:
        try:
            self.send("Browser.close")
        except Exception:  # already gone: nothing left to close politely
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._cmd_w)


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevTools]:
    if not CHROMIUM.is_file():
        pytest.skip(f"headless chromium not found at {CHROMIUM}: install the Debian package `chromium` (.ci/run does)")
    devtools = DevTools(tmp_path_factory.mktemp("chromium-profile"))
    try:
        yield devtools
    finally:
        devtools.close()


class Page:
    def __init__(self, devtools: DevTools, url: str) -> None:
        self.dt = devtools
        target = devtools.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = devtools.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        self.target = target
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.send(f"{domain}.enable")
        self.send("Emulation.setDeviceMetricsOverride", {"width": VIEWPORT[0], "height": VIEWPORT[1], "deviceScaleFactor": 1, "mobile": False})
        self.first_event = len(devtools.events)
        self.send("Page.navigate", {"url": url})
        devtools.wait_for(lambda e: e.get("method") == "Page.loadEventFired" and e.get("sessionId") == self.session)

    def send(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        return self.dt.send(method, params, session=self.session)

    def eval(self, expression: str) -> Any:
        result = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True})
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def my_events(self) -> list[dict[str, Any]]:
        return [e for e in self.dt.events[self.first_event:] if e.get("sessionId") == self.session]

    def console_errors(self) -> list[str]:
        errors = []
        for e in self.my_events():
            p = e.get("params", {})
            if e.get("method") == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                errors.append(" ".join(str(a.get("value", a.get("description", ""))) for a in p.get("args", [])))
            elif e.get("method") == "Runtime.exceptionThrown":
                errors.append(str(p.get("exceptionDetails", {}).get("exception", {}).get("description", p)))
            elif e.get("method") == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
                errors.append(p["entry"].get("text", ""))
        return errors

    def network_requests(self) -> list[str]:
        return [e["params"]["request"]["url"] for e in self.my_events() if e.get("method") == "Network.requestWillBeSent"]

    def screenshot(self, path: Path) -> np.ndarray:
        import base64

        height = int(self.eval("Math.ceil(document.documentElement.scrollHeight)"))
        shot = self.send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True,
                                                    "clip": {"x": 0, "y": 0, "width": VIEWPORT[0], "height": min(height, 16000), "scale": 1}})
        path.write_bytes(base64.b64decode(shot["data"]))
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        assert image is not None, f"{path}: screenshot did not decode"
        return image

    def click(self, selector: str) -> None:
        """A real mouse click (press + release) at the centre of the element."""
        box = self.eval(f"(() => {{ const e = document.querySelector({json.dumps(selector)}); e.scrollIntoView({{block: 'center'}});"
                        " const r = e.getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]; })()")
        for kind in ("mousePressed", "mouseReleased"):
            self.send("Input.dispatchMouseEvent", {"type": kind, "x": box[0], "y": box[1], "button": "left", "clickCount": 1})

    def close(self) -> None:
        self.dt.send("Target.closeTarget", {"targetId": self.target})


def _column(page: Page, table: str, col: int) -> list[str]:
    return page.eval(f"Array.from(document.querySelectorAll('#{table} tbody tr')).map(r => {{ const c = r.cells[{col}];"
                     " return c.getAttribute('data-sort') ?? c.textContent.trim(); })")


def _as_numbers(values: list[str]) -> list[float]:
    return [float(v) for v in values if v != ""]


@pytest.fixture(scope="module")
def pages(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("pages")
    inst = make_instance_dataset(root / "instances_ds", n_images=10)
    sem = make_semantic_dataset(root / "semantic_ds", n_images=6)
    return {
        "instances": render_evaluate_report(make_instance_tables(root / "instances_report", inst), gallery=inst, n_worst=6),
        "semantic": render_evaluate_report(make_semantic_tables(root / "semantic_report", sem), gallery=sem, n_worst=4),
        "leaderboard": render_leaderboard(make_run_output(root / "run", inst)),
        "audit": render_audit_report(make_audit_tables(root / "audit", inst), gallery=inst, top=8),
    }


# page -> (sortable table id, numeric column index to click, expected images)
CASES = {
    "instances": ("per-class-table", 1, 2 + 6),
    "semantic": ("per-class-table", 1, 2 + 4),
    "leaderboard": ("leaderboard-table", 5, 3),
    "audit": ("counts-table", 2, 1 + 5),  # the 8 top findings name 5 images: one thumbnail each
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_page_renders_in_chromium(name: str, browser: DevTools, pages: dict[str, Path], tmp_path: Path) -> None:
    table, col, n_images = CASES[name]
    page = Page(browser, pages[name].resolve().as_uri())
    try:
        shot = page.screenshot(tmp_path / f"{name}.png")
        if os.environ.get("SEGPIPE_SCREENSHOTS"):
            Path(os.environ["SEGPIPE_SCREENSHOTS"]).mkdir(parents=True, exist_ok=True)
            shutil.copy(tmp_path / f"{name}.png", Path(os.environ["SEGPIPE_SCREENSHOTS"]) / f"{name}.png")
        # Not blank: a real page has many distinct colours and a good share of non-white pixels.
        assert shot.std() > 20 and (shot.min(axis=2) < 200).mean() > 0.05, f"{name}: screenshot looks blank"

        images = page.eval("Array.from(document.images).map(i => [i.complete, i.naturalWidth, i.alt])")
        assert len(images) == n_images, images
        assert all(done and width > 0 for done, width, _ in images), f"{name}: undecoded images {images}"

        # Self-contained: the page itself is the only request; no CDN, no network.
        assert [u for u in page.network_requests() if not u.startswith(("file://", "data:"))] == []

        values = _column(page, table, col)
        page.click(f"#{table} thead th:nth-child({col + 1})")
        after = _column(page, table, col)
        ascending = _as_numbers(after)
        assert ascending == sorted(_as_numbers(values)) and len(ascending) > 1, f"{name}: {values} -> {after}"
        assert after[len(ascending):] == [""] * (len(after) - len(ascending)), f"{name}: empty cells must sort last"
        assert page.eval(f"document.querySelector('#{table} thead th:nth-child({col + 1})').getAttribute('aria-sort')") == "ascending"
        page.click(f"#{table} thead th:nth-child({col + 1})")
        assert _as_numbers(_column(page, table, col)) == sorted(ascending, reverse=True)
        page.click(f"#{table} thead th:nth-child(1)")  # a text column sorts naturally
        text = [v for v in _column(page, table, 0) if v]
        assert len(text) > 1

        assert page.console_errors() == [], f"{name}: console errors"
    finally:
        page.close()


def test_leaderboard_sorts_checkpoints_naturally_in_the_browser(browser: DevTools, pages: dict[str, Path]) -> None:
    page = Page(browser, pages["leaderboard"].resolve().as_uri())
    try:
        initial = _column(page, "leaderboard-table", 0)
        ranked = [str(c) for c in pd.read_csv(pages["leaderboard"].parent / "leaderboard.csv")["checkpoint"]]
        assert initial == ranked  # as leaderboard.csv ranks them
        page.click("#leaderboard-table thead th:nth-child(1)")  # the name column sorts naturally
        assert _column(page, "leaderboard-table", 0) == ["best", "epoch_1", "epoch_2", "epoch_3", "epoch_10"]
        # every column is on screen at 1400 px: the table is no wider than the page's content
        widths = page.eval("[document.querySelector('#leaderboard-table').scrollWidth, document.body.clientWidth]")
        assert widths[0] <= widths[1], widths
        assert page.console_errors() == []
    finally:
        page.close()
