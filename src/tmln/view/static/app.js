/* tmln view: the slide list, a deep-zoom slide with node/tumour overlays and a heat layer, the node
   table and the review list. Talks only to the tmln view server it was loaded from. */
(function () {
  'use strict';

  const COLOURS = {negative: 'rgb(0,160,0)', itc: 'rgb(255,200,0)', micro: 'rgb(255,120,0)', macro: 'rgb(200,0,0)'};
  const TUMOUR_FILL = 'rgba(230,0,0,0.35)', TUMOUR_LINE = 'rgb(230,0,0)', SELECTED = 'rgb(0,229,255)';
  const TEXT_COLUMNS = new Set(['patient_id', 'slide_id', 'category', 'metastatic']);

  const state = {
    run: null, review: [], slideId: null, slide: null, nodes: [], tumour: [], rows: [],
    selected: null, sort: {col: 'node_id', dir: 1}, heatItem: null, errors: [],
  };
  window.tmlnView = state; // for tests and the curious

  const $ = (id) => document.getElementById(id);
  const el = (tag, attrs, ...kids) => {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === 'class') e.className = v; else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
      else if (v !== undefined && v !== null) e.setAttribute(k, v);
    }
    for (const k of kids) if (k !== null && k !== undefined) e.append(k instanceof Node ? k : String(k));
    return e;
  };
  const num = (v) => (v === '' || v === null || v === undefined || isNaN(Number(v))) ? null : Number(v);
  const fmt = (v, col) => {
    if (TEXT_COLUMNS.has(col) || col === 'node_id') return v;
    const n = num(v);
    if (n === null) return v;
    if (Number.isInteger(n)) return String(n);
    return Number(n.toPrecision(4)).toString();
  };

  async function getJSON(url) {
    const r = await fetch(url);
    if (!r.ok) throw new Error(`${url}: ${r.status} ${(await r.text()).trim()}`);
    return r.json();
  }

  // ------------------------------------------------------------------ viewer
  const viewer = OpenSeadragon({
    id: 'osd', prefixUrl: '/static/openseadragon/images/', drawer: 'canvas',
    showNavigator: true, navigatorPosition: 'BOTTOM_RIGHT', maxZoomPixelRatio: 4, visibilityRatio: 0.2,
    animationTime: 0.5, gestureSettingsMouse: {clickToZoom: false, dblClickToZoom: true},
    showRotationControl: false,
  });
  state.viewer = viewer;
  const overlay = document.createElement('canvas');
  overlay.id = 'overlay';
  overlay.style.cssText = 'position:absolute;left:0;top:0;width:100%;height:100%;pointer-events:none';
  viewer.canvas.appendChild(overlay);

  function slideItem() { return viewer.world.getItemCount() ? viewer.world.getItemAt(0) : null; }

  // level-0 px -> overlay element px: x' = ox + s * x (no rotation)
  function transform() {
    const item = slideItem();
    if (!item) return null;
    const a = item.imageToViewerElementCoordinates(new OpenSeadragon.Point(0, 0));
    const b = item.imageToViewerElementCoordinates(new OpenSeadragon.Point(10000, 10000));
    return {ox: a.x, oy: a.y, sx: (b.x - a.x) / 10000, sy: (b.y - a.y) / 10000};
  }
  state.imageToElement = (x, y) => { const t = transform(); return t && [t.ox + t.sx * x, t.oy + t.sy * y]; };

  function rings(geom) {
    if (!geom) return [];
    if (geom.type === 'Polygon') return [geom.coordinates];
    if (geom.type === 'MultiPolygon') return geom.coordinates;
    if (geom.type === 'GeometryCollection') return geom.geometries.flatMap(rings);
    return [];
  }

  function pathOf(ctx, polys, t, dpr) {
    ctx.beginPath();
    for (const poly of polys) for (const ring of poly) {
      ring.forEach(([x, y], i) => {
        const px = (t.ox + t.sx * x) * dpr, py = (t.oy + t.sy * y) * dpr;
        if (i === 0) ctx.moveTo(px, py); else ctx.lineTo(px, py);
      });
      ctx.closePath();
    }
  }

  function draw() {
    const dpr = window.devicePixelRatio || 1;
    const w = viewer.canvas.clientWidth, h = viewer.canvas.clientHeight;
    if (overlay.width !== Math.round(w * dpr) || overlay.height !== Math.round(h * dpr)) {
      overlay.width = Math.round(w * dpr); overlay.height = Math.round(h * dpr);
    }
    const ctx = overlay.getContext('2d');
    ctx.clearRect(0, 0, overlay.width, overlay.height);
    const t = transform();
    if (!t) return;
    if ($('show-tumour').checked) {
      for (const f of state.tumour) {
        pathOf(ctx, f.polys, t, dpr);
        ctx.fillStyle = TUMOUR_FILL; ctx.fill('evenodd');
        ctx.strokeStyle = TUMOUR_LINE; ctx.lineWidth = 1.5 * dpr; ctx.stroke();
      }
    }
    if ($('show-nodes').checked) {
      for (const n of state.nodes) {
        const sel = state.selected === n.id;
        pathOf(ctx, n.polys, t, dpr);
        if (sel) { ctx.strokeStyle = SELECTED; ctx.lineWidth = 8 * dpr; ctx.stroke(); }
        ctx.strokeStyle = COLOURS[n.category] || 'rgb(120,120,120)';
        ctx.lineWidth = (sel ? 4 : 3) * dpr; ctx.stroke();
      }
    }
    if ($('show-labels').checked) {
      ctx.font = `${12 * dpr}px sans-serif`; ctx.textBaseline = 'bottom'; ctx.textAlign = 'center';
      for (const n of state.nodes) {
        const [x0, y0, x1] = n.bbox;
        const wpx = (x1 - x0) * t.sx;
        if (wpx < 60) continue;
        const cx = (t.ox + t.sx * (x0 + x1) / 2) * dpr, cy = (t.oy + t.sy * y0) * dpr - 6 * dpr;
        const text = n.label;
        const tw = ctx.measureText(text).width;
        ctx.fillStyle = 'rgba(255,255,255,0.85)';
        ctx.fillRect(cx - tw / 2 - 3 * dpr, cy - 15 * dpr, tw + 6 * dpr, 16 * dpr);
        ctx.fillStyle = '#111'; ctx.fillText(text, cx, cy);
      }
    }
    drawScaleBar(ctx, t, dpr, h);
  }

  function drawScaleBar(ctx, t, dpr, h) {
    const mpp = state.slide && state.slide.mpp;
    if (!mpp || !(t.sx > 0)) return;
    const umPerPx = mpp[0] / t.sx;
    const target = 120 * umPerPx;
    const p = Math.pow(10, Math.floor(Math.log10(target)));
    const nice = [1, 2, 5, 10].map((m) => m * p).filter((v) => v <= target).pop() || p;
    const len = nice / umPerPx;
    const label = nice >= 1000 ? `${nice / 1000} mm` : `${nice} µm`;
    const x = 12 * dpr, y = (h - 14) * dpr;
    ctx.fillStyle = 'rgba(255,255,255,0.8)';
    ctx.fillRect(x - 4 * dpr, y - 18 * dpr, len * dpr + 8 * dpr, 24 * dpr);
    ctx.fillStyle = '#000'; ctx.fillRect(x, y, len * dpr, 3 * dpr);
    ctx.font = `${11 * dpr}px sans-serif`; ctx.textAlign = 'left'; ctx.textBaseline = 'bottom';
    ctx.fillText(label, x, y - 2 * dpr);
  }

  viewer.addHandler('update-viewport', draw);
  viewer.addHandler('resize', draw);
  viewer.addHandler('open', draw);
  for (const id of ['show-nodes', 'show-tumour', 'show-labels']) $(id).addEventListener('change', draw);

  function setHeatOpacity() {
    if (!state.heatItem) return;
    state.heatItem.setOpacity($('show-heat').checked ? Number($('heat-opacity').value) / 100 : 0);
  }
  $('heat-opacity').addEventListener('input', setHeatOpacity);
  $('show-heat').addEventListener('change', setHeatOpacity);

  // a click on a node outline selects its table row
  function pointInRing(x, y, ring) {
    let inside = false;
    for (let i = 0, j = ring.length - 1; i < ring.length; j = i++) {
      const [xi, yi] = ring[i], [xj, yj] = ring[j];
      if ((yi > y) !== (yj > y) && x < (xj - xi) * (y - yi) / (yj - yi) + xi) inside = !inside;
    }
    return inside;
  }
  function nodeAt(x, y) {
    let best = null;
    for (const n of state.nodes) {
      const [x0, y0, x1, y1] = n.bbox;
      if (x < x0 || x > x1 || y < y0 || y > y1) continue;
      let inside = false;
      for (const poly of n.polys) for (const ring of poly) if (pointInRing(x, y, ring)) inside = !inside;
      if (inside && (!best || n.area < best.area)) best = n;
    }
    return best;
  }
  state.nodeAt = nodeAt;
  viewer.addHandler('canvas-click', (e) => {
    if (!e.quick) return;
    const item = slideItem();
    if (!item) return;
    const p = item.viewerElementToImageCoordinates(e.position);
    const n = nodeAt(p.x, p.y);
    if (n) { selectNode(n.id, false); e.preventDefaultAction = true; }
  });

  // ------------------------------------------------------------------ messages
  function message(kind, text) { $('messages').append(el('div', {class: kind}, text)); }
  function clearMessages() { $('messages').textContent = ''; }

  // ------------------------------------------------------------------ sidebar
  function renderSidebar() {
    const run = state.run, box = $('patients');
    box.textContent = '';
    const byPatient = new Map();
    for (const s of run.slides) {
      if (!byPatient.has(s.patient_id)) byPatient.set(s.patient_id, []);
      byPatient.get(s.patient_id).push(s);
    }
    const pinfo = new Map(run.patients.map((p) => [String(p.patient_id), p]));
    for (const [pid, slides] of byPatient) {
      const p = pinfo.get(String(pid));
      const div = el('div', {class: 'patient'});
      if (pid !== '') {
        div.append(el('div', {class: 'head'}, `Patient ${pid}`, p && p.n_stage ? el('span', {class: 'badge'}, p.n_stage) : el('span', {class: 'badge'}, 'not staged')));
        if (p && p.n_stage) {
          div.append(el('div', {class: 'stats'},
            `${p.n_nodes} nodes, ${p.n_metastatic_nodes} MLN · T/MLN ${fmt(p.t_mln)} (pooled), ${fmt(p.t_mln_mean_nodes)} (mean of nodes)`));
        }
      }
      for (const s of slides) {
        const bits = [s.slide_id];
        if (s.status === 'done') bits.push(el('span', {class: 'badge'}, `${s.n_nodes ?? '?'} nodes · ${s.n_metastatic_nodes ?? '?'} MLN`));
        else bits.push(el('span', {class: 'badge'}, s.status || 'failed'));
        const a = el('a', {class: 'slide-link' + (s.status !== 'done' ? ' failed' : ''), 'data-slide': s.slide_id,
          title: s.error || s.problem || s.slide_path || '', onclick: () => openSlide(s.slide_id)}, ...bits);
        div.append(a);
      }
      box.append(div);
    }
  }

  function renderReview() {
    const ol = $('review');
    ol.textContent = '';
    $('review-count').textContent = `(${state.review.length})`;
    $('review-none').hidden = state.review.length > 0;
    for (const r of state.review) {
      const li = el('li', {'data-slide': r.slide_id, 'data-node': r.node_id,
        onclick: () => openSlide(r.slide_id).then(() => selectNode(r.node_id, true))},
        el('b', {}, `${r.slide_id} node ${r.node_id}`), ` (${r.category}${r.largest_deposit_mm ? ', ' + fmt(r.largest_deposit_mm) + ' mm' : ''})`,
        el('ul', {}, ...r.reasons.map((x) => el('li', {'data-rule': x.rule}, x.text))));
      ol.append(li);
    }
  }

  // ------------------------------------------------------------------ node table
  function renderTable() {
    const cols = state.run.node_columns;
    const thead = $('nodes').tHead, tbody = $('nodes').tBodies[0];
    thead.textContent = ''; tbody.textContent = '';
    const tr = el('tr');
    for (const c of cols) {
      const th = el('th', {class: TEXT_COLUMNS.has(c) ? 'txt' : '', 'data-col': c, onclick: () => sortBy(c)}, c);
      if (state.sort.col === c) th.classList.add(state.sort.dir > 0 ? 'sorted-asc' : 'sorted-desc');
      tr.append(th);
    }
    thead.append(tr);
    const rows = state.rows.slice();
    const {col, dir} = state.sort;
    rows.sort((a, b) => {
      const x = num(a[col]), y = num(b[col]);
      if (x !== null && y !== null) return dir * (x - y);
      return dir * String(a[col]).localeCompare(String(b[col]));
    });
    for (const r of rows) {
      const id = Number(r.node_id);
      const row = el('tr', {'data-node': id, class: `cat-${r.category}` + (state.selected === id ? ' selected' : ''),
        onclick: () => selectNode(id, true)});
      for (const c of cols) row.append(el('td', {class: (TEXT_COLUMNS.has(c) ? 'txt' : '') + (c === 'category' ? ' cat' : '')}, fmt(r[c], c)));
      tbody.append(row);
    }
    $('node-count').textContent = `(${rows.length}${state.slideId ? ' on ' + state.slideId : ''})`;
  }
  function sortBy(c) {
    state.sort = state.sort.col === c ? {col: c, dir: -state.sort.dir} : {col: c, dir: 1};
    renderTable();
  }

  function selectNode(id, zoom) {
    state.selected = Number(id);
    for (const tr of $('nodes').tBodies[0].rows) tr.classList.toggle('selected', Number(tr.dataset.node) === state.selected);
    const row = $('nodes').querySelector(`tbody tr[data-node="${state.selected}"]`);
    if (row) row.scrollIntoView({block: 'nearest'});
    const n = state.nodes.find((x) => x.id === state.selected);
    if (zoom && n) {
      const item = slideItem();
      if (item) {
        const [x0, y0, x1, y1] = n.bbox, mx = (x1 - x0) * 0.15, my = (y1 - y0) * 0.15;
        viewer.viewport.fitBounds(item.imageToViewportRectangle(x0 - mx, y0 - my, x1 - x0 + 2 * mx, y1 - y0 + 2 * my));
      }
    }
    updateHash();
    draw();
  }
  state.selectNode = selectNode;

  function updateHash() {
    const h = `#slide=${encodeURIComponent(state.slideId || '')}` + (state.selected ? `&node=${state.selected}` : '');
    if (location.hash !== h) history.replaceState(null, '', h);
  }

  // ------------------------------------------------------------------ opening a slide
  function bboxOf(polys) {
    let x0 = Infinity, y0 = Infinity, x1 = -Infinity, y1 = -Infinity;
    for (const p of polys) for (const r of p) for (const [x, y] of r) {
      if (x < x0) x0 = x; if (y < y0) y0 = y; if (x > x1) x1 = x; if (y > y1) y1 = y;
    }
    return [x0, y0, x1, y1];
  }
  function nodeFeatures(geo) {
    const out = [];
    (geo ? geo.features : []).forEach((f, i) => {
      const props = f.properties || {}, m = props.measurements || {};
      const cls = (props.classification && props.classification.name) || '';
      const polys = rings(f.geometry);
      if (!polys.length) return;
      const id = m.node_id !== undefined ? Number(m.node_id) : i + 1;
      const category = cls.includes(':') ? cls.split(':').pop().trim().toLowerCase() : 'negative';
      const frac = m.tumour_fraction !== undefined ? ` · ${Number((100 * m.tumour_fraction).toPrecision(3))} %` : '';
      const ld = m.largest_deposit_mm ? ` · ${Number(Number(m.largest_deposit_mm).toPrecision(3))} mm` : '';
      const bbox = bboxOf(polys);
      out.push({id, category, polys, bbox, area: (bbox[2] - bbox[0]) * (bbox[3] - bbox[1]), label: `node ${id}${frac}${ld}`});
    });
    return out;
  }

  async function openSlide(slideId) {
    if (state.slideId === slideId && state.slide) return;
    state.slideId = slideId; state.slide = null; state.selected = null; state.heatItem = null;
    state.nodes = []; state.tumour = [];
    document.querySelectorAll('.slide-link').forEach((a) => a.classList.toggle('active', a.dataset.slide === slideId));
    clearMessages();
    $('slide-title').textContent = slideId;
    state.rows = state.run.nodes.filter((r) => String(r.slide_id) === String(slideId) || state.run.mode === 'slide');
    renderTable();
    let info;
    try {
      info = await getJSON(`/api/slide/${encodeURIComponent(slideId)}`);
    } catch (err) { message('problem', String(err.message || err)); return; }
    state.slide = info;
    if (info.error) message('problem', `this slide failed in the run: ${info.error}`);
    if (info.problem) message('problem', info.problem);
    if (info.warning) message('warning', info.warning);
    const base = `/api/slide/${encodeURIComponent(slideId)}`;
    const [ng, tg] = await Promise.all([
      info.nodes_geojson ? getJSON(`${base}/nodes.geojson`).catch((e) => { message('problem', e.message); return null; }) : null,
      info.tumour_geojson ? getJSON(`${base}/tumour.geojson`).catch((e) => { message('problem', e.message); return null; }) : null,
    ]);
    state.nodes = nodeFeatures(ng);
    state.tumour = (tg ? tg.features : []).map((f) => ({polys: rings(f.geometry)})).filter((f) => f.polys.length);
    $('heat-controls').hidden = !info.heat;
    if (!info.dzi) { viewer.close(); draw(); return; }
    await new Promise((resolve) => {
      const done = () => { viewer.removeHandler('open', done); viewer.removeHandler('open-failed', fail); resolve(); };
      const fail = (e) => { message('problem', `slide tiles could not be opened: ${e.message || 'error'}`); done(); };
      viewer.addHandler('open', done);
      viewer.addHandler('open-failed', fail);
      viewer.open(info.dzi);
    });
    if (info.heat) {
      const W = info.width, h = info.heat;
      viewer.addTiledImage({
        tileSource: {type: 'image', url: `${base}/heat.png`, buildPyramid: false},
        x: h.x / W, y: h.y / W, width: h.width / W,
        opacity: $('show-heat').checked ? Number($('heat-opacity').value) / 100 : 0,
        success: (e) => { state.heatItem = e.item; },
        error: () => message('warning', 'the tumour map could not be loaded'),
      });
    }
    draw();
  }
  state.openSlide = openSlide;
  state.fullyLoaded = () => {
    const n = viewer.world.getItemCount();
    if (!n) return false;
    for (let i = 0; i < n; i++) if (!viewer.world.getItemAt(i).getFullyLoaded()) return false;
    return !state.slide || !state.slide.heat || !!state.heatItem;
  };

  // ------------------------------------------------------------------ start
  async function start() {
    try {
      state.run = await getJSON('/api/run');
    } catch (err) { message('problem', `cannot read the run: ${err.message}`); return; }
    const s = state.run.summary || {}, p = s.parameters || {};
    $('runname').textContent = state.run.run || '(one slide)';
    $('params').textContent = [s.tmln_version && `tmln ${s.tmln_version}`, p.mln_rule && `MLN rule ${p.mln_rule}`,
      p.nodes_from && `nodes from ${p.nodes_from}`, p.tumour_from && `tumour from ${p.tumour_from}`].filter(Boolean).join(' · ');
    renderSidebar();
    getJSON('/api/review').then((r) => { state.review = r.review; renderReview(); })
      .catch((err) => message('warning', `review list unavailable: ${err.message}`));
    const h = new URLSearchParams(location.hash.slice(1));
    const first = state.run.slides.find((x) => x.slide_id === h.get('slide')) ||
      state.run.slides.find((x) => x.status === 'done') || state.run.slides[0];
    if (first) {
      await openSlide(first.slide_id);
      if (h.get('node')) selectNode(Number(h.get('node')), true);
    }
    state.ready = true;
  }
  start();
})();
