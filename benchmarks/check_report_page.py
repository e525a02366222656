"""Open a local HTML report page in headless Chromium, as a person would see it, and check it.

Saves a full-page screenshot (whole scroll height) and fails (exit 1) on any JavaScript console error or
uncaught exception, and on any resource that did not load (file not found, HTTP >= 400, an <img> with
naturalWidth == 0), printing one problem a line. On success prints the page title, images (loaded / total),
tables, page size in CSS pixels, the screenshot's path and size, and the Chromium version. Exit 2: setup
error (no Chromium, no page, Chromium did not start).

Talks to Chromium over the DevTools protocol (CDP) with the `websocket-client` package; no browser download.

    python benchmarks/check_report_page.py logs/demo/report/index.html [--screenshot out.png] \
        [--chromium /usr/bin/chromium] [--width 1280] [--timeout 30]
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import websocket  # pip package `websocket-client`

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")

# Runs in the page after load: waits for images (lazy ones start once the viewport is page-tall) and fonts,
# so the checks and the screenshot see the settled page.
SETTLE_JS = """(async () => {
  const deadline = Date.now() + 10000;
  while ([...document.images].some(i => !i.complete) && Date.now() < deadline)
    await new Promise(r => setTimeout(r, 50));
  await document.fonts.ready;
  return [...document.images].filter(i => !i.complete || i.naturalWidth === 0).map(i => i.currentSrc || i.src);
})()"""

SUMMARY_JS = """({title: document.title, images: document.images.length,
  tables: document.querySelectorAll('table').length})"""


class SetupError(Exception):
    """A problem with the environment, not with the page (exit 2)."""


class Cdp:
    """Minimal CDP client over one browser websocket; events are kept in arrival order for later checks."""

    def __init__(self, ws_url: str, timeout: float):
        # suppress_origin: Chromium refuses websocket clients that send an Origin it was not told to allow.
        self.ws = websocket.create_connection(ws_url, timeout=timeout, suppress_origin=True)
        self.timeout = timeout
        self.last_id = 0
        self.events: list[dict] = []

    def send(self, method: str, session: str | None = None, **params) -> dict:
        self.last_id += 1
        msg = {"id": self.last_id, "method": method, "params": params}
        if session:
            msg["sessionId"] = session
        self.ws.send(json.dumps(msg))
        while True:
            reply = self._recv(self.timeout, f"a reply to {method}")
            if reply.get("id") == self.last_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error'].get('message')}")
                return reply.get("result", {})

    def wait_for(self, method: str, timeout: float) -> None:
        """Block until event `method` has arrived (possibly already, while waiting for a command reply)."""
        deadline = time.monotonic() + timeout
        while not any(e.get("method") == method for e in self.events):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no {method} within {timeout:.0f} s")
            self._recv(remaining, method)

    def drain(self, seconds: float) -> None:
        """Collect events for a moment, e.g. console errors from timers that fire just after load."""
        deadline = time.monotonic() + seconds
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                self._recv(remaining, "events")
            except TimeoutError:
                break

    def _recv(self, timeout: float, waiting_for: str) -> dict:
        self.ws.settimeout(timeout)
        try:
            msg = json.loads(self.ws.recv())
        except websocket.WebSocketTimeoutException:
            raise TimeoutError(f"no {waiting_for} within {timeout:.0f} s (page hung?)") from None
        if "method" in msg:
            self.events.append(msg)
        return msg

    def close(self) -> None:
        self.ws.close()


def find_chromium(given: str | None) -> str:
    if given:
        if not (shutil.which(given) or Path(given).is_file()):
            raise SetupError(f"Chromium not found at {given}")
        return shutil.which(given) or given
    for name in CHROMIUM_NAMES:
        if path := shutil.which(name):
            return path
    raise SetupError(
        f"no Chromium on PATH (looked for {', '.join(CHROMIUM_NAMES)}); "
        "install it with `apt-get install chromium` or pass --chromium PATH"
    )


def launch(chromium: str, profile: Path) -> subprocess.Popen:
    args = [
        chromium,
        "--headless",
        "--remote-debugging-port=0",  # any free port; Chromium writes it to DevToolsActivePort
        f"--user-data-dir={profile}",  # fresh profile: no extensions, caches or first-run pages
        "--no-first-run",
        "--no-default-browser-check",
        "--hide-scrollbars",  # scrollbars would otherwise eat into the screenshot
        "--disable-dev-shm-usage",  # containers often have a tiny /dev/shm
        "about:blank",
    ]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        # Chromium's sandbox refuses to start as root ("Running as root without --no-sandbox is not
        # supported"); the page is our own local file, so running it unsandboxed there is acceptable.
        args.insert(1, "--no-sandbox")
    with open(profile / "chromium.log", "wb") as log:  # the child keeps its own copy of the handle
        return subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log, stderr=log)


def stop(proc: subprocess.Popen) -> None:
    """Browser.close has normally ended it; after an error, SIGTERM and then SIGKILL."""
    if proc.poll() is None:
        proc.terminate()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def browser_ws_url(proc: subprocess.Popen, profile: Path, timeout: float) -> str:
    """Read the DevTools endpoint from the file Chromium writes once it listens (no log parsing)."""
    port_file = profile / "DevToolsActivePort"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = (profile / "chromium.log").read_text(errors="replace")[-2000:]
            raise SetupError(f"Chromium exited with code {proc.returncode} at start:\n{tail}")
        lines = port_file.read_text().split("\n") if port_file.exists() else []
        if len(lines) >= 2 and lines[1]:
            return f"ws://127.0.0.1:{lines[0]}{lines[1]}"
        time.sleep(0.05)
    raise SetupError(f"Chromium did not open its DevTools port within {timeout:.0f} s")


def open_page(cdp: Cdp, url: str, width: int, timeout: float) -> str:
    """New tab with the domains that report problems enabled before navigation, so nothing is missed."""
    target = cdp.send("Target.createTarget", url="about:blank")["targetId"]
    session = cdp.send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
    for domain in ("Page", "Runtime", "Log", "Network"):
        cdp.send(f"{domain}.enable", session)
    set_viewport(cdp, session, width, 800)
    nav = cdp.send("Page.navigate", session, url=url)
    if nav.get("errorText"):
        raise SetupError(f"could not open {url}: {nav['errorText']}")
    cdp.wait_for("Page.loadEventFired", timeout)
    return session


def set_viewport(cdp: Cdp, session: str, width: int, height: int) -> None:
    cdp.send(
        "Emulation.setDeviceMetricsOverride",
        session,
        width=width,
        height=height,
        deviceScaleFactor=1,
        mobile=False,
    )


def evaluate(cdp: Cdp, session: str, expression: str):
    result = cdp.send(
        "Runtime.evaluate", session, expression=expression, awaitPromise=True, returnByValue=True
    )
    if "exceptionDetails" in result:
        raise RuntimeError(f"evaluating page script failed: {result['exceptionDetails'].get('text')}")
    return result["result"].get("value")


def content_size(cdp: Cdp, session: str) -> tuple[int, int]:
    size = cdp.send("Page.getLayoutMetrics", session)["cssContentSize"]
    return int(round(size["width"])), int(round(size["height"]))


def screenshot(cdp: Cdp, session: str, width: int, height: int, path: Path) -> None:
    # Clip to the whole content; captureBeyondViewport keeps it right even if the page grew after resizing.
    shot = cdp.send(
        "Page.captureScreenshot",
        session,
        format="png",
        captureBeyondViewport=True,
        clip={"x": 0, "y": 0, "width": width, "height": height, "scale": 1},
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(base64.b64decode(shot["data"]))


def png_size(path: Path) -> tuple[int, int]:
    """Pixel size from the PNG's IHDR chunk, so no image library is needed."""
    return struct.unpack(">II", path.read_bytes()[16:24])


def console_text(params: dict) -> str:
    parts = [str(a.get("value", a.get("description", a.get("type")))) for a in params.get("args", [])]
    frames = params.get("stackTrace", {}).get("callFrames", [])
    where = f" ({frames[0]['url']}:{frames[0]['lineNumber'] + 1})" if frames else ""
    return " ".join(parts) + where


def problems_from_events(events: list[dict]) -> list[str]:
    """Console errors, uncaught exceptions and failed loads, in the order they happened."""
    urls: dict[str, str] = {}
    problems = []
    for event in events:
        method, p = event.get("method"), event.get("params", {})
        if method == "Network.requestWillBeSent":
            urls[p["requestId"]] = p["request"]["url"]
        elif method == "Network.loadingFailed":
            problems.append(f"failed load: {urls.get(p['requestId'], '?')} ({p.get('errorText')})")
        elif method == "Network.responseReceived" and p["response"].get("status", 0) >= 400:
            problems.append(f"failed load: {p['response']['url']} (HTTP {p['response']['status']})")
        elif method == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            problems.append(f"console {p['type']}: {console_text(p)}")
        elif method == "Runtime.exceptionThrown":
            d = p["exceptionDetails"]
            text = (d.get("exception", {}).get("description") or d.get("text", "")).split("\n")[0]  # no stack
            problems.append(f"uncaught exception: {text} ({d.get('url', '?')}:{d.get('lineNumber', 0) + 1})")
        elif (
            method == "Log.entryAdded"
            and p["entry"]["level"] == "error"
            and p["entry"]["source"] != "network"
        ):
            # Network errors are already reported above from the Network domain, with their URL.
            problems.append(f"browser error ({p['entry']['source']}): {p['entry']['text']}")
    return problems


def check(page: Path, shot: Path, chromium: str, width: int, timeout: float) -> int:
    with tempfile.TemporaryDirectory(prefix="check_report_page-", ignore_cleanup_errors=True) as tmp:
        proc = launch(chromium, Path(tmp))
        try:
            cdp = Cdp(browser_ws_url(proc, Path(tmp), timeout), timeout)
            version = cdp.send("Browser.getVersion")["product"]
            session = open_page(cdp, page.as_uri(), width, timeout)
            # A page-tall viewport is what a person scrolling through would trigger (lazy images, observers).
            set_viewport(cdp, session, width, content_size(cdp, session)[1])
            broken = evaluate(cdp, session, SETTLE_JS)
            info = evaluate(cdp, session, SUMMARY_JS)
            cdp.drain(0.5)
            page_w, page_h = content_size(cdp, session)
            screenshot(cdp, session, page_w, page_h, shot)
            cdp.send("Browser.close")  # graceful: also ends child processes a wrapper script might leave
            cdp.close()
        finally:
            stop(proc)
    problems = problems_from_events(cdp.events) + [f"image not loaded (naturalWidth 0): {s}" for s in broken]
    for problem in problems:
        print(problem)
    shot_w, shot_h = png_size(shot)
    print(f"page:       {page}")
    print(f"title:      {info['title']!r}")
    print(f"images:     {info['images'] - len(broken)}/{info['images']} loaded")
    print(f"tables:     {info['tables']}")
    print(f"page size:  {page_w} x {page_h} CSS px")
    print(f"screenshot: {shot} ({shot_w} x {shot_h} px, {shot.stat().st_size} bytes)")
    print(f"chromium:   {version} ({chromium})")
    print(f"FAILED: {len(problems)} problem(s)" if problems else "OK")
    return 1 if problems else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("page", type=Path, help="the report's index.html")
    parser.add_argument(
        "--screenshot", type=Path, help="PNG to write (default: screenshot.png beside the page)"
    )
    parser.add_argument(
        "--chromium", help=f"Chromium binary (default: first of {', '.join(CHROMIUM_NAMES)} on PATH)"
    )
    parser.add_argument("--width", type=int, default=1280, help="viewport width in CSS px (default 1280)")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds for start-up and page load")
    args = parser.parse_args(argv)
    page = args.page.resolve()
    try:
        if not page.is_file():
            raise SetupError(f"no such page: {args.page}")
        chromium = find_chromium(args.chromium)
        return check(
            page, args.screenshot or page.parent / "screenshot.png", chromium, args.width, args.timeout
        )
    except SetupError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except (TimeoutError, RuntimeError, websocket.WebSocketException) as err:
        # The page hung or broke the browser session: a failed check, not a crash of this script.
        print(f"error: {err}")
        print("FAILED: page check did not complete")
        return 1


if __name__ == "__main__":
    sys.exit(main())
