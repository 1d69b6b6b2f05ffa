"""Helpers for viewer tests: a server in a thread, raw HTTP requests (paths sent exactly as written)."""

from __future__ import annotations

import contextlib
import http.client
import json
import threading
from urllib.parse import urlsplit


@contextlib.contextmanager
def running(server):
    """Serve ``server`` (a ``tmln.view`` server) in a thread for the ``with`` block."""
    t = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        t.join(5)


def request(server, path: str, method: str = "GET", headers: dict | None = None):
    """(status, headers dict, body bytes) for ``path`` sent verbatim (no client-side normalisation)."""
    u = urlsplit(server.url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    try:
        conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        hdrs = {"Host": f"127.0.0.1:{u.port}", **(headers or {})}
        for k, v in hdrs.items():
            conn.putheader(k, v)
        conn.endheaders()
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        conn.close()


def get_json(server, path: str):
    status, _, body = request(server, path)
    assert status == 200, (path, status, body[:300])
    return json.loads(body)
