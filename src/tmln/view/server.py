"""The viewer's HTTP server: a small read-only stdlib ``ThreadingHTTPServer`` over one ``RunData``.

Routes (GET and HEAD only; anything else is 405/501):

- ``/`` the page; ``/static/<file>`` its scripts, styles and OpenSeadragon (only the files shipped in
  ``tmln/view/static``);
- ``/api/run``: patients, slides, nodes and the run summary; ``/api/review``: the review list;
  ``/api/slide/<id>``: one slide (size, µm/px, problems, heat-layer placement);
  ``/api/slide/<id>/nodes.geojson|tumour.geojson|heat.png``;
- ``/dzi/<id>.dzi`` and ``/dzi/<id>_files/<level>/<col>_<row>.jpeg``: Deep Zoom tiles;
- ``/run/<path>``: a file of the run directory (the tables, GeoJSON, overlays).

Safety: binds 127.0.0.1 by default (another host: a warning); only files of the run and the slides
its tables name are read. A path with ``..`` or ``.`` segments, an empty segment (``//``: absolute
paths), encoded separators (``%2f``, ``%5c``) or NUL, a backslash, a hidden file, or a symlink that
leads out of the run is answered 404; a malformed tile request 400 with a one-line text body. No
response ever carries a traceback (internal errors: 500 "internal error", the traceback goes to the
server's log). When bound to a loopback address, requests whose ``Host`` is not a loopback name are
refused (403), so a web page elsewhere cannot reach the viewer through DNS rebinding.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import re
import sys
import threading
import traceback
import warnings
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote

from tmln.rundir import NODES_GEOJSON, TUMOUR_GEOJSON
from tmln.view.data import RunData
from tmln.view.tiles import FORMATS, TileRequestError, unreadable_tile

log = logging.getLogger("tmln.view")
STATIC_DIR = Path(__file__).parent / "static"
CONTENT_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                 ".css": "text/css; charset=utf-8", ".png": "image/png", ".jpg": "image/jpeg",
                 ".jpeg": "image/jpeg", ".json": "application/json", ".geojson": "application/geo+json",
                 ".csv": "text/csv; charset=utf-8", ".txt": "text/plain; charset=utf-8", ".svg": "image/svg+xml",
                 ".npy": "application/octet-stream"}
TILE_RE = re.compile(r"^(\d{1,3})/(\d{1,9})_(\d{1,9})\.([a-z]{3,4})$")
LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1", "[::1]"}


def _static_files() -> dict[str, Path]:
    """Every file shipped under static/, by its posix path: the only static files served."""
    return {p.relative_to(STATIC_DIR).as_posix(): p for p in STATIC_DIR.rglob("*") if p.is_file()}


def is_loopback(host: str) -> bool:
    h = host.strip("[]")
    if h == "localhost":
        return True
    try:
        return ipaddress.ip_address(h).is_loopback
    except ValueError:
        return False


def host_warning(host: str) -> str | None:
    """The warning for a non-loopback bind address (None for loopback)."""
    if is_loopback(host):
        return None
    return (f"tmln view is listening on {host}, not only on this computer: anyone who can reach it can see "
            "these slides and results (there is no login). Use the default 127.0.0.1 unless you mean it.")


class ViewerServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address, data: RunData, quiet: bool = True):
        self.data = data
        self.quiet = quiet
        self.static = _static_files()
        self.loopback_only = is_loopback(str(address[0]))
        if ":" in str(address[0]):  # an IPv6 address (e.g. ::1)
            import socket

            self.address_family = socket.AF_INET6
        super().__init__(address, Handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        host = f"[{host}]" if ":" in str(host) else host
        return f"http://{host}:{port}/"

    def server_close(self) -> None:
        super().server_close()
        self.data.close()


class BadRequest(Exception):
    pass


class NotFound(Exception):
    pass


class Handler(BaseHTTPRequestHandler):
    server: ViewerServer
    server_version = "tmln-view"
    sys_version = ""
    protocol_version = "HTTP/1.1"
    # headers and body go out in two writes: without TCP_NODELAY, Nagle's algorithm and the client's
    # delayed ACK hold every keep-alive response back by ~40 ms
    disable_nagle_algorithm = True

    # ------------------------------------------------------------------ plumbing
    def log_message(self, fmt, *args):  # quiet unless asked
        if not self.server.quiet:
            sys.stderr.write("%s - %s\n" % (self.address_string(), fmt % args))

    def send_error(self, code, message=None, explain=None):
        """Every error is a short text body (never HTML, never a traceback)."""
        try:
            phrase = HTTPStatus(code).phrase
        except ValueError:
            phrase = ""
        self._send(code, f"{code} {message or phrase}\n".encode("utf-8", "replace"), "text/plain; charset=utf-8",
                   close=True)

    def _send(self, code: int, body: bytes, ctype: str, cache: str = "no-cache", close: bool = False,
              extra: dict | None = None) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", cache)
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, obj, code: int = 200) -> None:
        self._send(code, json.dumps(obj, allow_nan=False, default=str).encode("utf-8"), "application/json")

    def do_HEAD(self):
        self.do_GET()

    def do_GET(self):
        try:
            if self.server.loopback_only:
                host = (self.headers.get("Host") or "").strip()
                name = host.rsplit(":", 1)[0] if not host.startswith("[") else host.split("]")[0] + "]"
                if name.lower() not in LOOPBACK_NAMES and not is_loopback(name):
                    self._send(403, b"403 Forbidden: this viewer answers only to localhost\n",
                               "text/plain; charset=utf-8", close=True)
                    return
            self._route(self._clean_path())
        except NotFound as exc:
            self._send(404, f"404 Not Found{': ' + str(exc) if str(exc) else ''}\n".encode(), "text/plain; charset=utf-8")
        except BadRequest as exc:
            self._send(400, f"400 Bad Request: {exc}\n".encode(), "text/plain; charset=utf-8")
        except (BrokenPipeError, ConnectionResetError):
            pass
        except Exception:  # never a traceback to the client
            log.error("internal error serving %s\n%s", self.path, traceback.format_exc())
            try:
                self._send(500, b"500 internal error (see the server's log)\n", "text/plain; charset=utf-8", close=True)
            except Exception:
                pass

    def _clean_path(self) -> str:
        """The decoded request path, or ``NotFound`` for anything that could leave the allowed files."""
        raw = self.path.split("?", 1)[0].split("#", 1)[0]
        low = raw.lower()
        if not raw.startswith("/") or "\\" in raw or "%2f" in low or "%5c" in low or "%00" in low or "%25" in low:
            raise NotFound("")
        try:
            path = unquote(raw, errors="strict") if "%" in raw else raw
        except UnicodeDecodeError:
            raise NotFound("") from None
        if "\x00" in path or "\\" in path:
            raise NotFound("")
        segs = path.split("/")[1:]
        if path != "/" and any(s in ("", ".", "..") for s in segs):
            raise NotFound("")
        return path

    # ------------------------------------------------------------------ routes
    def _route(self, path: str) -> None:
        data = self.server.data
        if path in ("/", "/index.html"):
            return self._static("index.html")
        if path.startswith("/static/"):
            return self._static(path[len("/static/"):])
        if path == "/api/run":
            return self._json(run_json(data))
        if path == "/api/review":
            return self._json({"review": data.review()})
        if path.startswith("/api/slide/"):
            return self._api_slide(path[len("/api/slide/"):].split("/"))
        if path.startswith("/dzi/"):
            return self._dzi(path[len("/dzi/"):])
        if path.startswith("/run/"):
            return self._run_file(path[len("/run/"):])
        raise NotFound("")

    def _static(self, rel: str) -> None:
        p = self.server.static.get(rel)
        if p is None:
            raise NotFound("")
        self._send(200, p.read_bytes(), CONTENT_TYPES.get(p.suffix.lower(), "application/octet-stream"))

    def _slide(self, sid: str):
        info = self.server.data.slide(sid)
        if info is None:
            raise NotFound(f"no slide {sid!r} in this run")
        return info

    def _api_slide(self, parts: list[str]) -> None:
        data = self.server.data
        info = self._slide(parts[0])
        if len(parts) == 1:
            return self._json(slide_json(data, info))
        if len(parts) == 2 and parts[1] in (NODES_GEOJSON, TUMOUR_GEOJSON):
            body = data.geojson(info, parts[1].split(".")[0])
            if body is None:
                raise NotFound(f"slide {info.slide_id} has no {parts[1]}")
            return self._send(200, body, "application/geo+json")
        if len(parts) == 2 and parts[1] == "heat.png":
            heat = data.heat(info)
            if heat is None:
                raise NotFound(f"slide {info.slide_id} has no tumour map")
            return self._send(200, heat[1], "image/png", cache="private, max-age=300")
        raise NotFound("")

    def _dzi(self, rest: str) -> None:
        data = self.server.data
        if rest.endswith(".dzi") and "/" not in rest:
            info = self._slide(rest[:-4])
            try:
                dz = data.deep_zoom(info)
            except Exception as exc:
                raise NotFound(str(exc)) from None
            return self._send(200, dz.dzi_xml().encode("utf-8"), "application/xml")
        m = re.match(r"^([^/]+)_files/(.*)$", rest)
        if not m:
            raise NotFound("")
        info = self._slide(m.group(1))
        t = TILE_RE.match(m.group(2))
        if not t:
            raise BadRequest("malformed tile request; expected /dzi/<slide>_files/<level>/<col>_<row>.jpeg")
        level, col, row, fmt = int(t.group(1)), int(t.group(2)), int(t.group(3)), t.group(4)
        if fmt not in FORMATS:
            raise BadRequest(f"unknown tile format {fmt!r}; expected jpeg or png")
        try:
            dz = data.deep_zoom(info)
        except Exception as exc:
            raise NotFound(str(exc)) from None
        try:
            box = dz.tile_box(level, col, row)
        except TileRequestError as exc:
            raise BadRequest(str(exc)) from None
        try:
            body = dz.tile(level, col, row, fmt)
            extra = None
        except TileRequestError as exc:
            raise BadRequest(str(exc)) from None
        except Exception as exc:  # an unreadable tile of the file: a marked placeholder, and the reason
            reason = f"{type(exc).__name__}: {exc}".replace("\n", " ")[:200]
            log.warning("slide %s tile %d/%d_%d unreadable: %s", info.slide_id, level, col, row, reason)
            body, fmt = unreadable_tile(box[2] - box[0], box[3] - box[1]), "jpeg"
            extra = {"X-Tmln-Unreadable": reason.encode("ascii", "replace").decode("ascii")}
        self._send(200, body, FORMATS[fmt], cache="private, max-age=300", extra=extra)

    def _run_file(self, rel: str) -> None:
        root = self.server.data.root
        if root is None:
            raise NotFound("")
        segs = rel.split("/")
        if any(s.startswith(".") for s in segs):
            raise NotFound("")
        p = root.joinpath(*segs)
        try:
            real = p.resolve(strict=True)
        except (OSError, RuntimeError):
            raise NotFound("") from None
        if not real.is_relative_to(root) or not real.is_file():
            raise NotFound("")
        self._send(200, real.read_bytes(), CONTENT_TYPES.get(real.suffix.lower(), "application/octet-stream"))


# ---------------------------------------------------------------------------- JSON bodies
def _num(v):
    try:
        f = float(v)
    except (TypeError, ValueError):
        return v if v not in ("",) else None
    return f if f == f and abs(f) != float("inf") else None


def run_json(data: RunData) -> dict:
    s = data.summary or {}
    slides = []
    for info in data.slides:
        r = info.row
        slides.append({
            "slide_id": info.slide_id, "patient_id": info.patient_id, "status": info.status, "error": info.error,
            "problem": info.problem, "warning": info.warning, "slide_path": r.get("slide_path"),
            "n_nodes": _num(r.get("n_nodes")), "n_metastatic_nodes": _num(r.get("n_metastatic_nodes")),
            "nodes_source": r.get("nodes_source") or None, "tumour_source": r.get("tumour_source") or None,
            "notes": r.get("notes") or None, "heat": info.heat_available,
        })
    return {
        "mode": data.mode,
        "run": None if data.root is None else data.root.name,
        "run_dir": None if data.root is None else str(data.root),
        "summary": {k: s.get(k) for k in ("tmln_version", "parameters", "counts", "n_stage_counts", "failures")},
        "patients": data.patients,
        "slides": slides,
        "node_columns": data.node_columns,
        "nodes": data.nodes,
    }


def slide_json(data: RunData, info) -> dict:
    out = {"slide_id": info.slide_id, "patient_id": info.patient_id, "status": info.status, "error": info.error,
           "problem": info.problem, "warning": info.warning, "mpp": list(info.mpp) if info.mpp else None,
           "dzi": None, "width": None, "height": None, "heat": None,
           "nodes_geojson": data.geojson(info, "nodes") is not None,
           "tumour_geojson": data.geojson(info, "tumour") is not None}
    try:
        dz = data.deep_zoom(info)
        from urllib.parse import quote

        out.update(dzi=f"/dzi/{quote(info.slide_id, safe='')}.dzi", width=dz.width, height=dz.height)
        if out["mpp"] is None and dz.slide.has_mpp:
            out["mpp"] = [dz.slide.mpp_x, dz.slide.mpp_y]
    except Exception as exc:
        out["problem"] = info.problem or str(exc)
    try:
        heat = data.heat(info)
        if heat is not None:
            out["heat"] = heat[0]
    except Exception as exc:
        out["warning"] = ((out["warning"] + "; ") if out["warning"] else "") + \
            f"tumour map not shown ({type(exc).__name__}: {exc})"
    out["problem"] = out["problem"] or info.problem
    return out


# ---------------------------------------------------------------------------- entry points
def make_app(run_dir=None, host: str = "127.0.0.1", port: int = 0, *, data: RunData | None = None,
             quiet: bool = True) -> ViewerServer:
    """A viewer server over a run directory (or ``data``), bound but not yet serving.

    ``port=0`` picks a free port (``server.url`` says which). Call ``serve_forever()`` (e.g. in a
    thread) and ``shutdown()`` + ``server_close()`` when done. Warns (``UserWarning``) when ``host``
    is not a loopback address.
    """
    if data is None:
        if run_dir is None:
            raise ValueError("give run_dir or data")
        data = RunData.from_run(run_dir)
    w = host_warning(host)
    if w:
        warnings.warn(w, UserWarning, stacklevel=2)
    return ViewerServer((host, int(port)), data, quiet=quiet)


def serve(run_dir=None, host: str = "127.0.0.1", port: int = 8000, *, data: RunData | None = None,
          quiet: bool = True, open_browser: bool = False, ready=None) -> None:
    """Serve the viewer until interrupted (Ctrl-C). ``ready(server)`` is called once it listens."""
    srv = make_app(run_dir, host, port, data=data, quiet=quiet)
    if ready is not None:
        ready(srv)
    if open_browser:
        import webbrowser

        threading.Timer(0.5, webbrowser.open, args=(srv.url,)).start()
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        srv.server_close()
