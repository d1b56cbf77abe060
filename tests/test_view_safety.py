"""The viewer holds up against what reaches 127.0.0.1 anyway: a Host that is not this server on
loopback (DNS rebinding) gets 403, a half-sent request is dropped after the socket timeout, at
most ``max_handlers`` requests are handled at once (503 beyond), and client errors are logged in
one line, not as tracebacks. Real servers on 127.0.0.1, real HTTP clients."""

from __future__ import annotations

import http.client
import logging
import socket
import time

import pytest

from ourgan_dist.view.server import ViewServer, host_allowed


def serve(url: str, **kw) -> ViewServer:
    server = ViewServer(url, port=0, **kw)
    server.start_background()
    return server


@pytest.fixture(scope="module")
def server(small_render):
    s = serve(small_render)
    yield s
    s.shutdown()
    s.server_close()


def get(server: ViewServer, path: str, host: str | None) -> tuple[int, bytes]:
    """GET ``path`` sending exactly ``host`` as the Host header (none if None)."""
    conn = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=30)
    try:
        conn.putrequest("GET", path, skip_host=True)
        if host is not None:
            conn.putheader("Host", host)
        conn.endheaders()
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def test_only_loopback_hosts_naming_this_server_are_answered(server):
    port = server.server_address[1]
    for host in (f"127.0.0.1:{port}", "127.0.0.1", f"localhost:{port}", "LocalHost", f"[::1]:{port}", "[::1]"):
        assert get(server, "/info.json", host)[0] == 200, host
    for host in (
        "evil.example",
        f"evil.example:{port}",
        f"127.0.0.1.evil.example:{port}",
        f"127.0.0.1:{port + 1}",
        f"localhost:{port}@evil.example",
        "0.0.0.0",
        f"192.168.1.5:{port}",
        "",
        None,
    ):
        for path in ("/info.json", "/image_files/0/0_0.png", "/"):
            status, body = get(server, path, host)
            assert status == 403 and b"forbidden" in body and b"model" not in body, (host, path)
    assert host_allowed(f"127.0.0.1:{port}", port) and not host_allowed(f"127.0.0.1:{port}0", port)


def half_sent(server: ViewServer) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", server.server_address[1]), timeout=30)
    s.sendall(b"GET /info.json HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # no blank line: the request never ends
    return s


def test_a_half_sent_request_is_dropped_after_the_timeout(small_render, caplog, capsys):
    server = serve(small_render, request_timeout=1.0, max_handlers=2)
    try:
        with caplog.at_level(logging.DEBUG, logger="ourgan_dist.view.server"):
            t0 = time.monotonic()
            a, b = half_sent(server), half_sent(server)
            time.sleep(0.3)  # both are now held by the server's two handlers
            status, body = get(server, "/info.json", "127.0.0.1")
            assert status == 503 and body == b"busy\n"  # a third is refused at once, not queued on a thread
            assert a.recv(100) == b"" and b.recv(100) == b""  # dropped by the server: the connection ends
            took = time.monotonic() - t0
            assert 0.9 < took < 8, took
            a.close()
            b.close()
            time.sleep(0.2)
            assert get(server, "/info.json", "127.0.0.1")[0] == 200  # the slots are free again
        timeouts = [r for r in caplog.records if "timed out" in r.getMessage()]
        assert len(timeouts) == 2 and all("\n" not in r.getMessage() for r in timeouts)
        assert "Traceback" not in capsys.readouterr().err
    finally:
        server.shutdown()
        server.server_close()


def test_a_client_gone_mid_answer_is_one_log_line_not_a_traceback(server, caplog, capsys):
    with caplog.at_level(logging.DEBUG, logger="ourgan_dist.view.server"):
        try:
            raise BrokenPipeError(32, "Broken pipe")
        except BrokenPipeError:
            server.handle_error(None, ("127.0.0.1", 5555))
        try:
            raise ValueError("bad\nthing")
        except ValueError:
            server.handle_error(None, ("127.0.0.1", 5555))
    lines = [r.getMessage() for r in caplog.records]
    assert any("BrokenPipeError" in m for m in lines) and any("ValueError: bad thing" in m for m in lines)
    assert all("\n" not in m for m in lines)
    assert "Traceback" not in capsys.readouterr().err
