"""A headless Chromium driven over the DevTools protocol on a pipe (no network port, no extra
packages): navigate, evaluate JavaScript, take screenshots. Used by the viewer's browser test."""

from __future__ import annotations

import base64
import fcntl
import json
import os
import shutil
import subprocess
import tempfile
import time
from typing import Any

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--mute-audio",
    "--remote-debugging-pipe",
]


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


class Browser:
    """One Chromium process with a fresh profile; ``page()`` gives a session on its first tab."""

    def __init__(self, executable: str, width: int = 1200, height: int = 800):
        self.profile = tempfile.mkdtemp(prefix="ourgan-chromium-")
        to_child_r, self._to_child = os.pipe()  # chromium reads commands on its fd 3
        self._from_child, from_child_w = os.pipe()  # and writes replies on its fd 4

        def fds() -> None:  # in the child: move the pipe ends to 3 and 4 (via high numbers: no clash)
            r = fcntl.fcntl(to_child_r, fcntl.F_DUPFD, 10)
            w = fcntl.fcntl(from_child_w, fcntl.F_DUPFD, 10)
            os.dup2(r, 3)
            os.dup2(w, 4)

        self.proc = subprocess.Popen(
            [executable, *FLAGS, f"--user-data-dir={self.profile}", f"--window-size={width},{height}", "about:blank"],
            preexec_fn=fds,
            pass_fds=(3, 4),  # kept open past the child's fd clean-up
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(to_child_r)
        os.close(from_child_w)
        self._next_id = 0
        self._buffer = b""
        self.session: str | None = None

    # ---- protocol ------------------------------------------------------------------------
    def send(self, method: str, params: dict | None = None, timeout: float = 30.0) -> dict[str, Any]:
        self._next_id += 1
        msg: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if self.session and not method.startswith("Target."):
            msg["sessionId"] = self.session
        os.write(self._to_child, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._read(deadline)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})

    def _read(self, deadline: float) -> dict[str, Any]:
        import select

        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._from_child], [], [], left)[0]:
                raise TimeoutError("no answer from chromium")
            data = os.read(self._from_child, 1 << 20)
            if not data:
                raise RuntimeError("chromium closed the pipe")
            self._buffer += data
        raw, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(raw)

    def page(self, width: int, height: int) -> None:
        """Attach to the first tab and fix its viewport (device scale 1: one CSS px = one pixel)."""
        targets = self.send("Target.getTargets")["targetInfos"]
        tab = next(t for t in targets if t["type"] == "page")
        self.session = self.send("Target.attachToTarget", {"targetId": tab["targetId"], "flatten": True})["sessionId"]
        self.send("Page.enable")
        self.send("Emulation.setDeviceMetricsOverride", {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})

    def navigate(self, url: str, ready: str, timeout: float = 30.0) -> None:
        """Open ``url`` and wait until the JavaScript expression ``ready`` is true."""
        self.send("Page.navigate", {"url": url})
        deadline = time.monotonic() + timeout
        while not self.evaluate(ready):
            if time.monotonic() > deadline:
                raise TimeoutError(f"page {url} never became ready ({ready})")
            time.sleep(0.1)

    def evaluate(self, expression: str, timeout: float = 30.0) -> Any:
        """The value of a JavaScript expression (promises are awaited)."""
        result = self.send(
            "Runtime.evaluate", {"expression": expression, "awaitPromise": True, "returnByValue": True}, timeout=timeout
        )
        if "exceptionDetails" in result:
            raise RuntimeError(
                f"{expression}: {result['exceptionDetails'].get('text')} "
                f"{result['exceptionDetails'].get('exception', {}).get('description', '')}"
            )
        return result["result"].get("value")

    def screenshot(self, path: str) -> str:
        data = self.send("Page.captureScreenshot", {"format": "png", "fromSurface": True})["data"]
        with open(path, "wb") as f:
            f.write(base64.b64decode(data))
        return path

    def close(self) -> None:
        self.session = None  # Browser.close is a browser-level command
        try:
            self.send("Browser.close", timeout=5)
        except Exception:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._to_child)
        os.close(self._from_child)
        shutil.rmtree(self.profile, ignore_errors=True)
