"""The viewer: its Deep Zoom tiles equal the store's pyramid, many are served at once, bad and
escaping paths get 404, s3:// stores work, and a headless Chromium shows the store's pixels."""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import pyvips

from ourgan_dist.store.canvas import Canvas
from synthetic import noise_pattern, write_synthetic_store
from ourgan_dist.view.server import ViewServer, find_openseadragon

from headless import Browser, find_chromium


def level(url: str, k: int, storage_options: dict | None = None) -> np.ndarray:
    return Canvas(url, storage_options).array(str(k))[:].transpose(1, 2, 0)


def get(server: ViewServer, path: str) -> tuple[int, bytes, str]:
    """GET with the path sent exactly as written (no client-side clean-up of '..')."""
    host, port = server.server_address[:2]
    conn = http.client.HTTPConnection(host, port, timeout=30)
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        return r.status, r.read(), r.getheader("Content-Type") or ""
    finally:
        conn.close()


def serve(url: str, storage_options: dict | None = None) -> ViewServer:
    server = ViewServer(url, storage_options, port=0)
    server.start_background()
    return server


@pytest.fixture(scope="module")
def rendered(small_render) -> str:
    return small_render  # read only here (shared with the export tests)


@pytest.fixture(scope="module")
def server(rendered):
    s = serve(rendered)
    yield s
    s.shutdown()
    s.server_close()


def tile_box(level_shape, col, row, tile, overlap):
    h, w = level_shape
    return (
        max(0, row * tile - overlap),
        min(h, (row + 1) * tile + overlap),
        max(0, col * tile - overlap),
        min(w, (col + 1) * tile + overlap),
    )


def dzi(server) -> tuple[int, int, int, int]:
    status, body, ctype = get(server, "/image.dzi")
    assert status == 200 and "xml" in ctype
    root = ET.fromstring(body)
    size = root.find("{http://schemas.microsoft.com/deepzoom/2008}Size")
    return int(size.get("Width")), int(size.get("Height")), int(root.get("TileSize")), int(root.get("Overlap"))


def test_page_config_and_openseadragon_are_served(server, rendered):
    status, body, _ = get(server, "/")
    assert status == 200 and b"/osd/openseadragon.min.js" in body
    status, body, _ = get(server, "/info.json")
    info = json.loads(body)
    store = Canvas(rendered).info
    assert (info["model_id"], info["seed"], info["size"], info["complete"]) == (store["model_id"], store["seed"], [300, 200], True)
    status, body, ctype = get(server, "/osd/openseadragon.min.js")
    assert status == 200 and "javascript" in ctype and body == (find_openseadragon() / "openseadragon.min.js").read_bytes()
    assert get(server, "/osd/images/home_rest.png")[0] == 200


def test_every_tile_equals_the_store_pyramid_and_many_are_served_at_once(server, rendered):
    width, height, tile, overlap = dzi(server)
    assert (width, height) == (300, 200)
    shapes = Canvas(rendered).plan.pyramid_shapes
    top = 9  # ceil(log2(300))
    jobs = []
    for k, shape in enumerate(shapes):  # Deep Zoom level top - k is the store's array k
        for row in range(-(-shape[0] // tile)):
            for col in range(-(-shape[1] // tile)):
                jobs.append((k, top - k, col, row))
    jobs = jobs * 6  # repeat: 60+ requests in flight on 16 threads
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda j: get(server, f"/image_files/{j[1]}/{j[2]}_{j[3]}.png"), jobs))
    for (k, lvl, col, row), (status, body, ctype) in zip(jobs, answers):
        assert status == 200 and ctype == "image/png", (lvl, col, row, status)
        y0, y1, x0, x1 = tile_box(shapes[k], col, row, tile, overlap)
        np.testing.assert_array_equal(pyvips.Image.new_from_buffer(body, "").numpy(), level(rendered, k)[y0:y1, x0:x1])
    # levels coarser than the store's last array are 2x2 means of it, down to one pixel
    status, body, _ = get(server, "/image_files/0/0_0.jpeg")
    assert status == 200 and pyvips.Image.new_from_buffer(body, "").width == 1


def test_every_tile_a_dzi_export_writes_is_served_under_its_name(server, rendered, tmp_path):
    """The export's tiles are .jpg by default: the viewer answers each of those names with a JPEG
    of the same tile, and its descriptor has the export's geometry (its tiles named png, for the
    exact pixels: deepzoom.py)."""
    from ourgan_dist.outputs.export import export

    export(rendered, str(tmp_path / "r.dzi"), progress=False)
    exported = ET.fromstring((tmp_path / "r.dzi").read_bytes())
    ours = ET.fromstring(get(server, "/image.dzi")[1])
    assert exported.get("Format") == "jpg" and ours.get("Format") == "png"
    assert {k: v for k, v in exported.attrib.items() if k != "Format"} == {k: v for k, v in ours.attrib.items() if k != "Format"}
    assert exported[0].attrib == ours[0].attrib  # <Size Width Height>
    files = tmp_path / "r_files"
    names = sorted(str(p.relative_to(files)) for p in files.rglob("*.jpg"))
    assert len(names) >= 10  # every level, down to 1x1
    for name in names:
        status, body, ctype = get(server, f"/image_files/{name}")
        assert status == 200 and ctype == "image/jpeg" and body[:2] == b"\xff\xd8", name
        served = pyvips.Image.new_from_buffer(body, "").numpy().astype(int)
        written = pyvips.Image.new_from_file(str(files / name)).numpy().astype(int)
        assert served.shape == written.shape and np.abs(served - written).mean() < 3, name
    # .jpeg and .png name the same tile in the other encodings
    status, body, ctype = get(server, "/image_files/9/0_0.jpeg")
    assert status == 200 and ctype == "image/jpeg"
    status, body, ctype = get(server, "/image_files/9/0_0.png")
    assert status == 200 and ctype == "image/png" and body[:4] == b"\x89PNG"


@pytest.mark.parametrize(
    "path",
    [
        "/image_files/10/0_0.png",  # no level 10 in a 300 px image
        "/image_files/9/2_0.png",
        "/image_files/9/0_1.png",  # off the grid
        "/image_files/9/0_0.gif",
        "/image_files/9/0_0.JPG",
        "/image_files/9/0_0.jpe",
        "/image_files/x/0_0.png",
        "/image_files/9/-1_0.png",
        "/image_files/9/0_0.png/x",
        "/zarr.json",
        "/0/zarr.json",
        "/../zarr.json",
        "/image_files/../../zarr.json",
        "/static/../../canvas.py",
        "/static/%2e%2e/%2e%2e/canvas.py",
        "/static/package.json",
        "/osd/../../../../../../etc/passwd",
        "/osd/%2e%2e/%2e%2e/package.json",
        "/osd/..%2f..%2fpackage.json",
        "/osd//etc/passwd",
        "/osd/",
        "/osd/images",
        "/nothing",
    ],
)
def test_bad_and_escaping_paths_are_404(server, path):
    status, body, _ = get(server, path)
    assert status == 404, (path, status, body[:80])


def test_incomplete_store_is_shown_with_its_progress(tmp_path):
    url = str(tmp_path / "part.zarr")
    write_synthetic_store(url, 64, 48, chunk=16, complete=False)
    s = serve(url)
    try:
        info = json.loads(get(s, "/info.json")[1])
        assert info["complete"] is False and info["tasks_done"] == 0 and info["tasks_total"] > 0
    finally:
        s.shutdown()
        s.server_close()


def test_s3_store_is_viewed_through_storage_options(s3_server):
    import s3fs

    endpoint, options = s3_server
    s3fs.S3FileSystem(**options).mkdir("view-bucket")
    url = "s3://view-bucket/syn.zarr"
    write_synthetic_store(url, 200, 120, chunk=32, pattern=noise_pattern(2), storage_options=options)
    s = serve(url, options)
    try:
        width, height, tile, overlap = dzi(s)
        assert (width, height) == (200, 120)
        status, body, _ = get(s, "/image_files/8/0_0.png")  # full resolution, first tile
        assert status == 200
        np.testing.assert_array_equal(
            pyvips.Image.new_from_buffer(body, "").numpy(), level(url, 0, options)[: tile + overlap, : tile + overlap]
        )
    finally:
        s.shutdown()
        s.server_close()


def test_view_command_refuses_a_path_that_is_no_store(tmp_path):
    from click.testing import CliRunner

    from ourgan_dist.cli import main

    res = CliRunner().invoke(main, ["view", str(tmp_path / "none.zarr"), "--port", "0"])
    assert res.exit_code == 2 and res.output.startswith("Error: store") and res.output.count("\n") == 1


# ---- in a real browser ---------------------------------------------------------------------------

SHOW = """(function (scale, ox, oy) {
  // image pixel (0, 0) at viewer-element pixel (ox, oy), `scale` screen pixels per image pixel
  var v = osdViewer, c = v.viewport.getContainerSize(), W = v.world.getItemAt(0).getContentSize().x;
  v.viewport.fitBounds(new OpenSeadragon.Rect(-ox / (scale * W), -oy / (scale * W), c.x / (scale * W),
                                              c.y / (scale * W)), true);
  var p = v.viewport.imageToViewerElementCoordinates(new OpenSeadragon.Point(0, 0));
  return [p.x, p.y];
})"""
ELEMENT = "(function(){var r = document.getElementById('viewer').getBoundingClientRect(); return [r.x, r.y, r.width, r.height];})()"


@pytest.fixture(scope="module")
def chromium():
    exe = find_chromium()
    if exe is None:
        pytest.skip(
            "headless Chromium is not installed and could not be (.ci/run installs the Debian package "
            "`chromium`; run `apt-get install -y chromium`)"
        )
    out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=60)
    if out.returncode:
        pytest.skip(f"chromium does not start here: {out.stderr.strip()[:200]}")
    return exe


def assert_view_shows(
    browser: Browser, shot_path: str, want: np.ndarray, scale: float, ox: int, oy: int, element: tuple[int, int, int, int]
) -> None:
    """Place image pixel (0, 0) at (ox, oy) of the viewer element at ``scale``, wait for every tile,
    and compare the screenshot with ``want`` (the pixels of the level shown 1:1 at that scale)."""
    ex, ey, ew, eh = element
    assert browser.evaluate(SHOW + f"({scale}, {ox}, {oy})") == pytest.approx([ox, oy], abs=1e-6)
    assert browser.evaluate("window.viewerSettled()")
    shot = pyvips.Image.new_from_file(browser.screenshot(shot_path)).numpy()[..., :3]
    seen = shot[ey : ey + eh, ex : ex + ew].astype(int)  # the viewer element
    want = want.astype(int)
    lh, lw = want.shape[:2]
    y0, y1, x0, x1 = max(0, oy), min(eh, oy + lh), max(0, ox), min(ew, ox + lw)
    diff = np.abs(seen[y0:y1, x0:x1] - want[y0 - oy : y1 - oy, x0 - ox : x1 - ox])
    assert diff.size > 0.5 * ew * eh * 3 or diff.size == want.size, "the comparison must cover the image"
    outside = np.ones(seen.shape[:2], bool)
    outside[y0:y1, x0:x1] = False
    assert (seen[outside] < 40).all()  # nothing but the dark background around the image
    assert diff.max() <= 2 and diff.mean() < 0.5, (shot_path, diff.max(), diff.mean())


def test_browser_shows_the_store_pixels_at_full_view_and_zoomed_into_a_corner(chromium, tmp_path):
    url = str(tmp_path / "syn.zarr")
    width, height = 1536, 1024
    write_synthetic_store(url, width, height, chunk=64, pattern=noise_pattern(3))  # any misplaced pixel shows
    shots = os.environ.get("OURGAN_SCREENSHOTS") or str(tmp_path)
    s = serve(url)
    browser = Browser(chromium)
    try:
        browser.page(1200, 800)
        browser.navigate(
            s.url,
            "window.osdViewer !== undefined && osdViewer.world.getItemCount() > 0 && "
            "document.getElementById('config').rows.length > 0",
        )
        assert browser.evaluate("window.viewerSettled()")
        assert "1536 \u00d7 1024" in browser.evaluate("document.getElementById('config').innerText")
        browser.screenshot(os.path.join(shots, "view-home.png"))
        # the viewer's own buttons and navigator overlay the image: hide them for pixel checks
        browser.evaluate(
            "osdViewer.navigator.element.style.display = 'none'; "
            "osdViewer.controls.forEach(function (c) { c.element.style.display = 'none'; }); true"
        )
        ex, ey, ew, eh = map(round, browser.evaluate(ELEMENT))

        def check(name: str, scale: float, ox: int, oy: int, k: int) -> None:
            assert_view_shows(browser, os.path.join(shots, name), level(url, k), scale, ox, oy, (ex, ey, ew, eh))

        # full view: the whole image at half size, which is the store's array 1, pixel for pixel
        check("view-full.png", 0.5, (ew - width // 2) // 2, (eh - height // 2) // 2, 1)
        # zoomed into the bottom-right corner at full resolution: array 0, pixel for pixel
        check("view-corner.png", 1.0, ew - width, eh - height, 0)
        # and the top-left corner zoomed in 4x: array 0 pixels shown as 4x4 squares
        browser.evaluate(SHOW + "(4, 0, 0)")
        assert browser.evaluate("window.viewerSettled()")
        shot = pyvips.Image.new_from_file(browser.screenshot(os.path.join(shots, "view-zoom4.png"))).numpy()[..., :3]
        seen = shot[ey : ey + eh, ex : ex + ew].astype(int)
        want = np.repeat(np.repeat(level(url, 0)[: -(-eh // 4), : -(-ew // 4)], 4, 0), 4, 1)[:eh, :ew].astype(int)
        assert np.abs(seen - want).max() <= 2
    finally:
        browser.close()
        s.shutdown()
        s.server_close()


EXPORT_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>exported tree</title>
<style>html, body { margin: 0; height: 100%; background: #000; } #viewer { width: 100%; height: 100%; }</style>
<script src="osd/openseadragon.min.js"></script></head>
<body><div id="viewer"></div><script>
window.osdViewer = OpenSeadragon({id: "viewer", prefixUrl: "osd/images/", tileSources: "r.dzi",
  showNavigationControl: false, imageSmoothingEnabled: false, drawer: "canvas", maxZoomPixelRatio: 16});
window.viewerSettled = function () {
  return new Promise(function (resolve) {
    (function check() {
      var item = osdViewer.world.getItemAt(0), vp = osdViewer.viewport;
      if (item && item.getFullyLoaded() && vp.getZoom(false) === vp.getZoom(true)) {
        osdViewer.forceRedraw();
        requestAnimationFrame(function () { requestAnimationFrame(function () { resolve(true); }); });
      } else { setTimeout(check, 50); }
    })();
  });
};
</script></body></html>
"""


@pytest.mark.slow  # ~7 s in a browser; the default suite keeps the viewer's own browser test; CI runs it
def test_openseadragon_opens_an_exported_deep_zoom_tree(chromium, tmp_path, monkeypatch):
    """`ourgan-dist export r.dzi` as a web page would use it: a static server, OpenSeadragon from
    npm, the exported tree (cut in bands of two tile columns, so band seams are on screen). The
    screenshots equal the store's arrays 1 (whole image at half size) and 0 (a corner at 1:1)."""
    import functools
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
    from threading import Thread

    import ourgan_dist.outputs.export as ex
    import ourgan_dist.outputs.export_dzi as export_dzi

    url = str(tmp_path / "syn.zarr")
    width, height = 1536, 1024
    write_synthetic_store(url, width, height, chunk=64, pattern=noise_pattern(4))
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.setattr(export_dzi, "DZI_BAND_TILES", 2)
    ex.export(url, str(site / "r.dzi"), compression="png", progress=False)
    os.symlink(find_openseadragon(), site / "osd")
    (site / "index.html").write_text(EXPORT_PAGE)

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(site)))
    Thread(target=httpd.serve_forever, daemon=True).start()
    shots = os.environ.get("OURGAN_SCREENSHOTS") or str(tmp_path)
    browser = Browser(chromium)
    try:
        browser.page(1200, 800)
        browser.navigate(
            f"http://127.0.0.1:{httpd.server_address[1]}/index.html",
            "window.osdViewer !== undefined && osdViewer.world.getItemCount() > 0",
        )
        assert browser.evaluate("window.viewerSettled()")
        element = tuple(map(round, browser.evaluate(ELEMENT)))
        ew, eh = element[2], element[3]
        assert_view_shows(
            browser,
            os.path.join(shots, "export-full.png"),
            level(url, 1),
            0.5,
            (ew - width // 2) // 2,
            (eh - height // 2) // 2,
            element,
        )
        assert_view_shows(browser, os.path.join(shots, "export-corner.png"), level(url, 0), 1.0, ew - width, eh - height, element)
    finally:
        browser.close()
        httpd.shutdown()
        httpd.server_close()
