// The Levee dashboard: polls the API every second with the key of this tab and draws what it
// answers. No library, nothing from another origin (the page's CSP is `default-src 'self'`).
//
// Data: GET /v1/status (every poll), GET /v1/alerts and GET /metrics when they answer (a 404 is
// asked again every 15 s). Every call sends `Authorization: Bearer <key>`; the key comes from the
// URL fragment (#key=lvk_..., never sent to the server) or the form, and stays in sessionStorage.
//
// Stable hooks for tests: every number is an element with data-field (and data-function for a
// function's, data-store for a store's) whose text is the value.
'use strict';

(() => {
  const KEY_ITEM = 'levee.key';
  const POLL_MS = 1000;
  const HISTORY_MS = 5 * 60 * 1000;
  // The charts span the history kept, at least this much.
  const MIN_SPAN_MS = 60 * 1000;
  const LATENCY_WINDOW_MS = 60 * 1000;
  const OPTIONAL_RETRY_MS = 15 * 1000;
  const FETCH_TIMEOUT_MS = 5000;
  const BUCKET = 'levee_handler_duration_seconds_bucket';
  const SVG_NS = 'http://www.w3.org/2000/svg';

  const state = {
    key: null,
    timer: null,
    running: false,
    polls: 0,
    // One sample per successful status poll: {t, fns: {name: {...}}, stores: {name: {...}}}.
    history: [],
    status: null,
    statusAt: null,
    statusError: null,
    alerts: { state: 'pending', list: [], code: 0 },
    nextAlertsAt: 0,
    metrics: { state: 'pending', code: 0 },
    // Histogram snapshots of the last minute: {t, buckets: Map(function -> Map(le -> count))}.
    snapshots: [],
    latency: {},
    nextMetricsAt: 0,
    rows: new Map(),
    rowNames: '',
  };

  const $ = (id) => document.getElementById(id);
  const all = (sel) => Array.from(document.querySelectorAll(sel));

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }

  function svg(tag, attrs) {
    const e = document.createElementNS(SVG_NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
    return e;
  }

  // Sets the text of every element with data-field=name (outside the per-function rows).
  function setField(name, text) {
    for (const e of all(`[data-field="${name}"]:not([data-function]):not([data-store])`)) {
      e.textContent = text;
    }
  }

  // ---- the key ----------------------------------------------------------------------------

  function storage() {
    try {
      return window.sessionStorage;
    } catch (_) {
      return null;
    }
  }

  function keyFromFragment() {
    const h = location.hash.replace(/^#/, '');
    if (!h) return null;
    const k = new URLSearchParams(h).get('key');
    if (k === null) return null;
    // Out of the address bar and the history entry at once.
    history.replaceState(null, '', location.pathname + location.search);
    return k.trim() || null;
  }

  function useKey(k) {
    state.key = k;
    const s = storage();
    if (s) s.setItem(KEY_ITEM, k);
    $('login').hidden = true;
    $('main').hidden = false;
    $('forget').hidden = false;
    setConn('connecting', 'connecting…');
    start();
  }

  function askKey(message) {
    stop();
    state.key = null;
    const s = storage();
    if (s) s.removeItem(KEY_ITEM);
    $('key-error').textContent = message || '';
    $('login').hidden = false;
    $('main').hidden = true;
    $('forget').hidden = true;
    setConn('idle', message ? 'key refused' : 'no key');
    $('key-input').focus();
  }

  // ---- polling ----------------------------------------------------------------------------

  function start() {
    if (state.running) return;
    state.running = true;
    tick();
  }

  function stop() {
    state.running = false;
    if (state.timer !== null) clearTimeout(state.timer);
    state.timer = null;
  }

  async function get(path, accept) {
    const ctl = new AbortController();
    const timer = setTimeout(() => ctl.abort(), FETCH_TIMEOUT_MS);
    try {
      const r = await fetch(path, {
        headers: { Authorization: 'Bearer ' + state.key, Accept: accept },
        cache: 'no-store',
        credentials: 'omit',
        redirect: 'error',
        signal: ctl.signal,
      });
      return { code: r.status, body: await r.text() };
    } catch (e) {
      return { code: 0, body: ctl.signal.aborted ? 'timed out' : String((e && e.message) || e) };
    } finally {
      clearTimeout(timer);
    }
  }

  function reasonOf(r) {
    try {
      const v = JSON.parse(r.body);
      if (v && typeof v.error === 'string') return v.error;
    } catch (_) {
      // not JSON
    }
    return r.code ? `HTTP ${r.code}` : r.body;
  }

  async function tick() {
    state.timer = null;
    if (!state.running) return;
    const now = Date.now();
    const jobs = [pollStatus()];
    if (now >= state.nextAlertsAt) jobs.push(pollAlerts(now));
    if (now >= state.nextMetricsAt) jobs.push(pollMetrics(now));
    await Promise.all(jobs);
    if (!state.running) return;
    state.polls += 1;
    try {
      render();
    } catch (e) {
      setConn('error', 'render failed: ' + e.message);
    }
    state.timer = setTimeout(tick, POLL_MS);
  }

  async function pollStatus() {
    const r = await get('/v1/status', 'application/json');
    if (r.code === 401) {
      askKey('The key was refused: ' + reasonOf(r));
      return;
    }
    if (r.code !== 200) {
      state.statusError = r.code ? `${r.code}: ${reasonOf(r)}` : reasonOf(r);
      return;
    }
    let s;
    try {
      s = JSON.parse(r.body);
    } catch (_) {
      state.statusError = 'the answer was not JSON';
      return;
    }
    state.statusError = null;
    record(s, Date.now());
  }

  async function pollAlerts(now) {
    const r = await get('/v1/alerts', 'application/json');
    const a = state.alerts;
    a.code = r.code;
    if (r.code === 200) {
      try {
        const v = JSON.parse(r.body);
        a.list = Array.isArray(v.alerts) ? v.alerts : [];
        a.state = 'ok';
      } catch (_) {
        a.state = 'error';
      }
      state.nextAlertsAt = 0;
    } else if (r.code === 404) {
      a.state = 'missing';
      a.list = [];
      state.nextAlertsAt = now + OPTIONAL_RETRY_MS;
    } else if (r.code === 401 || r.code === 403) {
      a.state = 'forbidden';
      a.list = [];
      state.nextAlertsAt = now + OPTIONAL_RETRY_MS;
    } else {
      a.state = 'error'; // keep the last list
    }
  }

  async function pollMetrics(now) {
    const r = await get('/metrics', 'text/plain');
    const m = state.metrics;
    m.code = r.code;
    if (r.code === 200) {
      const buckets = parseBuckets(r.body);
      m.state = buckets.size ? 'ok' : 'empty';
      state.snapshots.push({ t: now, buckets });
      const keepFrom = now - LATENCY_WINDOW_MS - 2 * POLL_MS;
      while (state.snapshots.length > 1 && state.snapshots[0].t < keepFrom) state.snapshots.shift();
      state.latency = latencies(now);
      state.nextMetricsAt = 0;
    } else {
      m.state = r.code === 404 ? 'missing' : r.code === 401 || r.code === 403 ? 'forbidden' : 'error';
      if (m.state !== 'error') {
        state.snapshots = [];
        state.latency = {};
        state.nextMetricsAt = now + OPTIONAL_RETRY_MS;
      }
    }
  }

  // ---- what the status says over time -----------------------------------------------------

  function record(s, t) {
    const prev = state.history[state.history.length - 1];
    const sample = { t, fns: {}, stores: {} };
    for (const f of s.functions || []) {
      const p = prev && prev.fns[f.name];
      let thr = null;
      if (p && t > prev.t && f.processed >= p.processed) {
        thr = ((f.processed - p.processed) * 1000) / (t - prev.t);
      }
      sample.fns[f.name] = {
        visible: f.visible,
        in_flight: f.in_flight,
        processed: f.processed,
        workers: f.workers,
        desired: f.desired === undefined ? null : f.desired,
        thr,
      };
    }
    for (const st of s.stores || []) {
      const p = prev && prev.stores[st.name];
      const bad = (st.store_errors || 0) + (st.rejected || 0);
      let badRate = null;
      if (p && t > prev.t && bad >= p.bad) badRate = ((bad - p.bad) * 1000) / (t - prev.t);
      sample.stores[st.name] = { bad, badRate, timeouts: st.timeouts || 0 };
    }
    state.history.push(sample);
    while (state.history.length && state.history[0].t < t - HISTORY_MS) state.history.shift();
    state.status = s;
    state.statusAt = t;
  }

  // ---- latency from the Prometheus histogram ----------------------------------------------

  function parseLabels(s) {
    const out = {};
    const re = /([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"/g;
    let m;
    while ((m = re.exec(s)) !== null) {
      out[m[1]] = m[2].replace(/\\(.)/g, (_, c) => (c === 'n' ? '\n' : c));
    }
    return out;
  }

  // function -> Map(upper bound -> cumulative count), summed over any other labels.
  function parseBuckets(text) {
    const out = new Map();
    for (const line of text.split('\n')) {
      if (!line.startsWith(BUCKET + '{')) continue;
      const close = line.lastIndexOf('}');
      if (close < 0) continue;
      const labels = parseLabels(line.slice(BUCKET.length + 1, close));
      const value = Number(line.slice(close + 1).trim().split(/\s+/)[0]);
      const fn = labels.function;
      const le = labels.le;
      if (fn === undefined || le === undefined || !Number.isFinite(value)) continue;
      const bound = le === '+Inf' ? Infinity : Number(le);
      if (Number.isNaN(bound)) continue;
      let m = out.get(fn);
      if (!m) {
        m = new Map();
        out.set(fn, m);
      }
      m.set(bound, (m.get(bound) || 0) + value);
    }
    return out;
  }

  // The q-quantile of cumulative buckets, interpolated inside its bucket (as histogram_quantile).
  function quantile(b, q) {
    const bounds = Array.from(b.keys()).sort((x, y) => x - y);
    if (!bounds.length) return null;
    const total = b.get(bounds[bounds.length - 1]);
    if (!(total > 0)) return null;
    const rank = q * total;
    let lo = 0;
    let below = 0;
    for (const ub of bounds) {
      const cum = b.get(ub);
      if (cum >= rank) {
        if (ub === Infinity) return lo;
        if (cum === below) return ub;
        return lo + ((ub - lo) * (rank - below)) / (cum - below);
      }
      lo = ub;
      below = cum;
    }
    return lo;
  }

  function total(b) {
    let t = 0;
    for (const v of b.values()) t = Math.max(t, v);
    return t;
  }

  // p50 and p99 per function over the last minute, else since the start.
  function latencies(now) {
    const snaps = state.snapshots;
    const last = snaps[snaps.length - 1];
    const base = snaps.find((s) => s.t >= now - LATENCY_WINDOW_MS) || snaps[0];
    const out = {};
    for (const [fn, cum] of last.buckets) {
      let use = cum;
      let window = 'since start';
      const old = base !== last && base.buckets.get(fn);
      if (old) {
        const delta = new Map();
        let ok = true;
        for (const [le, v] of cum) {
          const d = v - (old.get(le) || 0);
          if (d < 0) ok = false;
          delta.set(le, d);
        }
        if (ok && total(delta) > 0) {
          use = delta;
          window = 'last minute';
        }
      } else if (base !== last) {
        use = cum; // the function is new in this minute: all its counts are in it
        window = 'last minute';
      }
      out[fn] = { p50: quantile(use, 0.5), p99: quantile(use, 0.99), window };
    }
    return out;
  }

  // ---- formatting -------------------------------------------------------------------------

  const int = (n) => (n === null || n === undefined ? '-' : String(n));

  function rate(r) {
    if (r === null || r === undefined) return '-';
    return r < 100 ? r.toFixed(1) : String(Math.round(r));
  }

  function secs(s) {
    if (s === null || s === undefined || !Number.isFinite(s)) return '-';
    if (s < 0.001) return (s * 1e6).toFixed(0) + ' µs';
    if (s < 1) return (s * 1000).toFixed(s < 0.01 ? 2 : 1) + ' ms';
    return s.toFixed(2) + ' s';
  }

  function age(ms) {
    if (ms === null || ms === undefined) return '-';
    if (ms < 1000) return ms + ' ms';
    const s = Math.round(ms / 1000);
    if (s < 120) return s + ' s';
    const m = Math.floor(s / 60);
    if (m < 120) return `${m} min`;
    const h = Math.floor(m / 60);
    return h < 48 ? `${h} h ${m % 60} min` : `${Math.floor(h / 24)} d ${h % 24} h`;
  }

  function clock(t) {
    const d = new Date(t);
    return [d.getHours(), d.getMinutes(), d.getSeconds()]
      .map((n) => String(n).padStart(2, '0'))
      .join(':');
  }

  function version(f) {
    const v = f.version !== undefined && f.version !== null ? f.version : f.module;
    if (v === undefined || v === null || v === '') return '-';
    const s = String(v);
    return s.includes('/') ? s.slice(s.lastIndexOf('/') + 1) : s;
  }

  function setConn(kind, text) {
    const c = $('conn');
    c.dataset.state = kind;
    c.textContent = text;
  }

  // ---- charts (inline SVG) ----------------------------------------------------------------

  const WIDTH = 300;
  const HEIGHT = 84;
  const TOP = 16;
  const BOTTOM = 14;

  // The time the charts span: the history kept, rounded up to whole minutes, 1 to 5 minutes.
  function chartSpan(now) {
    const first = state.history.length ? state.history[0].t : now;
    const minutes = Math.ceil(Math.max(now - first, 1) / 60000);
    return Math.min(HISTORY_MS, Math.max(MIN_SPAN_MS, minutes * 60000));
  }

  function spanText(ms) {
    return `${Math.round(ms / 60000)} min`;
  }

  function niceMax(v) {
    if (!(v > 0)) return 1;
    const p = Math.pow(10, Math.floor(Math.log10(v)));
    for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
    return 10 * p;
  }

  // series: [{cls, value(sample), step, area}], drawn over the history; size: [width, height].
  function draw(box, series, fmt, size) {
    const [W, H] = size || [WIDTH, HEIGHT];
    const now = state.statusAt || Date.now();
    const span = chartSpan(now);
    const t0 = now - span;
    const x = (t) => ((t - t0) / span) * W;
    let max = 0;
    for (const s of series) {
      for (const h of state.history) {
        const v = s.value(h);
        if (v !== null && v !== undefined) max = Math.max(max, v);
      }
    }
    const top = niceMax(max);
    const y = (v) => TOP + (1 - v / top) * (H - TOP - BOTTOM);
    const root = svg('svg', {
      viewBox: `0 0 ${W} ${H}`,
      class: 'spark',
      role: 'img',
      'aria-label': box.dataset.label || '',
    });
    root.appendChild(svg('rect', { x: 0, y: TOP, width: W, height: H - TOP - BOTTOM, class: 'plot' }));
    for (const g of [0, 0.5, 1]) {
      const gy = y(top * g);
      root.appendChild(svg('line', { x1: 0, x2: W, y1: gy, y2: gy, class: 'grid' }));
    }
    const last = state.history[state.history.length - 1];
    for (const s of series) {
      const segs = [];
      let cur = null;
      for (const h of state.history) {
        const v = s.value(h);
        if (v === null || v === undefined) {
          cur = null;
          continue;
        }
        if (!cur) {
          cur = [];
          segs.push(cur);
        }
        cur.push([x(h.t).toFixed(1), y(v).toFixed(1), h]);
      }
      for (const seg of segs) {
        let d = `M${seg[0][0]} ${seg[0][1]}`;
        for (const [px, py] of seg.slice(1)) d += s.step ? `H${px}V${py}` : `L${px} ${py}`;
        if (s.area) {
          const end = seg[seg.length - 1][0];
          const base = y(0).toFixed(1);
          root.appendChild(svg('path', { d: `${d}L${end} ${base}L${seg[0][0]} ${base}Z`, class: `area ${s.cls}` }));
        }
        root.appendChild(svg('path', { d, class: `line ${s.cls}` }));
      }
      const tail = segs.length ? segs[segs.length - 1] : null;
      const end = tail && tail[tail.length - 1];
      if (end && end[2] === last) {
        root.appendChild(svg('circle', { cx: end[0], cy: end[1], r: 2.2, class: `dot ${s.cls}` }));
      }
    }
    const label = (tx, ty, text, anchor, cls) => {
      const t = svg('text', { x: tx, y: ty, 'text-anchor': anchor, class: cls || 'axis' });
      t.textContent = text;
      root.appendChild(t);
    };
    label(0, TOP - 4, fmt(top), 'start', 'axis max');
    label(W, H - 2, 'now', 'end');
    label(0, H - 2, '−' + spanText(span), 'start');
    box.replaceChildren(root);
  }

  // ---- the page ---------------------------------------------------------------------------

  function fnField(fn, name, parent, label, unit) {
    const dt = el('dt', '', label);
    const dd = el('dd');
    const v = el('span', 'num', '-');
    v.setAttribute('data-function', fn);
    v.setAttribute('data-field', name);
    dd.appendChild(v);
    if (unit) dd.appendChild(el('span', 'unit', unit));
    parent.append(dt, dd);
    return v;
  }

  function buildRows(fns) {
    const box = $('functions');
    box.replaceChildren();
    state.rows.clear();
    for (const f of fns) {
      const name = f.name;
      const row = el('div', 'fn');
      row.setAttribute('data-function', name);
      const head = el('div', 'fn-name');
      head.appendChild(el('strong', '', name));
      const ver = el('span', 'muted small', 'version ');
      const verV = el('span', 'mono', '-');
      verV.setAttribute('data-function', name);
      verV.setAttribute('data-field', 'version');
      ver.appendChild(verV);
      head.appendChild(ver);
      const paused = el('span', 'badge warn', 'paused');
      paused.setAttribute('data-function', name);
      paused.setAttribute('data-field', 'paused');
      paused.hidden = true;
      head.appendChild(paused);
      const reason = el('p', 'reason muted small', '');
      reason.setAttribute('data-function', name);
      reason.setAttribute('data-field', 'reason');
      head.appendChild(reason);

      const now = el('dl', 'kv fn-now');
      const fields = {
        visible: fnField(name, 'visible', now, 'visible'),
        in_flight: fnField(name, 'in_flight', now, 'in flight'),
        delayed: fnField(name, 'delayed', now, 'delayed'),
        dlq: fnField(name, 'dlq', now, 'DLQ'),
        processed: fnField(name, 'processed', now, 'processed'),
        failed: fnField(name, 'failed', now, 'failed'),
        workers: fnField(name, 'workers', now, 'workers'),
        desired: fnField(name, 'desired', now, 'desired'),
        max_workers: fnField(name, 'max_workers', now, 'max'),
        throughput: fnField(name, 'throughput', now, 'throughput', '/s'),
        p50: fnField(name, 'p50', now, 'p50'),
        p99: fnField(name, 'p99', now, 'p99'),
        oldest: fnField(name, 'oldest', now, 'oldest'),
        retried: fnField(name, 'retried', now, 'retried'),
      };
      const chart = (kind, label) => {
        const c = el('div', 'chart');
        c.setAttribute('data-function', name);
        c.setAttribute('data-chart', kind);
        c.dataset.label = `${name}: ${label}`;
        return c;
      };
      const depth = chart('depth', 'queue depth');
      const thr = chart('throughput', 'throughput');
      const workers = chart('workers', 'workers');
      row.append(head, now, depth, thr, workers);
      box.appendChild(row);
      state.rows.set(name, { fields, paused, reason, version: verV, depth, thr, workers });
    }
    state.rowNames = fns.map((f) => f.name).join('\n');
  }

  function renderFunction(f) {
    const r = state.rows.get(f.name);
    const last = state.history[state.history.length - 1];
    const here = last && last.fns[f.name];
    const lat = state.latency[f.name];
    const F = r.fields;
    F.visible.textContent = int(f.visible);
    F.in_flight.textContent = int(f.in_flight);
    F.delayed.textContent = int(f.delayed);
    F.dlq.textContent = int(f.dlq);
    F.dlq.classList.toggle('bad', f.dlq > 0);
    F.processed.textContent = int(f.processed);
    F.failed.textContent = int(f.failed);
    F.retried.textContent = int(f.retried);
    F.workers.textContent = int(f.workers);
    F.desired.textContent = int(f.desired);
    F.max_workers.textContent = int(f.max_workers);
    F.throughput.textContent = rate(here ? here.thr : null);
    F.p50.textContent = lat ? secs(lat.p50) : '-';
    F.p99.textContent = lat ? secs(lat.p99) : '-';
    F.p50.title = F.p99.title = lat ? lat.window : 'no latency histogram in GET /metrics';
    F.oldest.textContent = age(f.oldest_age_ms);
    r.version.textContent = version(f);
    r.paused.hidden = !f.paused;
    r.reason.textContent = f.reason || '';
    r.reason.title = f.reason || '';
    const name = f.name;
    const of = (k) => (h) => (h.fns[name] ? h.fns[name][k] : null);
    draw(r.depth, [
      { cls: 'a', value: of('visible'), area: true },
      { cls: 'b', value: of('in_flight') },
    ], int);
    draw(r.thr, [{ cls: 'a', value: of('thr'), area: true }], rate);
    draw(r.workers, [
      { cls: 'a', value: of('workers'), step: true },
      { cls: 'b dashed', value: of('desired'), step: true },
    ], int);
  }

  const STORE_FIELDS = [
    ['backend', 'backend'],
    ['breaker', 'breaker'],
    ['breaker_opens', 'breaker opens'],
    ['hit_ratio', 'hit ratio'],
    ['hits', 'hits'],
    ['misses', 'misses'],
    ['stale_serves', 'stale serves'],
    ['store_errors', 'store errors'],
    ['timeouts', 'timeouts'],
    ['rejected', 'rejected'],
    ['in_flight', 'calls in flight'],
    ['entries', 'entries'],
  ];

  // ok, errors (failing calls, breaker closed), recovering (half-open) or down (open).
  function storeState(st) {
    const last = state.history[state.history.length - 1];
    const h = last && last.stores[st.name];
    if (st.breaker === 'open') return 'down';
    if (st.breaker === 'half-open') return 'recovering';
    if (h && h.badRate > 0) return 'errors';
    return 'ok';
  }

  const SEVERITY = { ok: 0, errors: 1, recovering: 2, down: 3 };
  const BADGE = { ok: 'good', errors: 'warn', recovering: 'warn', down: 'bad' };

  function renderStores(stores) {
    const box = $('stores');
    box.replaceChildren();
    let worst = 'ok';
    for (const st of stores) {
      const s = storeState(st);
      if (SEVERITY[s] > SEVERITY[worst]) worst = s;
      const wrap = el('div', 'store');
      const title = el('h3', '', `${st.name} `);
      const badge = el('span', `badge ${BADGE[s]}`, s);
      badge.setAttribute('data-store', st.name);
      badge.setAttribute('data-field', 'state');
      title.appendChild(badge);
      wrap.appendChild(title);
      const dl = el('dl', 'kv');
      const reads = (st.hits || 0) + (st.misses || 0);
      for (const [k, label] of STORE_FIELDS) {
        let v = st[k];
        if (k === 'hit_ratio') v = reads ? ((100 * st.hits) / reads).toFixed(1) + ' %' : '-';
        const dd = el('dd', 'num', v === undefined || v === null ? '-' : String(v));
        dd.setAttribute('data-store', st.name);
        dd.setAttribute('data-field', k);
        if (k === 'breaker' && v !== 'closed') dd.classList.add('bad');
        dl.append(el('dt', '', label), dd);
      }
      wrap.appendChild(dl);
      const chart = el('div', 'chart');
      chart.dataset.label = `${st.name}: failed or refused store calls per second`;
      wrap.appendChild(el('p', 'muted small', 'failed or refused calls /s'));
      wrap.appendChild(chart);
      const name = st.name;
      draw(chart, [{ cls: 'c', value: (h) => (h.stores[name] ? h.stores[name].badRate : null), area: true }], rate, [480, 56]);
      box.appendChild(wrap);
    }
    const b = all('[data-field="store-state"]')[0];
    b.textContent = stores.length ? worst : '-';
    b.className = `badge ${stores.length ? BADGE[worst] : ''}`;
  }

  const INACTIVE = new Set(['resolved', 'ok', 'inactive', 'cleared']);

  function renderAlerts() {
    const a = state.alerts;
    const list = $('alerts');
    const count = all('[data-field="alerts-count"]')[0];
    const texts = {
      pending: 'alerts: asking…',
      missing: 'alerts: not available',
      forbidden: `alerts: this key may not read them (${a.code})`,
      error: `alerts: unavailable (${a.code || 'no answer'}); showing the last answer`,
    };
    const active = a.list.filter((x) => !INACTIVE.has(String(x.state)));
    if (a.state === 'ok') {
      setField('alerts-status', active.length ? `${active.length} active` : 'no active alerts');
    } else {
      setField('alerts-status', texts[a.state]);
    }
    count.textContent = a.state === 'ok' || (a.state === 'error' && a.list.length) ? String(active.length) : '-';
    count.className = `badge ${active.length ? 'bad' : a.state === 'ok' ? 'good' : ''}`;
    const sorted = active.concat(a.list.filter((x) => INACTIVE.has(String(x.state))));
    list.replaceChildren();
    for (const x of sorted) {
      const li = el('li', INACTIVE.has(String(x.state)) ? 'alert inactive' : 'alert');
      li.setAttribute('data-field', 'alert');
      li.setAttribute('data-rule', String(x.rule || ''));
      li.setAttribute('data-state', String(x.state || ''));
      const head = el('div', 'alert-head');
      head.appendChild(el('span', `badge ${INACTIVE.has(String(x.state)) ? '' : 'bad'}`, String(x.state || '?')));
      head.appendChild(el('strong', '', ` ${x.rule || '?'}`));
      const where = [x.kind, x.function].filter((v) => v !== undefined && v !== null && v !== '');
      if (where.length) head.appendChild(el('span', 'muted', ` · ${where.join(' · ')}`));
      if (x.since_ms) head.appendChild(el('span', 'muted', ` · for ${age(Math.max(0, Date.now() - x.since_ms))}`));
      li.appendChild(head);
      if (x.message) li.appendChild(el('p', 'small', String(x.message)));
      if (x.value !== undefined || x.threshold !== undefined) {
        li.appendChild(el('p', 'small muted', `value ${fmtNum(x.value)} · threshold ${fmtNum(x.threshold)}`));
      }
      for (const d of Array.isArray(x.deliveries) ? x.deliveries : []) {
        const n = d.attempts === undefined ? '' : ` (${d.attempts} attempt${d.attempts === 1 ? '' : 's'})`;
        const err = d.last_error ? `: ${d.last_error}` : '';
        li.appendChild(el('p', 'small delivery', `→ ${d.channel}: ${d.state}${n}${err}`));
      }
      list.appendChild(li);
    }
  }

  function fmtNum(v) {
    if (v === undefined || v === null) return '-';
    if (typeof v === 'number') return Number.isInteger(v) ? String(v) : v.toFixed(3).replace(/0+$/, '');
    return String(v);
  }

  function renderIngress(i) {
    if (!i) return;
    setField('connections', `${i.connections} / ${i.max_connections}`);
    setField('blocks', int((i.blocks || []).length));
    setField('blocked-total', int(i.blocked_total));
    setField('shed', int(i.shed_connections));
  }

  function renderMetrics() {
    const m = state.metrics;
    const text = {
      pending: 'asking GET /metrics…',
      ok: 'p50/p99 from GET /metrics',
      empty: 'no handler histogram in GET /metrics',
      missing: 'not available (no GET /metrics)',
      forbidden: `GET /metrics refused (${m.code})`,
      error: `GET /metrics failed (${m.code || 'no answer'})`,
    };
    setField('metrics-status', text[m.state]);
  }

  function render() {
    const s = state.status;
    const banner = $('banner');
    if (state.statusError) {
      const since = state.statusAt ? ` Showing the answer of ${clock(state.statusAt)}.` : '';
      banner.textContent = `GET /v1/status failed (${state.statusError}); retrying every second.${since}`;
      banner.hidden = false;
      setConn('error', 'status unavailable');
    } else {
      banner.hidden = true;
      banner.textContent = '';
      setConn('live', 'live');
    }
    setField('polls', String(state.polls));
    renderAlerts();
    renderMetrics();
    if (!s) return;
    setField('updated', clock(state.statusAt));
    const fns = s.functions || [];
    if (fns.map((f) => f.name).join('\n') !== state.rowNames) buildRows(fns);
    for (const f of fns) renderFunction(f);
    renderStores(s.stores || []);
    renderIngress(s.ingress);
  }

  // ---- start ------------------------------------------------------------------------------

  function init() {
    $('key-form').addEventListener('submit', (e) => {
      e.preventDefault();
      const k = $('key-input').value.trim();
      $('key-input').value = '';
      if (k) useKey(k);
    });
    $('forget').addEventListener('click', () => {
      state.history = [];
      state.status = null;
      askKey('');
    });
    const s = storage();
    const k = keyFromFragment() || (s && s.getItem(KEY_ITEM));
    if (k) useKey(k);
    else askKey('');
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', init);
  else init();
})();
