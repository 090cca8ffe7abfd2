// SPDX-License-Identifier: MIT
/* SnapSync dashboard. Live state arrives as server-sent events from api/events (the status
 * document of api/status); without them it polls every 5 s. Lists (sessions, failed files,
 * health) are fetched when the state says something changed, and every 30 s. Every text from
 * the server goes in with textContent: file names can hold anything. Every URL is relative (no
 * leading '/'), so the page also works behind a reverse proxy that serves it under a sub-path
 * (Home Assistant's ingress). */
'use strict';

const POLL_MS = 5000;
const LIST_REFRESH_MS = 30000;
const $ = (id) => document.getElementById(id);

let lastStatus = null;
let lastEventAt = 0;
let pollTimer = null;
let listKey = '';
let listsAt = 0;
const openSessions = new Set();
let destLabels = new Map(); /* destination id -> its label, from api/health */
let lastVerification = null; /* api/verification, drawn again when the labels arrive */

/* A destination as people know it: its configured label when the health probe named it. */
function destLabel(name) {
  return destLabels.get(name) || name || 'destination';
}

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === 'class') e.className = v;
    else if (k === 'text') e.textContent = v;
    else e.setAttribute(k, v);
  }
  for (const c of children) if (c != null) e.append(c);
  return e;
}

function bytes(n) {
  const units = ['B', 'KB', 'MB', 'GB', 'TB'];
  let u = 0;
  n = Number(n) || 0;
  while (n >= 1000 && u < units.length - 1) { n /= 1000; u++; }
  return (u ? n.toFixed(1) : n.toFixed(0)) + ' ' + units[u];
}

function duration(s) {
  if (s == null || !isFinite(s) || s < 0) return '–';
  s = Math.round(s);
  const h = Math.floor(s / 3600), m = Math.floor(s / 60) % 60, r = s % 60;
  return (h ? h + ':' + String(m).padStart(2, '0') : m) + ':' + String(r).padStart(2, '0');
}

function when(t) {
  if (!t) return '–';
  return new Date(t * 1000).toLocaleString([], { dateStyle: 'medium', timeStyle: 'short' });
}

/* "1 file", "2 files": a count with its noun. */
function count(n, one, many) {
  return n + ' ' + (n === 1 ? one : many || one + 's');
}

function statusTag(status) {
  const cls = { completed: 'ok', empty: 'ok', partial: 'warn', interrupted: 'warn',
    failed: 'bad', backing_up: 'warn', scanning: 'warn', clean: 'ok', paused: 'ok',
    problems: 'bad', missing: 'bad', changed: 'bad' }[status] || 'warn';
  return el('span', { class: 'tag ' + cls, text: status.replace('_', ' ') });
}

/* What the scan of a session could not read: a sentence and the named entries (or null). */
function scanProblems(s) {
  if (!s.scan_problems) return null;
  const n = s.scan_problems;
  const entries = s.scan_problem_entries || [];
  const list = el('ul', { class: 'problems' }, ...entries.map((p) =>
    el('li', null, el('span', { class: 'path', text: p.path }), ' — ' + p.error)));
  if (entries.length < n) list.append(el('li', { text: 'and ' + (n - entries.length) + ' more' }));
  return el('div', { class: 'scan-problems' },
    el('p', { text: n + (n === 1 ? ' entry' : ' entries') + ' of the card could not be read: ' +
      'the files under ' + (n === 1 ? 'it' : 'them') + ' are not backed up.' }), list);
}

function message(text, ok) {
  const m = $('message');
  m.textContent = text;
  m.className = ok ? 'message ok' : 'message';
  m.hidden = !text;
}

async function getJSON(url) {
  const r = await fetch(url, { headers: { Accept: 'application/json' }, cache: 'no-store' });
  if (!r.ok) throw new Error(url + ': HTTP ' + r.status);
  return r.json();
}

async function action(url) {
  const headers = { 'Content-Type': 'application/json', Accept: 'application/json' };
  const token = localStorage.getItem('snapsync-token');
  if (token) headers.Authorization = 'Bearer ' + token;
  const r = await fetch(url, { method: 'POST', headers, body: '{}', cache: 'no-store' });
  let body = {};
  try { body = await r.json(); } catch (e) { body = {}; }
  if (r.status === 401) {
    $('token-form').hidden = false;
    $('token').focus();
    throw new Error('This action needs the access token: enter it below, then try again.');
  }
  if (!r.ok) throw new Error(body.error || ('HTTP ' + r.status));
  return body;
}

/* ---- the current state ---- */

function drawChart(canvas, history) {
  const dpr = window.devicePixelRatio || 1;
  const w = canvas.clientWidth || 300, h = canvas.clientHeight || 70;
  canvas.width = Math.round(w * dpr);
  canvas.height = Math.round(h * dpr);
  const ctx = canvas.getContext('2d');
  ctx.scale(dpr, dpr);
  ctx.clearRect(0, 0, w, h);
  const style = getComputedStyle(document.documentElement);
  const max = Math.max(1, ...history.map((p) => p[1]));
  const x = (dt) => w + (dt / 60) * w; /* dt: seconds before now, negative */
  const y = (bps) => h - 4 - (bps / max) * (h - 10);
  const accent = style.getPropertyValue('--accent').trim() || '#1d4ed8';
  if (history.length) {
    ctx.beginPath();
    history.forEach((p, i) => (i ? ctx.lineTo(x(p[0]), y(p[1])) : ctx.moveTo(x(p[0]), y(p[1]))));
    ctx.strokeStyle = accent;
    ctx.lineWidth = 2;
    ctx.stroke();
    ctx.lineTo(x(history[history.length - 1][0]), h);
    ctx.lineTo(x(history[0][0]), h);
    ctx.closePath();
    ctx.globalAlpha = 0.15;
    ctx.fillStyle = accent;
    ctx.fill();
    ctx.globalAlpha = 1;
  }
  ctx.fillStyle = style.getPropertyValue('--muted').trim() || '#4b5563';
  ctx.font = '12px system-ui, sans-serif';
  ctx.fillText('MB/s, last minute · peak ' + (max / 1e6).toFixed(1), 4, 14);
  canvas.setAttribute('aria-label', 'Throughput over the last minute, peak ' +
    (max / 1e6).toFixed(1) + ' MB/s');
}

function figure(label, value) {
  return el('div', null, el('dt', { text: label }), el('dd', { text: value }));
}

function renderActive(s) {
  const label = s.card_label || s.source || 'card';
  const pct = Math.max(0, Math.min(100, s.progress || 0));
  const bar = el('span');
  bar.style.width = pct.toFixed(1) + '%';
  const chart = el('canvas', { class: 'chart', role: 'img' });
  const dests = el('ul', { class: 'dests', 'aria-label': 'Destinations of this backup' });
  for (const d of s.destinations || []) {
    const cls = d.failed || d.down ? 'bad' : d.pending ? 'warn' : 'ok';
    const word = d.down ? 'down' : d.failed ? d.failed + ' failed' : d.pending ? 'copying' : 'ok';
    const why = d.down ? d.problem || 'not answering' : d.error;
    dests.append(el('li', null, el('span', { class: 'tag ' + cls, text: word }),
      d.name + ': ' + d.completed + ' verified' + (why ? ' — ' + why : '')));
  }
  const card = el('article', { class: 'cardrun', 'data-session': String(s.id) },
    el('h3', { text: label }),
    el('div', { class: 'bar', role: 'progressbar', 'aria-label': 'Progress of ' + label,
      'aria-valuemin': '0', 'aria-valuemax': '100', 'aria-valuenow': pct.toFixed(0) }, bar),
    el('dl', { class: 'figures' },
      figure('Progress', pct.toFixed(0) + ' %'),
      figure('Files', s.files_done + ' / ' + s.files_total),
      figure('Data', bytes(s.bytes_done) + ' / ' + bytes(s.bytes_total)),
      figure('Speed', (s.rate_bps / 1e6).toFixed(1) + ' MB/s'),
      figure('Time left', s.eta_s == null ? '–' : duration(s.eta_s))),
    el('p', { class: 'current', text: s.current_file ? 'Now: ' + s.current_file :
      (s.status === 'scanning' ? 'Looking for photos and videos…' : '') }),
    chart, dests);
  requestAnimationFrame(() => drawChart(chart, s.history || []));
  return card;
}

function renderStatus(st) {
  lastStatus = st;
  $('name').textContent = st.name || 'SnapSync';
  document.title = (st.active.length ? Math.round(st.active[0].progress) + '% · ' : '') +
    (st.name || 'SnapSync');
  $('footer').textContent = 'SnapSync ' + st.version + (st.mode === 'service' ? '' :
    ' · dashboard only (snapsync web): eject needs the service');
  const state = $('state'), detail = $('state-detail');
  if (st.active.length) {
    state.textContent = st.state === 'scanning' ? 'Scanning card' :
      st.active.length > 1 ? 'Backing up ' + st.active.length + ' cards' : 'Backing up';
    detail.textContent = st.active.map((s) => s.card_label || s.source).join(', ');
  } else {
    state.textContent = 'Idle';
    detail.textContent = st.database === 'missing' ? 'No backup has run yet. Insert a card.' :
      st.database === 'ok' ? 'Insert a card to back it up.' : (st.database_error || '');
  }
  const banner = $('banner');
  const last = st.last;
  banner.hidden = true;
  if (!st.active.length && last) {
    const label = last.card_label || last.source;
    if (last.status === 'empty') {
      banner.className = 'banner ok';
      banner.textContent = 'No photos or videos on ' + label + ': nothing to back up' +
        (last.safe_to_remove ? '; unmounted, safe to remove.' : '.');
    } else if (last.safe_to_remove) {
      banner.className = 'banner ok';
      banner.textContent = 'Safe to remove: ' + label + ' is backed up and unmounted.';
    } else if (last.status === 'completed') {
      banner.className = 'banner ok';
      banner.textContent = 'Backup of ' + label + ' complete: every file verified.';
    } else {
      banner.className = last.status === 'failed' ? 'banner bad' : 'banner warn';
      banner.textContent = 'Last backup of ' + label + ' ' + last.status.replace('_', ' ') +
        (last.files_failed ? ': ' + count(last.files_failed, 'file') + ' failed' : '') +
        (last.error ? ' — ' + last.error : '');
      const problems = scanProblems(last);
      if (problems) banner.append(problems);
    }
    banner.hidden = false;
  }
  const active = $('active');
  active.replaceChildren(...st.active.map(renderActive));
  renderNotifications(st.notifications);

  const t = st.stats || {};
  $('stats').replaceChildren(
    figure('Sessions', String(t.sessions || 0)),
    figure('Cards', String(t.cards || 0)),
    figure('Files backed up', String(t.files_completed || 0)),
    figure('Data backed up', bytes(t.bytes_completed || 0)),
    figure('Duplicates', String(t.files_duplicate || 0)),
    figure('Failed', String(t.files_failed || 0)));

  const key = JSON.stringify([t, last && last.id, st.active.map((s) => s.files_done)]);
  if (key !== listKey || Date.now() - listsAt > LIST_REFRESH_MS) {
    listKey = key;
    listsAt = Date.now();
    refreshLists();
  }
}

/* The notification outbox: how many deliveries wait, and the latest given up with their last
 * error. The card shows only when there is something to say. */
function renderNotifications(n) {
  const failed = (n && n.failed) || [];
  const pending = (n && n.pending) || 0;
  $('notify').closest('section').hidden = !failed.length && !pending;
  $('notify-summary').textContent = (pending ? count(pending, 'notification') +
    ' waiting to be delivered: the service keeps trying.' : 'None waiting to be delivered.') +
    (failed.length ? ' Given up, newest first:' : '');
  $('notify').replaceChildren(...failed.map((f) => el('li', null,
    el('div', { class: 'what' },
      el('div', null, el('span', { class: 'tag bad', text: 'not sent' }),
        el('span', { class: 'channel', text: f.channel })),
      el('div', { class: 'err', text: f.error || 'failed' }),
      el('div', { class: 'sub', text: (f.event ? f.event.replace('_', ' ') + ' · ' : '') +
        'queued ' + when(f.queued_at) + ' · ' + count(f.attempts, 'attempt') })))));
}

/* ---- lists ---- */

function renderFailed(files) {
  $('failed-empty').textContent = 'No failed files.';
  $('failed-empty').hidden = files.length > 0;
  $('failed').replaceChildren(...files.map((f) => {
    const btn = el('button', { type: 'button', text: 'Retry',
      'aria-label': 'Retry ' + f.path });
    btn.addEventListener('click', async () => {
      btn.disabled = true;
      try {
        const r = await action('api/files/' + f.id + '/retry');
        message(r.marked ? f.path + ' will be copied again by the next backup of its card.' :
          f.path + ' had nothing left to retry.', true);
        refreshLists();
      } catch (e) {
        message(e.message);
        btn.disabled = false;
      }
    });
    return el('li', { 'data-file': String(f.id) },
      el('div', { class: 'what' }, el('div', { text: f.path }),
        el('div', { class: 'err', text: f.error || 'failed' }),
        el('div', { class: 'sub', text: bytes(f.size) + ' · ' + count(f.attempts, 'attempt') })),
      btn);
  }));
}

function filesTable(detail, body) {
  const rows = detail.files.map((f) => el('tr', null,
    el('td', { class: 'path', text: f.path }),
    el('td', { text: f.outcome }),
    el('td', { text: bytes(f.size) }),
    el('td', { class: 'copies', text: (f.copies || []).map((c) =>
      destLabel(c.destination) + ': ' + c.state.replace('_', ' ')).join('; ') || '–' })));
  const table = el('table', null,
    el('caption', { class: 'sr-only', text: 'Files of session ' + detail.id }),
    el('thead', null, el('tr', null, el('th', { scope: 'col', text: 'File' }),
      el('th', { scope: 'col', text: 'Outcome' }), el('th', { scope: 'col', text: 'Size' }),
      el('th', { scope: 'col', text: 'Copies' }))),
    el('tbody', null, ...rows));
  const report = 'api/sessions/' + detail.id + '/report?format=';
  const links = el('p', { class: 'report' },
    el('a', { href: report + 'html', target: '_blank', rel: 'noopener',
      text: 'Report of this session (printable)' }), ' · ',
    el('a', { href: report + 'json', target: '_blank', rel: 'noopener', text: 'JSON' }), ' · ',
    el('a', { href: report + 'text', target: '_blank', rel: 'noopener', text: 'text' }));
  body.replaceChildren(...[scanProblems(detail), table, links].filter((x) => x));
  const page = detail.files_page;
  if (page.offset + detail.files.length < page.total) {
    const more = el('button', { type: 'button', class: 'more',
      text: 'Show more (' + (page.total - page.offset - detail.files.length) + ' left)' });
    more.addEventListener('click', async () => {
      more.disabled = true;
      const next = await getJSON('api/sessions/' + detail.id + '?offset=' +
        (page.offset + page.limit) + '&limit=' + page.limit);
      detail.files = detail.files.concat(next.files);
      detail.files_page = { offset: page.offset, limit: page.limit, total: next.files_page.total };
      filesTable(detail, body);
    });
    body.append(more);
  }
  if (detail.files_failed > 0) {
    const retry = el('button', { type: 'button', class: 'more', text: 'Retry failed files' });
    retry.addEventListener('click', async () => {
      retry.disabled = true;
      try {
        const r = await action('api/sessions/' + detail.id + '/retry');
        message(count(r.marked, 'file') + ' will be copied again by the next backup.', true);
        refreshLists();
      } catch (e) {
        message(e.message);
        retry.disabled = false;
      }
    });
    body.append(' ', retry);
  }
}

function renderSessions(list) {
  $('sessions-empty').textContent = 'No backups yet.';
  $('sessions-empty').hidden = list.length > 0;
  $('sessions').replaceChildren(...list.map((s) => {
    const body = el('div', { class: 'files', text: 'Loading…' });
    const summary = el('summary', null,
      el('span', { class: 'line' }, statusTag(s.status), s.card_label || s.source),
      el('span', { class: 'meta', text: when(s.started_at) + ' · ' + count(s.files_total, 'file') + ', ' +
        s.files_copied + ' copied (' + bytes(s.bytes_copied) + '), ' + s.files_skipped +
        ' already backed up' + (s.files_failed ? ', ' + s.files_failed + ' failed' : '') +
        (s.scan_problems ? ', ' + s.scan_problems + ' unreadable' : '') }));
    const d = el('details', { 'data-session': String(s.id) }, summary, body);
    const load = async () => {
      try {
        filesTable(await getJSON('api/sessions/' + s.id + '?limit=100'), body);
      } catch (e) {
        body.textContent = e.message;
      }
    };
    d.addEventListener('toggle', () => {
      if (d.open) { openSessions.add(s.id); load(); } else { openSessions.delete(s.id); }
    });
    if (openSessions.has(s.id)) { d.open = true; }
    return el('li', null, d);
  }));
}

function renderHealth(h) {
  destLabels = new Map((h.destinations || []).map((d) => [d.name, d.label || d.name]));
  if (lastVerification) renderVerification(lastVerification);
  const items = (h.destinations || []).map((d) => el('li', null,
    el('span', { class: 'tag ' + (d.ok ? 'ok' : 'bad'), text: d.ok ? 'reachable' : 'problem' }),
    (d.label || d.name) + (d.detail ? ' — ' + d.detail : '')));
  if (h.mqtt && h.mqtt.enabled)
    items.push(el('li', null, el('span', { class: 'tag ' + (h.mqtt.ok ? 'ok' : 'bad'),
      text: h.mqtt.ok ? 'reachable' : 'problem' }), 'Home Assistant (MQTT)' +
      (h.mqtt.detail ? ' — ' + h.mqtt.detail : '')));
  if (h.error) items.push(el('li', null, el('span', { class: 'tag bad', text: 'problem' }), h.error));
  if (!items.length) items.push(el('li', { class: 'empty', text: 'Checking…' }));
  $('health').replaceChildren(...items);
  $('health-checked').textContent = h.checked_at ? 'Checked ' + when(h.checked_at) : '';
}

/* The last verification run and the copies it (or an earlier one) found missing or changed. */
function renderVerification(v) {
  lastVerification = v;
  const summary = $('verify-summary'), more = $('verify-more');
  const run = v.last_run;
  if (!run) {
    summary.className = 'empty';
    summary.replaceChildren('Never verified. Run ', el('code', { text: 'snapsync verify' }),
      ' to read the stored copies back and compare them with their checksums, or set ',
      el('code', { text: 'backup.verify_interval_days' }),
      ' to have the service check them regularly.');
  } else {
    const t = run.running ? 'Verifying since ' + when(run.started_at) :
      'Last run ' + when(run.ended_at || run.started_at);
    summary.className = 'sub';
    summary.replaceChildren(statusTag(run.status), t + ' (' + run.scope + '): ' +
      count(run.checked, 'copy', 'copies') + ' checked, ' + run.ok + ' ok' +
      (run.missing ? ', ' + run.missing + ' missing' : '') +
      (run.changed ? ', ' + run.changed + ' changed' : '') +
      (run.errors ? ', ' + run.errors + ' could not be checked' : '') + '.');
  }
  const problems = v.problems || [];
  if (run || problems.length) {
    summary.append(el('div', { class: 'verify-open', text: v.problems_total ?
      count(v.problems_total, 'copy', 'copies') + ' with problems:' :
      'No open problems: every copy checked was as it was made.' }));
  }
  $('verify-problems').replaceChildren(...problems.map((p) => el('li', { 'data-file': String(p.file_id) },
    el('div', { class: 'what' },
      el('div', null, el('span', { class: 'tag bad', text: p.result }),
        el('span', { class: 'path', text: p.card_path })),
      el('div', { class: 'err', text: destLabel(p.dest) + ': ' + p.path +
        (p.detail ? ' — ' + p.detail : '') }),
      el('div', { class: 'sub', text: 'checked ' + when(p.checked_at) })))));
  const left = (v.problems_total || 0) - problems.length;
  more.hidden = left <= 0;
  more.textContent = left > 0 ? 'and ' + left + ' more (snapsync verify names them all)' : '';
}

async function refreshLists() {
  const jobs = [
    getJSON('api/verification?limit=100').then(renderVerification),
    getJSON('api/files?status=failed&limit=50').then(renderFailed),
    getJSON('api/sessions?limit=10').then(renderSessions),
    getJSON('api/health').then(renderHealth),
  ];
  for (const r of await Promise.allSettled(jobs))
    if (r.status === 'rejected') console.warn(r.reason);
}

/* ---- live updates ---- */

function setConn(text, cls) {
  const c = $('conn');
  c.textContent = text;
  c.className = 'conn ' + cls;
}

async function poll() {
  try {
    renderStatus(await getJSON('api/status'));
    if (Date.now() - lastEventAt > POLL_MS + 1000) setConn('Updating every 5 s', 'poll');
  } catch (e) {
    setConn('Cannot reach SnapSync', 'poll');
  }
}

function startEvents() {
  if (!window.EventSource) return;
  const es = new EventSource('api/events');
  es.addEventListener('state', (ev) => {
    lastEventAt = Date.now();
    setConn('Live', 'live');
    try { renderStatus(JSON.parse(ev.data)); } catch (e) { console.warn(e); }
  });
  es.addEventListener('error', () => {
    if (Date.now() - lastEventAt > POLL_MS) setConn('Reconnecting…', 'poll');
  });
}

function start() {
  $('token-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    localStorage.setItem('snapsync-token', $('token').value);
    $('token').value = '';
    $('token-form').hidden = true;
    message('Token saved in this browser.', true);
  });
  window.addEventListener('resize', () => lastStatus && renderStatus(lastStatus));
  poll();
  startEvents();
  /* the fallback: when no event came for a while (proxy, old browser), poll */
  pollTimer = setInterval(() => {
    if (Date.now() - lastEventAt > POLL_MS) poll();
  }, POLL_MS);
}

document.addEventListener('DOMContentLoaded', start);
