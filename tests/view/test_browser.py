"""The viewer in a real browser: headless Chromium (Debian's chromium + chromium-driver) driven by Selenium.

A phantom slide (known node outlines) is measured from its truth GeoJSON and given a tumour map; the
page must load without console errors, draw tiles, draw each node's outline where the truth says the
node is, move to a node when its table row is clicked, select the row when the node is clicked, and
change pixels when the heat layer's opacity changes.

Set ``TMLN_VIEWER_SCREENSHOT=docs/img/viewer.png`` to save the README's screenshot from this run.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from .helpers import running

pytestmark = pytest.mark.browser


def _browser_paths():
    browser = next((shutil.which(n) for n in ("chromium", "chromium-browser") if shutil.which(n)), None)
    driver = shutil.which("chromedriver") or next(
        (p for p in ("/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver") if Path(p).is_file()), None)
    return browser, driver


@pytest.fixture(scope="module")
def driver(tmp_path_factory):
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.skip("selenium is not installed (it is in tmln's [test] extra: pip install -e '.[test]')")
    browser, drv = _browser_paths()
    if not browser or not drv:
        pytest.skip("no Chromium and chromedriver on this machine: install Debian's 'chromium' and "
                    "'chromium-driver' packages (.ci/run does so where it runs as root)")
    opts = webdriver.ChromeOptions()
    opts.binary_location = browser
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1600,1000",
              "--force-device-scale-factor=1", "--hide-scrollbars", "--no-first-run", "--disable-extensions",
              f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        opts.add_argument(a)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    d = webdriver.Chrome(options=opts, service=Service(executable_path=drv))
    d.set_page_load_timeout(60)
    yield d
    d.quit()


@pytest.fixture(scope="module")
def phantom_run(tmp_path_factory):
    """One phantom slide (4 x 3 mm at 0.5 µm/px) measured from its truth outlines, plus a tumour map
    (0.85 in the truth tumour but 0.55 in the largest deposit, 0.15 elsewhere in the nodes, NaN outside
    them) in the run."""
    import cv2
    from shapely.geometry import shape

    from tmln.cohort.run import run_cohort
    from tmln.phantom import make_cohort

    d = tmp_path_factory.mktemp("vphantom")
    csv = make_cohort(d / "slides", patients=1, slides_per_patient=1, seed=5, size_mm=(4.0, 3.0),
                      negative_fraction=0.0)
    run = d / "run"
    s = run_cohort(csv, run, node_annotations=d / "slides", tumour_annotations=d / "slides", quiet=True)
    assert s.exit_code == 0
    sid = "P001_S01"
    truth_nodes = [shape(f["geometry"]) for f in
                   json.loads((d / "slides" / f"{sid}.nodes.geojson").read_text())["features"]]
    truth_tum = [shape(f["geometry"]) for f in
                 json.loads((d / "slides" / f"{sid}.tumour.geojson").read_text())["features"]]
    cell, W, H = 32, 8000, 6000  # 16 µm/px map cells
    prob = np.full((H // cell, W // cell), np.nan, np.float32)

    def fill(geoms, value):
        m = np.zeros(prob.shape, np.uint8)
        for g in geoms:
            for p in getattr(g, "geoms", [g]):
                pts = (np.asarray(p.exterior.coords) / cell - 0.5) * 16
                cv2.fillPoly(m, [np.round(pts).astype(np.int32)], 1, shift=4)
        prob[m.astype(bool)] = value

    fill(truth_nodes, 0.15)
    fill(truth_tum, 0.85)
    fill([max(truth_tum, key=lambda g: g.area)], 0.55)  # the model unsure over the largest deposit: review it
    np.save(run / "slides" / sid / "tumour_map.npy", prob)
    (run / "slides" / sid / "tumour_map.json").write_text(json.dumps({
        "format": 1, "array": "tumour_map.npy", "mpp": cell * 0.5, "origin_px": [0, 0], "slide_mpp": [0.5, 0.5],
        "shape": list(prob.shape), "model": "truth-painted", "threshold": 0.5}))
    return run, sid, truth_nodes


@pytest.fixture(scope="module")
def page(driver, phantom_run):
    from tmln.view import make_app

    run, sid, truth = phantom_run
    with running(make_app(run)) as srv:
        driver.get(srv.url)
        wait_for(driver, "return !!(window.tmlnView && tmlnView.ready && tmlnView.fullyLoaded())", 90)
        yield driver, run, sid, truth


def wait_for(driver, script, timeout=30.0):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if driver.execute_script(script):
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for: {script}")


SETTLED = """
const v = tmlnView.viewer, vp = v.viewport;
const a = vp.getCenter(true), b = vp.getCenter(false);
return tmlnView.fullyLoaded() && Math.abs(vp.getZoom(true) - vp.getZoom(false)) < 1e-6 * vp.getZoom(false)
  && Math.abs(a.x - b.x) < 1e-7 && Math.abs(a.y - b.y) < 1e-7;
"""


def settle(driver):
    wait_for(driver, SETTLED, 60)
    time.sleep(0.2)  # the overlay redraw on the last frame
    wait_for(driver, SETTLED, 60)


def screenshot(driver) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(driver.get_screenshot_as_png())).convert("RGB")).astype(int)


def osd_rect(driver):
    r = driver.execute_script("const r = document.getElementById('osd').getBoundingClientRect();"
                              "return [r.left, r.top, r.width, r.height];")
    return [int(round(v)) for v in r]


def to_page(driver, pts):
    """Level-0 px -> page px (through the viewer's own transform)."""
    left, top, _, _ = osd_rect(driver)
    el = driver.execute_script("return arguments[0].map(p => tmlnView.imageToElement(p[0], p[1]));",
                               [list(map(float, p)) for p in pts])
    return [(left + x, top + y) for x, y in el]


def fit(driver, bounds, margin=0.15):
    x0, y0, x1, y1 = bounds
    mx, my = (x1 - x0) * margin, (y1 - y0) * margin
    driver.execute_script(
        "const it = tmlnView.viewer.world.getItemAt(0);"
        "tmlnView.viewer.viewport.fitBounds(it.imageToViewportRectangle(arguments[0], arguments[1], arguments[2], "
        "arguments[3]), true);", x0 - mx, y0 - my, x1 - x0 + 2 * mx, y1 - y0 + 2 * my)
    settle(driver)


def colour_hits(img, pts, rgb, tol=60, r=2):
    hits = 0
    h, w = img.shape[:2]
    for x, y in pts:
        x, y = int(round(x)), int(round(y))
        win = img[max(0, y - r):min(h, y + r + 1), max(0, x - r):min(w, x + r + 1)]
        if win.size and (np.abs(win - np.array(rgb)).sum(-1) <= tol).any():
            hits += 1
    return hits / max(1, len(pts))


CATEGORY_RGB = {"negative": (0, 160, 0), "itc": (255, 200, 0), "micro": (255, 120, 0), "macro": (200, 0, 0)}


def test_page_loads_without_console_errors_and_draws_tiles(page):
    driver, run, sid, _ = page
    severe = [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"]
    assert not severe, severe
    left, top, w, h = osd_rect(driver)
    assert w > 300 and h > 300
    img = screenshot(driver)[top:top + h, left:left + w]
    assert img.std() > 10  # not a blank canvas
    # the slide's tiles (tissue: pink/purple, glass: near white) fill much of the view, not the black background
    assert (img.sum(-1) > 300).mean() > 0.3
    # the drawer canvas itself holds tile pixels
    n = driver.execute_script("""
        const c = tmlnView.viewer.drawer.canvas, ctx = c.getContext('2d');
        const d = ctx.getImageData(0, 0, c.width, c.height).data; let k = 0;
        for (let i = 0; i < d.length; i += 4 * 97) if (d[i + 3] > 0 && d[i] + d[i + 1] + d[i + 2] > 60) k++;
        return k;""")
    assert n > 100
    assert driver.find_elements("css selector", "#nodes tbody tr")
    assert sid in driver.find_element("id", "patients").text
    assert "N" in driver.find_element("id", "patients").text  # N stage shown


def _lone(truth):
    """The largest truth node that keeps clear of every other node (no shared capsule)."""
    lone = [g for g in truth if all(g is o or g.distance(o) > 50 for o in truth)]
    return max(lone or truth, key=lambda g: g.area)


def test_node_outline_is_drawn_where_the_truth_node_is(page):
    driver, run, sid, truth = page
    node = _lone(truth)
    fit(driver, node.bounds)
    c = node.representative_point()
    cat = driver.execute_script("const n = tmlnView.nodeAt(arguments[0], arguments[1]); return n && n.category;",
                                c.x, c.y)
    assert cat in CATEGORY_RGB
    ring = node.exterior
    pts = [ring.interpolate(t, normalized=True).coords[0] for t in np.linspace(0, 1, 60, endpoint=False)]
    page_pts = to_page(driver, pts)
    img = screenshot(driver)
    on = colour_hits(img, page_pts, CATEGORY_RGB[cat])
    assert on >= 0.8, f"only {on:.0%} of the truth outline shows the {cat} colour"
    # the colour is the overlay's: with node outlines switched off it is (mostly) gone
    driver.find_element("id", "show-nodes").click()
    settle(driver)
    off = colour_hits(screenshot(driver), page_pts, CATEGORY_RGB[cat])
    driver.find_element("id", "show-nodes").click()
    settle(driver)
    assert off < 0.3, f"{off:.0%} of the outline points have the colour without the overlay"


def _run_nodes(run, sid):
    from shapely.geometry import shape

    feats = json.loads((run / "slides" / sid / "nodes.geojson").read_text())["features"]
    return {int(f["properties"]["measurements"]["node_id"]): shape(f["geometry"]) for f in feats}


def _centre(driver):
    return driver.execute_script(
        "const v = tmlnView.viewer, p = v.world.getItemAt(0).viewportToImageCoordinates(v.viewport.getCenter(true));"
        "return [p.x, p.y];")


def test_clicking_a_table_row_moves_the_view_to_the_node(page):
    driver, run, sid, _ = page
    nodes = _run_nodes(run, sid)
    assert len(nodes) >= 2
    for nid in (max(nodes), min(nodes)):
        driver.execute_script("tmlnView.viewer.viewport.goHome(true);")
        settle(driver)
        row = driver.find_element("css selector", f'#nodes tbody tr[data-node="{nid}"]')
        row.click()
        settle(driver)
        x, y = _centre(driver)
        x0, y0, x1, y1 = nodes[nid].bounds
        assert x0 <= x <= x1 and y0 <= y <= y1, (nid, (x, y), nodes[nid].bounds)
        zoom_w = driver.execute_script("return tmlnView.viewer.viewport.getBounds(true).width;")
        assert zoom_w < 1.0  # zoomed in from the whole slide
        assert "selected" in row.get_attribute("class")


def test_clicking_a_node_on_the_slide_selects_its_row(page):
    from selenium.webdriver.common.action_chains import ActionChains

    driver, run, sid, _ = page
    nodes = _run_nodes(run, sid)
    driver.execute_script("tmlnView.viewer.viewport.goHome(true);")
    settle(driver)
    driver.execute_script("tmlnView.selectNode(-1, false);")
    nav = driver.execute_script("const r = tmlnView.viewer.navigator.element.getBoundingClientRect();"
                                "return [r.left - 10, r.top - 10, r.right + 10, r.bottom + 10];")
    left, top, w, h = osd_rect(driver)
    for nid in sorted(nodes, key=lambda k: -nodes[k].area):
        p = nodes[nid].representative_point()
        (px, py), = to_page(driver, [(p.x, p.y)])
        if not (nav[0] <= px <= nav[2] and nav[1] <= py <= nav[3]) and left < px < left + w and top < py < top + h:
            break
    osd = driver.find_element("id", "osd")
    ActionChains(driver).move_to_element_with_offset(osd, int(px - (left + w / 2)), int(py - (top + h / 2))).click().perform()
    wait_for(driver, f"return tmlnView.selected === {nid};", 10)
    row = driver.find_element("css selector", f'#nodes tbody tr[data-node="{nid}"]')
    assert "selected" in row.get_attribute("class")
    assert len(driver.find_elements("css selector", "#nodes tbody tr.selected")) == 1


def test_heat_layer_opacity_control_changes_pixels(page):
    driver, run, sid, truth = page
    assert driver.find_element("id", "heat-controls").is_displayed()
    fit(driver, _lone(truth).bounds)
    left, top, w, h = osd_rect(driver)

    def at(value):
        driver.execute_script("const s = document.getElementById('heat-opacity'); s.value = arguments[0];"
                              "s.dispatchEvent(new Event('input'));", value)
        settle(driver)
        return screenshot(driver)[top:top + h, left:left + w]

    a, b, c = at(0), at(100), at(0)
    assert np.abs(a - c).mean() < 1.0  # the same view again
    diff = np.abs(a - b).sum(-1)
    assert (diff > 30).mean() > 0.2, "the heat layer at full opacity changes too few pixels"
    assert driver.execute_script("return tmlnView.heatItem.getOpacity();") == 0


def test_review_list_entry_opens_the_node(page):
    driver, run, sid, _ = page
    items = driver.find_elements("css selector", "#review > li")
    assert items, "the deposit painted near the threshold should be listed"
    reasons = [li.get_attribute("data-rule") for li in driver.find_elements("css selector", "#review li li")]
    assert "probability" in reasons
    item = next(li for li in items if "P(tumour) within" in li.text)
    nid = int(item.get_attribute("data-node"))
    driver.execute_script("tmlnView.viewer.viewport.goHome(true); tmlnView.selectNode(-1, false);")
    settle(driver)
    item.click()
    wait_for(driver, f"return tmlnView.selected === {nid};", 10)
    settle(driver)
    x, y = _centre(driver)
    x0, y0, x1, y1 = _run_nodes(run, sid)[nid].bounds
    assert x0 <= x <= x1 and y0 <= y <= y1


def test_screenshot_for_the_docs(page):
    """Saves the README's screenshot where TMLN_VIEWER_SCREENSHOT says (skipped otherwise)."""
    out = os.environ.get("TMLN_VIEWER_SCREENSHOT")
    if not out:
        pytest.skip("set TMLN_VIEWER_SCREENSHOT=docs/img/viewer.png to save the screenshot")
    driver, run, sid, truth = page
    driver.execute_script("const s = document.getElementById('heat-opacity'); s.value = 35;"
                          "s.dispatchEvent(new Event('input'));")
    nodes = _run_nodes(run, sid)
    nid = max(nodes, key=lambda k: nodes[k].area)
    driver.find_element("css selector", f'#nodes tbody tr[data-node="{nid}"]').click()
    settle(driver)
    from PIL import Image

    Path(out).parent.mkdir(parents=True, exist_ok=True)
    img = Image.open(io.BytesIO(driver.get_screenshot_as_png())).convert("RGB")
    img.quantize(colors=256, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE).save(out, optimize=True)  # small
