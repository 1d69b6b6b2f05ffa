"""The viewer's server over a small run: API, DZI tiles, heat layer, safety (traversal, malformed tiles,
host binding), a missing slide, the single-slide mode and the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tmln.view import RunData, make_app

from .helpers import get_json, request, running


@pytest.fixture(scope="module")
def server(small_run):
    with running(make_app(small_run)) as srv:
        yield srv


# ------------------------------------------------------------------ API
def test_run_json_lists_patients_slides_and_nodes(server, small_run):
    run = get_json(server, "/api/run")
    assert run["mode"] == "run" and run["run"] == small_run.name
    assert [s["slide_id"] for s in run["slides"]] == ["S1", "S2", "S3"]
    assert all(s["status"] == "done" and s["problem"] is None for s in run["slides"])
    p = {r["patient_id"]: r for r in run["patients"]}
    assert p["P2"]["n_stage"] == "N1" and p["P1"]["n_stage"] == "N0"
    assert "t_mln" in p["P2"] and "t_mln_mean_nodes" in p["P2"]
    header = (small_run / "nodes.csv").read_text().splitlines()[0].split(",")
    assert run["node_columns"] == header
    assert len(run["nodes"]) == 4
    assert run["summary"]["parameters"]["mln_rule"] == "ajcc"


def test_slide_json_and_geojson(server):
    s = get_json(server, "/api/slide/S1")
    assert (s["width"], s["height"]) == (1200, 900)
    assert s["mpp"] == [0.5, 0.5] and s["dzi"] == "/dzi/S1.dzi" and s["problem"] is None
    assert s["heat"] is None
    nodes = get_json(server, "/api/slide/S1/nodes.geojson")
    assert len(nodes["features"]) == 2
    cats = sorted(f["properties"]["classification"]["name"] for f in nodes["features"])
    assert cats == ["Lymph node: itc", "Lymph node: negative"]
    tum = get_json(server, "/api/slide/S1/tumour.geojson")
    assert len(tum["features"]) == 2  # one deposit, one extranodal
    status, _, _ = request(server, "/api/slide/S2/tumour.geojson")
    assert status in (200, 404)


def test_review_json(server):
    rev = get_json(server, "/api/review")["review"]
    # S1 node 1 is ITC in an N0 patient: calling it metastatic would make P1 N1; S3's single micro node
    # is P2's only MLN
    keys = {(r["slide_id"], r["node_id"]) for r in rev}
    assert ("S1", 1) in keys and ("S3", 1) in keys
    for r in rev:
        assert r["reasons"] and all(x["rule"] in ("cutoff", "probability", "n_stage") and x["text"] for x in r["reasons"])


def test_page_and_static_files(server):
    status, h, body = request(server, "/")
    assert status == 200 and h["content-type"].startswith("text/html")
    assert b"/static/openseadragon/openseadragon.min.js" in body
    assert b"http://" not in body and b"https://" not in body  # nothing from elsewhere
    for path in ("/static/app.js", "/static/app.css", "/static/openseadragon/openseadragon.min.js",
                 "/static/openseadragon/LICENSE.txt", "/static/openseadragon/images/home_rest.png"):
        status, _, body = request(server, path)
        assert status == 200 and body, path


# ------------------------------------------------------------------ tiles
def test_dzi_descriptor_and_tiles(server):
    status, h, body = request(server, "/dzi/S1.dzi")
    assert status == 200 and b'<Size Width="1200" Height="900"/>' in body and b'TileSize="254"' in body
    import cv2

    status, h, body = request(server, "/dzi/S1_files/11/0_0.jpeg")  # level 11 = level 0 of the slide
    assert status == 200 and h["content-type"] == "image/jpeg"
    img = cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR)
    assert img.shape == (255, 255, 3)  # 254 + 1 overlap on the right and bottom
    status, h, body = request(server, "/dzi/S1_files/0/0_0.jpeg")
    assert status == 200
    assert cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR).shape == (1, 1, 3)
    status, h, body = request(server, "/dzi/S1_files/11/4_3.png")
    assert status == 200 and h["content-type"] == "image/png"


@pytest.mark.parametrize("path", [
    "/dzi/S1_files/12/0_0.jpeg",  # level beyond the slide
    "/dzi/S1_files/11/5_0.jpeg",  # column beyond
    "/dzi/S1_files/11/0_4.jpeg",  # row beyond
    "/dzi/S1_files/x/0_0.jpeg",
    "/dzi/S1_files/11/0-0.jpeg",
    "/dzi/S1_files/11/-1_0.jpeg",
    "/dzi/S1_files/11/0_0.gif",
    "/dzi/S1_files/11/0_0",
    "/dzi/S1_files/11/0_0.jpeg/extra",
    "/dzi/S1_files/11/99999999999999999999_0.jpeg",
])
def test_malformed_tile_requests_get_400_text(server, path):
    status, h, body = request(server, path)
    assert status == 400, (path, status, body)
    assert h["content-type"].startswith("text/plain")
    assert body.startswith(b"400 Bad Request") and len(body) < 300
    assert b"Traceback" not in body and b"<html" not in body.lower()


def test_unknown_slide_is_404(server):
    for path in ("/dzi/nope.dzi", "/dzi/nope_files/11/0_0.jpeg", "/api/slide/nope", "/api/slide/S1/heat.png"):
        status, h, body = request(server, path)
        assert status == 404 and h["content-type"].startswith("text/plain"), path


# ------------------------------------------------------------------ safety
def test_run_files_are_served(server, small_run):
    status, _, body = request(server, "/run/nodes.csv")
    assert status == 200 and body == (small_run / "nodes.csv").read_bytes()
    status, _, body = request(server, "/run/slides/S1/overlay.png")
    assert status == 200 and body[:4] == b"\x89PNG"


@pytest.mark.parametrize("path", [
    "/run/../slides.csv",
    "/run/slides/../../cohort/S1.tiff",
    "/run/%2e%2e/cohort/S1.tiff",
    "/run/%2E%2E/%2E%2E/etc/passwd",
    "/run/slides%2fS1%2fstate.json",
    "/run/slides%2FS1%2Fstate.json",
    "/run/..%2f..%2fetc%2fpasswd",
    "/run/..%5c..%5cetc%5cpasswd",
    "/run/slides\\S1\\state.json",
    "/run//etc/passwd",
    "//etc/passwd",
    "/etc/passwd",
    "/run/%00",
    "/run/.tmln.lock",
    "/static/../server.py",
    "/static/%2e%2e/server.py",
    "/static/../../view/server.py",
    "/api/slide/..%2f..%2fetc",
    "/dzi/..%2fS1.dzi",
    "/run/%252e%252e/slides.csv",
    "/run/%ff%fe",
    "http://127.0.0.1/etc/passwd",
    "/run/slides/S1/",
    "/run/slides",
])
def test_traversal_and_odd_paths_are_404(server, path):
    status, h, body = request(server, path)
    assert status == 404, (path, status, body[:200])
    assert h["content-type"].startswith("text/plain") and b"Traceback" not in body
    assert b"root:" not in body


def test_symlinks_out_of_the_run_are_404(run_copy, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("do not serve")
    (run_copy / "link.txt").symlink_to(secret)
    (run_copy / "slides" / "S1" / "outdir").symlink_to(tmp_path, target_is_directory=True)
    (run_copy / "inside.csv").symlink_to(run_copy / "nodes.csv")  # a link within the run is fine
    with running(make_app(run_copy)) as srv:
        for path in ("/run/link.txt", "/run/slides/S1/outdir/secret.txt"):
            status, _, body = request(srv, path)
            assert status == 404 and b"do not serve" not in body, path
        assert request(srv, "/run/inside.csv")[0] == 200


def test_read_only_methods(server):
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        status, h, body = request(server, "/api/run", method=method)
        assert status in (405, 501), method
        assert h["content-type"].startswith("text/plain") and b"<html" not in body.lower()
    status, h, body = request(server, "/api/run", method="HEAD")
    assert status == 200 and body == b""


def test_foreign_host_header_is_refused(server):
    status, _, body = request(server, "/api/run", headers={"Host": "evil.example:80"})
    assert status == 403
    assert request(server, "/api/run", headers={"Host": "localhost:8000"})[0] == 200


def test_binds_loopback_by_default_and_warns_otherwise(small_run):
    srv = make_app(small_run)
    try:
        assert srv.server_address[0] == "127.0.0.1" and srv.url.startswith("http://127.0.0.1:")
    finally:
        srv.server_close()
    with pytest.warns(UserWarning, match="not only on this computer"):
        srv = make_app(small_run, host="0.0.0.0")
    srv.server_close()


def test_internal_errors_are_500_without_traceback(run_copy, monkeypatch):
    data = RunData.from_run(run_copy)

    def boom():
        raise RuntimeError("secret internals")

    monkeypatch.setattr(data, "review", boom)
    with running(make_app(data=data)) as srv:
        status, h, body = request(srv, "/api/review")
    assert status == 500 and b"secret internals" not in body and b"Traceback" not in body


# ------------------------------------------------------------------ heat layer
def write_map(slide_dir: Path, shape=(45, 60), mpp=10.0, slide_mpp=0.5, threshold=0.5, fill=None):
    prob = np.full(shape, 0.2, np.float32) if fill is None else fill
    prob[:, :5] = np.nan
    np.save(slide_dir / "tumour_map.npy", prob)
    (slide_dir / "tumour_map.json").write_text(json.dumps({
        "format": 1, "array": "tumour_map.npy", "mpp": mpp, "origin_px": [0.0, 0.0],
        "slide_mpp": [slide_mpp, slide_mpp], "shape": list(shape), "model": "fake", "threshold": threshold}))
    return prob


def test_heat_layer_png_and_placement(run_copy):
    import cv2

    write_map(run_copy / "slides" / "S3")
    with running(make_app(run_copy)) as srv:
        s = get_json(srv, "/api/slide/S3")
        assert s["heat"]["width"] == pytest.approx(60 * 10 / 0.5) and s["heat"]["threshold"] == 0.5
        assert get_json(srv, "/api/run")["slides"][2]["heat"] is True
        status, h, body = request(srv, "/api/slide/S3/heat.png")
        assert status == 200 and h["content-type"] == "image/png"
        img = cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_UNCHANGED)
        assert img.shape == (45, 60, 4)
        assert (img[:, :5, 3] == 0).all() and (img[:, 5:, 3] == 255).all()  # NaN transparent


def test_probability_rule_from_the_run_map(run_copy):
    # S3's deposit is level-0 px (110..610)^2; a map at 5 µm/px (10 px cells) near the threshold there
    prob = np.full((90, 120), 0.05, np.float32)
    prob[11:61, 11:61] = 0.55
    write_map(run_copy / "slides" / "S3", shape=prob.shape, mpp=5.0, fill=prob)
    rev = {(r["slide_id"], r["node_id"]): r for r in RunData.from_run(run_copy).review()}
    rules = [x["rule"] for x in rev[("S3", 1)]["reasons"]]
    assert "probability" in rules
    text = next(x["text"] for x in rev[("S3", 1)]["reasons"] if x["rule"] == "probability")
    assert "threshold 0.5" in text and "deposit 1" in text


# ------------------------------------------------------------------ a slide that moved
def test_missing_slide_is_said_and_the_rest_works(tmp_path):
    import sys as _s

    _s.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from cohort.helpers import write_small_cohort

    from tmln.cohort.run import run_cohort

    csv, ann = write_small_cohort(tmp_path)
    run_cohort(csv, tmp_path / "run", node_annotations=ann, tumour_annotations=ann, quiet=True)
    (csv.parent / "S2.tiff").rename(tmp_path / "elsewhere.tiff")
    with running(make_app(tmp_path / "run")) as srv:
        run = get_json(srv, "/api/run")
        s2 = next(s for s in run["slides"] if s["slide_id"] == "S2")
        assert "S2.tiff" in s2["problem"] and "not found" in s2["problem"]
        info = get_json(srv, "/api/slide/S2")
        assert info["dzi"] is None and "S2.tiff" in info["problem"]
        status, h, body = request(srv, "/dzi/S2_files/11/0_0.jpeg")
        assert status == 404 and b"S2.tiff" in body
        assert get_json(srv, "/api/slide/S2/nodes.geojson")["features"]  # outlines still there
        assert get_json(srv, "/api/slide/S1")["dzi"]  # the other slides still work
        assert request(srv, "/dzi/S1_files/11/0_0.jpeg")[0] == 200
        get_json(srv, "/api/review")


def test_replaced_slide_gets_a_warning(run_copy, small_run):
    table_dir = Path(json.loads((small_run / "summary.json").read_text())["parameters"]["slides_csv"]).parent
    state = json.loads((run_copy / "slides" / "S1" / "state.json").read_text())
    state["params"]["slide"]["size"] += 1
    (run_copy / "slides" / "S1" / "state.json").write_text(json.dumps(state))
    info = RunData.from_run(run_copy).slide("S1")
    assert info.path == (table_dir / "S1.tiff").resolve()
    assert "replaced since the run" in info.warning


def test_slide_unlike_the_training_data_gets_a_warning(run_copy):
    import pandas as pd

    df = pd.read_csv(run_copy / "slides.csv")
    df["node_model_appearance_distance"] = [2.75] + [0.9] * (len(df) - 1)
    df.to_csv(run_copy / "slides.csv", index=False)
    data = RunData.from_run(run_copy)
    first, *rest = data.slides
    assert "unlike the node model's training data (appearance distance 2.75 > 2)" in first.warning
    assert all(s.warning is None or "appearance" not in s.warning for s in rest)


def test_not_a_run_directory(tmp_path):
    from tmln.errors import TmlnError

    with pytest.raises(TmlnError, match="no slides.csv"):
        RunData.from_run(tmp_path)


# ------------------------------------------------------------------ one slide
def test_single_slide_mode_measures_the_annotations(small_run, tmp_path):
    table_dir = Path(json.loads((small_run / "summary.json").read_text())["parameters"]["slides_csv"]).parent
    ann = table_dir.parent / "ann"
    write_map(tmp_path, shape=(45, 60))
    data = RunData.for_slide(table_dir / "S3.tiff", annotations=[ann / "S3.nodes.geojson", ann / "S3.tumour.geojson"],
                             tumour_map=tmp_path)
    with running(make_app(data=data)) as srv:
        run = get_json(srv, "/api/run")
        assert run["mode"] == "slide" and [s["slide_id"] for s in run["slides"]] == ["S3"]
        assert len(run["nodes"]) == 1 and run["nodes"][0]["category"] == "micro"
        assert float(run["nodes"][0]["area_mm2"]) == pytest.approx(0.09)
        s = get_json(srv, "/api/slide/S3")
        assert s["dzi"] and s["heat"] is not None
        assert get_json(srv, "/api/slide/S3/nodes.geojson")["features"][0]["properties"]["classification"]["name"] \
            == "Lymph node: micro"
        assert request(srv, "/dzi/S3_files/11/1_1.jpeg")[0] == 200
        assert request(srv, "/run/nodes.csv")[0] == 404  # no run: no run files


def test_single_slide_without_annotations(small_run):
    table_dir = Path(json.loads((small_run / "summary.json").read_text())["parameters"]["slides_csv"]).parent
    data = RunData.for_slide(table_dir / "S1.tiff")
    assert data.nodes == [] and data.geojson(data.slides[0], "nodes") is None


# ------------------------------------------------------------------ CLI
def test_cli_serves_and_says_where(small_run):
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")}
    p = subprocess.Popen([sys.executable, "-m", "tmln", "view", str(small_run), "--port", "0"], env=env,
                         stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        line = ""
        t0 = time.time()
        while "http://" not in line and time.time() - t0 < 60:
            line = p.stderr.readline()
            if not line and p.poll() is not None:
                break
        assert "http://127.0.0.1:" in line, line
        url = line.split(" at ")[1].split()[0]
        import urllib.request

        with urllib.request.urlopen(url + "api/run", timeout=30) as r:
            assert json.loads(r.read())["run"] == small_run.name
    finally:
        p.terminate()
        p.wait(10)


def test_cli_rejects_what_is_not_a_run(tmp_path, small_run):
    from click.testing import CliRunner

    from tmln.cli import main

    r = CliRunner().invoke(main, ["view", str(tmp_path)])
    assert r.exit_code == 2 and "no slides.csv" in r.output
    r = CliRunner().invoke(main, ["view", str(small_run / "slides.csv")])
    assert r.exit_code == 2 and "run directory" in r.output
    r = CliRunner().invoke(main, ["view", str(small_run), "--tumour-map", str(tmp_path)])
    assert r.exit_code == 2


def test_report_says_how_to_open_the_viewer(small_run):
    html = (small_run / "report.html").read_text()
    assert "<code>tmln view .</code>" in html and "127.0.0.1" in html


def test_unreadable_tile_is_a_marked_placeholder_not_an_error(tmp_path):
    import cv2
    import tifffile

    img = np.full((900, 1200, 3), 235, np.uint8)
    img[100:800, 100:1100] = (200, 120, 170)
    p = tmp_path / "bad.tiff"
    tifffile.imwrite(p, img, tile=(256, 256), compression="jpeg", photometric="rgb",
                     resolution=(2e4, 2e4), resolutionunit="CENTIMETER")
    with tifffile.TiffFile(p) as tf:
        page = tf.pages[0]
        across = -(-page.imagewidth // page.tilewidth)
        off, cnt = int(page.dataoffsets[1 * across + 2]), int(page.databytecounts[1 * across + 2])
    with open(p, "r+b") as fh:
        fh.seek(off)
        fh.write((b"\x00garbage" * cnt)[:cnt])
    with running(make_app(data=RunData.for_slide(p))) as srv:
        status, h, body = request(srv, "/dzi/bad_files/11/2_1.jpeg")  # level-0 px 508..763, 254..509: the bad tile
        assert status == 200 and "x-tmln-unreadable" in h
        tile = cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR)
        assert tile is not None and tile.shape[0] > 100
        status, h, _ = request(srv, "/dzi/bad_files/11/0_0.jpeg")  # a good one still is
        assert status == 200 and "x-tmln-unreadable" not in h
