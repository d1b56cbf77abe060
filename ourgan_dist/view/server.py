"""The viewer's HTTP server: the page, OpenSeadragon's files, the render's config and its tiles.

Routes (everything else is a 404; nothing is read from a path taken from the request):

    /                                   the page (static/index.html)
    /static/<name>                      the page's own files, by name from a fixed list
    /osd/<path>                         OpenSeadragon's build (in the package), inside that folder only
    /info.json                          the render's config: model, seed, size, completion
    /image.dzi                          the Deep Zoom descriptor (png tiles)
    /image_files/<level>/<col>_<row>.<png|jpg|jpeg>   a tile, cut from the store's pyramid: PNG
                                        (lossless) or JPEG by its suffix, the names a .dzi export
                                        writes among them (outputs/deepzoom.py says why the
                                        viewer's own descriptor names png)

A ``ThreadingHTTPServer`` answers requests on threads, so a browser's many tile requests are
served at once; every tile is a read of the store (Zarr reads are safe from many threads).

It serves this machine only, and holds up against what reaches it anyway:

- Only a loopback ``Host`` naming the server (``127.0.0.1``, ``localhost`` or ``[::1]``, with no
  port or the server's own) is answered; any other gets 403. A web page elsewhere whose domain
  is made to resolve to 127.0.0.1 (DNS rebinding) sends its own domain as the Host, so it
  cannot read the render through the visitor's browser.
- Each connection has a socket timeout (``REQUEST_TIMEOUT``): a client that sends half a
  request, or stops reading, is dropped after it.
- At most ``MAX_HANDLERS`` requests are handled at once (one thread each); a connection beyond
  that is answered 503 with ``Retry-After`` at once, so a flood cannot pile up threads.
- Client errors (a dropped connection, a timeout, a malformed request) are logged in one line,
  never as a traceback.
"""

from __future__ import annotations

import json
import logging
import mimetypes
import os
import re
import sys
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from ..store.canvas import Canvas
from ..store.storage import redact, strip_userinfo
from ..errors import UserError
from ..outputs.deepzoom import TILE_TYPES
from .tiles import DeepZoom, DeepZoomKey

log = logging.getLogger(__name__)
STATIC = Path(__file__).parent / "static"
PAGE_FILES = ("index.html", "viewer.js", "viewer.css")
OSD_ENV = "OURGAN_OPENSEADRAGON"  # a folder holding openseadragon.min.js, to override the search
TILE_PATH = re.compile(rf"^/image_files/(\d{{1,2}})/(\d{{1,7}})_(\d{{1,7}})\.({'|'.join(TILE_TYPES)})$")
REQUEST_TIMEOUT = 10.0  # seconds a connection may sit idle mid-request (or not reading the answer)
MAX_HANDLERS = 32  # requests handled at once; a browser opens about 6 connections per host
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")
_BUSY = (
    b"HTTP/1.0 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n"
    b"Retry-After: 1\r\nConnection: close\r\n\r\nbusy\n"
)


def host_allowed(host: str | None, port: int) -> bool:
    """Whether a request's ``Host`` header names this server on loopback: 127.0.0.1, localhost
    or [::1], with no port or ``port``."""
    if not host:
        return False
    host = host.strip().lower()
    for name in LOOPBACK_NAMES:
        if host == name or host == f"{name}:{port}":
            return True
    return False


def find_openseadragon() -> Path:
    """The folder of OpenSeadragon's build (openseadragon.min.js and images/): the copy the
    package's build puts in ``static/openseadragon`` (setup.py), else one npm installed."""
    rel = Path("node_modules") / "openseadragon" / "build" / "openseadragon"
    candidates = [Path(os.environ[OSD_ENV])] if os.environ.get(OSD_ENV) else []
    candidates += [STATIC / "openseadragon", STATIC / rel, Path(__file__).resolve().parents[2] / rel, Path.cwd() / rel]
    for c in candidates:
        if (c / "openseadragon.min.js").is_file():
            return c.resolve()
    raise UserError(
        "OpenSeadragon is not in this install of ourgan-dist (its build puts it in "
        "ourgan_dist/view/static/openseadragon): reinstall it with npm available at build time, or point "
        f"{OSD_ENV} at a folder with openseadragon.min.js"
    )


def render_summary(canvas: Canvas) -> dict[str, Any]:
    """What the page shows beside the image: no credentials (the store keeps none)."""
    info = canvas.info
    done = total = None
    if not canvas.complete:
        tasks = canvas.progress()["tasks"].values()
        done, total = sum(d for d, _ in tasks), sum(t for _, t in tasks)
    return {
        "url": strip_userinfo(canvas.url),
        "name": info.get("name"),
        "model": info.get("model"),
        "model_id": info.get("model_id"),
        "model_preset": info.get("model_preset"),
        "seed": info.get("seed"),
        "size": info.get("size"),
        "exact": info.get("exact"),
        "precision": info.get("precision"),
        "complete": canvas.complete,
        "tasks_done": done,
        "tasks_total": total,
        "levels": [list(s) for s in canvas.plan.pyramid_shapes],
    }


class ViewServer(ThreadingHTTPServer):
    """Serves one render store on 127.0.0.1 (``port`` 0: any free port)."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(
        self,
        url: str,
        storage_options: dict | None = None,
        port: int = 8000,
        host: str = "127.0.0.1",
        osd_dir: Path | None = None,
        request_timeout: float = REQUEST_TIMEOUT,
        max_handlers: int = MAX_HANDLERS,
    ):
        self.request_timeout = request_timeout
        self._slots = threading.BoundedSemaphore(max_handlers)
        self.canvas = Canvas(url, storage_options)
        self.zoom = DeepZoom(self.canvas)
        self.osd_dir = (osd_dir or find_openseadragon()).resolve()
        self.summary = render_summary(self.canvas)
        try:
            super().__init__((host, port), ViewHandler)
        except OSError as e:
            raise UserError(f"--port {port}: cannot listen on {host}:{port} ({e.strerror}); choose another port") from None

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}/"

    def process_request(self, request, client_address) -> None:
        """Hand the connection to a thread if fewer than ``max_handlers`` are busy; else answer
        503 at once and close it."""
        if not self._slots.acquire(blocking=False):
            log.info("%s: busy (%d requests in hand), answered 503", client_address[0], MAX_HANDLERS)
            try:
                request.settimeout(1.0)
                request.sendall(_BUSY)
                request.setblocking(False)
                request.recv(65536)  # what of the request has come: closing with it unread would reset the answer
            except OSError:
                pass
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def handle_error(self, request, client_address) -> None:
        """One line for an error a request's thread did not handle (a client that went away
        mid-answer, mostly), instead of socketserver's traceback on stderr."""
        e = sys.exc_info()[1]
        level = logging.DEBUG if isinstance(e, (ConnectionError, TimeoutError)) else logging.WARNING
        log.log(level, "%s: %s: %s", client_address[0] if client_address else "?", type(e).__name__, " ".join(str(e).split())[:300])

    def start_background(self) -> threading.Thread:
        """Serve on a daemon thread (tests, notebooks); ``shutdown()`` stops it."""
        t = threading.Thread(target=self.serve_forever, name="ourgan-view", daemon=True)
        t.start()
        return t


class ViewHandler(BaseHTTPRequestHandler):
    server: ViewServer
    server_version = "ourgan-dist-view"

    def setup(self) -> None:
        self.timeout = self.server.request_timeout  # the connection's socket timeout (StreamRequestHandler)
        super().setup()

    def log_message(self, fmt: str, *args: Any) -> None:  # quiet by default; --debug logging shows them
        log.debug("%s " + fmt, self.address_string(), *args)

    def log_error(self, fmt: str, *args: Any) -> None:  # a client's error (timeout, bad request): one line
        try:
            text = fmt % args
        except (TypeError, ValueError):
            text = f"{fmt} {args!r}"
        log.info("%s %s", self.address_string(), " ".join(text.split())[:300])

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        self._answer(head=False)

    def do_HEAD(self) -> None:  # noqa: N802
        self._answer(head=True)

    def _answer(self, head: bool) -> None:
        if not host_allowed(self.headers.get("Host"), self.server.server_address[1]):
            log.info(
                "%s: refused Host %r (not this server on loopback)", self.address_string(), (self.headers.get("Host") or "")[:100]
            )
            self._send(
                HTTPStatus.FORBIDDEN,
                b"forbidden: this viewer answers only http://127.0.0.1, localhost or [::1] at its own port\n",
                "text/plain",
                head,
            )
            return
        path = unquote(urlsplit(self.path).path)
        try:
            found = self._route(path)
        except Exception as e:  # a storage error on one tile must not end the server
            log.warning("error on %s: %s: %s", path, type(e).__name__, redact(" ".join(str(e).split()))[:300])
            self._send(HTTPStatus.INTERNAL_SERVER_ERROR, b"store read failed\n", "text/plain", head)
            return
        if found is None:
            self._send(HTTPStatus.NOT_FOUND, b"not found\n", "text/plain", head)
        else:
            body, ctype, cache = found
            self._send(HTTPStatus.OK, body, ctype, head, cache)

    def _route(self, path: str) -> tuple[bytes, str, bool] | None:
        if path in ("/", "/index.html"):
            return (STATIC / "index.html").read_bytes(), "text/html; charset=utf-8", False
        if path.startswith("/static/"):
            name = path[len("/static/") :]
            if name not in PAGE_FILES:
                return None
            return (STATIC / name).read_bytes(), _ctype(name), False
        if path.startswith("/osd/"):
            return self._osd_file(path[len("/osd/") :])
        if path == "/info.json":
            return json.dumps(self.server.summary).encode(), "application/json", False
        if path == "/image.dzi":
            return self.server.zoom.descriptor().encode(), "application/xml", False
        m = TILE_PATH.match(path)
        if m:
            level, col, row, fmt = int(m[1]), int(m[2]), int(m[3]), m[4]
            body = self.server.zoom.encode(DeepZoomKey(level, col, row), fmt)
            return None if body is None else (body, TILE_TYPES[fmt], self.server.canvas.complete)
        return None

    def _osd_file(self, rel: str) -> tuple[bytes, str, bool] | None:
        """A file of OpenSeadragon's build folder; anything resolving outside it is not found."""
        if not rel or "\\" in rel or "\x00" in rel:
            return None
        root = self.server.osd_dir
        target = (root / rel).resolve()
        if root not in target.parents or not target.is_file():
            return None
        return target.read_bytes(), _ctype(target.name), True

    def _send(self, status: HTTPStatus, body: bytes, ctype: str, head: bool, cache: bool = False) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "max-age=3600" if cache else "no-cache")
        self.end_headers()
        if not head:
            self.wfile.write(body)


def _ctype(name: str) -> str:
    return (
        {".js": "text/javascript", ".css": "text/css", ".html": "text/html; charset=utf-8"}.get(os.path.splitext(name)[1])
        or mimetypes.guess_type(name)[0]
        or "application/octet-stream"
    )
