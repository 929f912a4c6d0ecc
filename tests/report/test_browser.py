"""reports/report.html in a real browser: headless Chromium opens a report built from the fake results, with
the network cut off, and the page must render (a screenshot that is not blank, every figure decoded) with no
console error and no request for anything but the file itself and its data: URLs.

Chromium is driven over the DevTools protocol on a pipe (``--remote-debugging-pipe``: NUL-separated JSON
on file descriptors 3 and 4), so the test needs no websocket library and opens no port. `make browser`
installs Chromium (CI runs it); without Chromium the test skips -- unless ``DLRIG_REQUIRE_BROWSER`` is set,
as .ci/run sets it, where a missing browser fails the run instead of passing it quietly.
"""

from __future__ import annotations

import base64
import fcntl
import io
import json
import os
import select
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from tests.report.report_files import build_page, write_inputs

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
VIEWPORT = (1280, 1600)
TIMEOUT_S = 60.0
FLAGS = [
    "--headless",
    "--no-sandbox",  # root in a container has no user namespace to sandbox with
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-dev-shm-usage",  # a container's /dev/shm is often too small
    "--hide-scrollbars",
    # No network: every http(s) request goes to a closed port and every host name fails to resolve, so a
    # request for anything outside the file fails loudly (a console error) as well as showing up below.
    "--proxy-server=127.0.0.1:9",
    "--host-resolver-rules=MAP * ~NOTFOUND",
    "--remote-debugging-pipe",
]


def _browser() -> str | None:
    found = os.environ.get("CHROMIUM") or next(filter(None, map(shutil.which, BROWSERS)), None)
    if found is None and os.environ.get("DLRIG_REQUIRE_BROWSER"):
        pytest.fail("DLRIG_REQUIRE_BROWSER is set but no Chromium is on PATH: run `make browser`")
    return found


class DevTools:
    """A DevTools protocol client over Chromium's debugging pipe: ``call`` sends a command and waits for
    its answer; every event that arrives meanwhile is kept in ``events`` as ``(method, params)``."""

    def __init__(self, binary: str, profile: Path) -> None:
        self._log = profile.with_name(profile.name + ".log")
        to_browser, self._write = os.pipe()
        self._read, from_browser = os.pipe()

        def onto_3_and_4() -> None:  # in the child: the browser reads commands on fd 3, writes on fd 4
            # Through copies above 9 first: a pipe may itself be fd 3 or 4 (dup2 onto itself would keep it
            # close-on-exec, and the first dup2 could overwrite the other pipe).
            high = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in (to_browser, from_browser)]
            for fd, target in zip(high, (3, 4), strict=True):
                os.dup2(fd, target)  # inheritable, unlike every other fd Python opened

        with self._log.open("wb") as log:  # a file, not a pipe: a chatty browser cannot block on it
            self.proc = subprocess.Popen(
                [binary, *FLAGS, f"--user-data-dir={profile}", f"--window-size={VIEWPORT[0]},{VIEWPORT[1]}",
                 "about:blank"],
                preexec_fn=onto_3_and_4,  # no threads here; dup2 runs before exec
                close_fds=False,  # keeps fds 3 and 4; the fds Python opens are close-on-exec anyway
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        os.close(to_browser)
        os.close(from_browser)
        self._buffer = b""
        self._next_id = 0
        self.events: list[tuple[str, dict[str, Any]]] = []

    def _message(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._read], [], [], left)[0]:
                raise TimeoutError("Chromium did not answer in time")
            chunk = os.read(self._read, 1 << 20)
            if not chunk:
                raise RuntimeError(f"Chromium exited: {self._log.read_text(errors='replace')[-2000:]}")
            self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(raw)

    def call(self, method: str, session: str | None = None, **params: Any) -> dict[str, Any]:
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        os.write(self._write, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + TIMEOUT_S
        while True:
            reply = self._message(deadline)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            if "method" in reply:
                self.events.append((reply["method"], reply.get("params", {})))

    def wait_for(self, method: str) -> None:
        deadline = time.monotonic() + TIMEOUT_S
        while not any(m == method for m, _ in self.events):
            reply = self._message(deadline)
            if "method" in reply:
                self.events.append((reply["method"], reply.get("params", {})))

    def close(self) -> None:
        try:
            self.call("Browser.close")
        except (RuntimeError, TimeoutError, OSError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._write)
        os.close(self._read)


def open_page(binary: str, page: Path, profile: Path) -> tuple[bytes, dict[str, Any], list]:
    """Load ``page`` and return (screenshot PNG of the first viewport, facts from the page, events)."""
    devtools = DevTools(binary, profile)
    try:
        target = next(t for t in devtools.call("Target.getTargets")["targetInfos"] if t["type"] == "page")
        session = devtools.call("Target.attachToTarget", targetId=target["targetId"], flatten=True)["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            devtools.call(f"{domain}.enable", session)
        devtools.call("Emulation.setDeviceMetricsOverride", session, width=VIEWPORT[0], height=VIEWPORT[1],
                      deviceScaleFactor=1, mobile=False)
        devtools.call("Page.navigate", session, url=page.as_uri())
        devtools.wait_for("Page.loadEventFired")
        facts = devtools.call(
            "Runtime.evaluate", session, returnByValue=True,
            expression="({title: document.title, images: document.images.length,"
            " decoded: Array.from(document.images).filter(i => i.complete && i.naturalWidth > 0).length,"
            " height: document.documentElement.scrollHeight})",
        )["result"]["value"]
        shot = base64.b64decode(devtools.call("Page.captureScreenshot", session, format="png")["data"])
        return shot, facts, devtools.events
    finally:
        devtools.close()


def _problems(events: list[tuple[str, dict[str, Any]]], page: Path) -> tuple[list[str], list[str]]:
    """(console errors and uncaught exceptions, requests for anything but the page and data: URLs)."""
    errors, requests = [], []
    for method, params in events:
        if method == "Runtime.consoleAPICalled" and params["type"] in ("error", "assert"):
            errors.append(" ".join(str(a.get("value", a.get("description", ""))) for a in params["args"]))
        elif method == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            errors.append(details.get("exception", {}).get("description") or details.get("text", "uncaught"))
        elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
            errors.append(f"{params['entry']['source']}: {params['entry']['text']}")
        elif method == "Network.requestWillBeSent":
            url = params["request"]["url"]
            if url != page.as_uri() and not url.startswith("data:"):
                requests.append(url)
    return errors, requests


def test_report_renders_offline_in_a_browser_without_errors(tmp_path):
    binary = _browser()
    if binary is None:
        pytest.skip("no Chromium on PATH (`make browser` installs it; CI runs it)")
    root = write_inputs(tmp_path)
    build_page(root, "out")
    page = root / "out/report.html"

    shot, facts, events = open_page(binary, page, tmp_path / "profile")
    (tmp_path / "report.png").write_bytes(shot)  # kept beside the run's other files for a look

    errors, requests = _problems(events, page)
    assert errors == [], "console errors while loading the report"
    # Nothing from the network and nothing else from disk: only its Cost section's frame, the run's cost
    # page beside it (measured numbers vary, so the report frames that page instead of holding them).
    assert requests == [(page.parent / "run/cost.html").as_uri()], "the report asked for something else"
    assert any(m == "Network.requestWillBeSent" for m, _ in events)  # the check above saw the load itself
    assert facts["title"].startswith("Tiny <run> & co")
    assert facts["images"] == facts["decoded"] == 10  # every inline figure decoded
    assert facts["height"] > VIEWPORT[1]  # a real page, longer than one screen

    image = Image.open(io.BytesIO(shot)).convert("L")
    assert image.size == VIEWPORT
    histogram = image.histogram()
    not_white = sum(histogram[:240]) / (image.size[0] * image.size[1])
    dark = sum(histogram[:100]) / (image.size[0] * image.size[1])
    assert not_white > 0.02 and dark > 0.002, f"blank screenshot ({not_white:.1%} not white, {dark:.2%} dark)"


def test_the_check_sees_requests_and_console_errors(tmp_path):
    # The same check on a page that breaks every rule: it must notice, or the test above proves nothing.
    binary = _browser()
    if binary is None:
        pytest.skip("no Chromium on PATH (`make browser` installs it; CI runs it)")
    page = tmp_path / "bad.html"
    page.write_text(
        '<html><body><img src="https://example.com/x.png"><img src="data:image/gif;base64,'
        'R0lGODlhAQABAAAAACw=">'
        '<script>console.error("boom"); fetch("http://192.0.2.1/beacon"); throw new Error("bang")</script>'
        "</body></html>",
        encoding="utf-8",
    )
    _, _, events = open_page(binary, page, tmp_path / "profile")
    errors, requests = _problems(events, page)
    assert "boom" in errors and any("Error: bang" in e for e in errors)
    assert {"https://example.com/x.png", "http://192.0.2.1/beacon"} <= set(requests)
