// The dashboard: a hash router over three views (endpoint list, registration, endpoint page).
// Every view draws with textContent only (device data is never parsed as HTML) and refreshes
// itself by polling while the tab is visible.

import { ApiError, call, enc, get, query, session } from './api.js';
import { lineChart, linesFromEpts } from './chart.js';

const POLL_MS = 2000;
const PAGE_SIZE = 25;
const $ = (id) => document.getElementById(id);

// h('p', {class: 'x'}, 'text', child): an element; attributes starting with `on` are listeners.
function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on')) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? '' : String(v));
  }
  node.append(...children.flat().filter((c) => c !== undefined && c !== null));
  return node;
}

// A labelled form control; `control` is an element with an id.
const field = (label, control, hint) =>
  h('div', { class: 'field' }, h('label', { for: control.id }, label), control, hint && h('small', {}, hint));

const announce = (text) => {
  $('status').textContent = text;
};

const errorText = (e) => (e instanceof ApiError ? `${e.message} (${e.status || 'no answer'})` : String(e));

const pretty = (value) => JSON.stringify(value, null, 2);

function parseJson(text, what) {
  try {
    return text.trim() === '' ? {} : JSON.parse(text);
  } catch (e) {
    throw new Error(`${what} is not valid JSON: ${e.message}`);
  }
}

const when = (ms) => (ms ? new Date(Number(ms)).toLocaleString() : '');

// Connectivity as EPL keeps it in the metadata: `connected` and `connectivity_ts` (ms).
function connectivity(metadata = {}) {
  const online = metadata.connected === true;
  return h(
    'span',
    { class: `conn ${online ? 'on' : 'off'}`, title: when(metadata.connectivity_ts) },
    h('span', { class: 'dot', 'aria-hidden': 'true' }),
    online ? 'online' : 'offline',
  );
}

// Runs `tick` now and every POLL_MS while the tab is visible; returns a stop function.
function poll(tick) {
  let timer = 0;
  let stopped = false;
  const run = async () => {
    if (stopped) return;
    if (!document.hidden) {
      try {
        await tick();
      } catch (e) {
        if (!(e instanceof ApiError && e.status === 401)) announce(errorText(e));
      }
    }
    if (!stopped) timer = setTimeout(run, POLL_MS);
  };
  run();
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}

// Applications and versions, asked once per login.
let appsCache = null;
async function applications() {
  appsCache ??= await get('/epr/api/v1/applications');
  return appsCache;
}

async function versionSelect(id, selected) {
  const apps = await applications();
  const select = h('select', { id });
  for (const app of apps) {
    const group = h('optgroup', { label: app.name });
    for (const v of app.versions) group.append(h('option', { value: v, selected: v === selected }, v));
    select.append(group);
  }
  return select;
}

// ---- Endpoint list -------------------------------------------------------------------------

const prefs = {
  get: (k, d) => localStorage.getItem(`kaa.${k}`) ?? d,
  set: (k, v) => localStorage.setItem(`kaa.${k}`, v),
};

async function listView(view) {
  const version = await versionSelect('version', prefs.get('version', ''));
  const columns = h('input', { id: 'columns', value: prefs.get('columns', 'model,mac'), list: 'keys', spellcheck: 'false' });
  const search = h('input', { id: 'search', type: 'search', placeholder: 'id or metadata value' });
  const keys = h('datalist', { id: 'keys' });
  const table = h('table', { class: 'endpoints' });
  const pager = h('div', { class: 'pager' });
  let offset = 0;
  let page = null;
  // The ETag of the page shown: polls ask If-None-Match and get a bodiless 304 until it changes.
  let etag = '';

  const cols = () => columns.value.split(',').map((c) => c.trim()).filter(Boolean);

  function render() {
    const needle = search.value.trim();
    const rows = page.content;
    table.replaceChildren(
      h('caption', {}, `Endpoints of ${version.value}`),
      h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, 'Status'), h('th', { scope: 'col' }, 'Endpoint'),
        cols().map((c) => h('th', { scope: 'col' }, c)), h('th', { scope: 'col' }, 'Last change'))),
      h('tbody', {}, rows.map((e) => {
        const md = e.metadata ?? {};
        return h('tr', { 'data-endpoint': e.endpointId },
          h('td', {}, connectivity(md)),
          h('td', {}, h('a', { href: `#/endpoints/${enc(e.endpointId)}` }, e.endpointId)),
          cols().map((c) => h('td', { 'data-key': c }, md[c] === undefined ? '' : typeof md[c] === 'string' ? md[c] : JSON.stringify(md[c]))),
          h('td', {}, when(md.connectivity_ts)));
      })),
    );
    if (rows.length === 0) table.append(h('tbody', {}, h('tr', {}, h('td', { colspan: cols().length + 3, class: 'muted' }, needle ? 'No endpoint matches.' : 'No endpoints yet: register one.'))));
    const total = page.totalElements;
    const last = Math.min(offset + PAGE_SIZE, total);
    pager.replaceChildren(
      h('button', { type: 'button', disabled: offset === 0, onclick: () => move(-PAGE_SIZE) }, 'Previous'),
      h('span', {}, total ? `${offset + 1}–${last} of ${total}` : '0 endpoints'),
      h('button', { type: 'button', disabled: last >= total, onclick: () => move(PAGE_SIZE) }, 'Next'),
    );
    const seen = new Set(page.content.flatMap((e) => Object.keys(e.metadata ?? {})));
    keys.replaceChildren(...[...seen].sort().map((k) => h('option', { value: k })));
  }

  async function refresh() {
    // EPR searches every endpoint of the version (id and metadata), not just this page.
    const params = { applicationVersionName: version.value, offset, limit: PAGE_SIZE, include: 'metadata' };
    if (search.value.trim()) params.search = search.value.trim();
    const path = `/epr/api/v1/endpoints?${query(params)}`;
    const { status, headers, data } = await call('GET', path, undefined, etag ? { 'If-None-Match': etag } : {});
    // Redraw only when something changed: polling stays cheap for the server, the page and the reader.
    if (status === 304) return;
    etag = headers.get('ETag') ?? '';
    page = data;
    render();
  }

  function move(delta) {
    offset = Math.max(0, offset + delta);
    etag = '';
    refresh().catch((e) => announce(errorText(e)));
  }

  version.addEventListener('change', () => {
    prefs.set('version', version.value);
    offset = 0;
    move(0);
  });
  columns.addEventListener('change', () => {
    prefs.set('columns', cols().join(','));
    if (page) render();
  });
  // Searching starts from the first page, once typing pauses.
  let typing;
  search.addEventListener('input', () => {
    clearTimeout(typing);
    typing = setTimeout(() => { offset = 0; move(0); }, 250);
  });

  view.append(
    h('h1', {}, 'Endpoints'),
    h('form', { class: 'controls', onsubmit: (e) => e.preventDefault() },
      field('Application version', version),
      field('Metadata columns', columns, 'comma-separated keys'),
      field('Search', search)),
    keys,
    h('div', { class: 'scroll' }, table),
    pager,
  );
  return poll(refresh);
}

// ---- Registration --------------------------------------------------------------------------

async function registerView(view) {
  const version = await versionSelect('reg-version', prefs.get('version', ''));
  const token = h('input', { id: 'reg-token', spellcheck: 'false', autocomplete: 'off' });
  const metadata = h('textarea', { id: 'reg-metadata', rows: 4, spellcheck: 'false' }, '{"model": "", "mac": ""}');
  const result = h('div', { role: 'region', 'aria-live': 'polite', 'aria-label': 'Registration result' });
  const submit = h('button', { type: 'submit' }, 'Register');

  async function register(event) {
    event.preventDefault();
    submit.disabled = true;
    result.replaceChildren();
    try {
      const body = { appVersion: { name: version.value }, metadata: parseJson(metadata.value, 'Metadata') };
      if (token.value.trim()) body.endpointToken = token.value.trim();
      const created = (await call('POST', '/epr/api/v1/endpoints', body)).data;
      // Without a chosen token, the credential service issues one (its only answer holding it).
      const issued = created.endpointToken ?? (await call('POST', `/cm/api/v1/endpoints/${enc(created.endpointId)}/tokens`, {})).data.token;
      showToken(created.endpointId, version.value, issued);
      token.value = '';
    } catch (e) {
      result.append(h('p', { class: 'error', role: 'alert' }, errorText(e)));
    } finally {
      submit.disabled = false;
    }
  }

  function showToken(id, av, secret) {
    const line = `mosquitto_pub -h ${location.hostname} -p 1883 -t kp1/${av}/epmx/${secret}/update/keys -m '{"model":"MySmartMeter A300","mac":"00-14-22-01-23-45"}'`;
    const code = h('pre', { id: 'device-command', tabindex: 0 }, h('code', {}, line));
    result.append(
      h('div', { class: 'card ok' },
        h('h2', {}, 'Endpoint registered'),
        h('p', {}, 'Endpoint ', h('a', { href: `#/endpoints/${enc(id)}`, id: 'new-endpoint' }, id), '.'),
        h('p', {}, 'Its token, shown this once: ', h('code', { id: 'new-token' }, secret)),
        h('p', {}, 'The device reports its metadata with (MQTT port of the gateway: 1883 by default):'),
        code,
        h('button', { type: 'button', onclick: () => copy(line) }, 'Copy command')),
    );
  }

  view.append(
    h('h1', {}, 'Register an endpoint'),
    h('form', { class: 'card', onsubmit: register },
      field('Application version', version),
      field('Endpoint token (optional)', token, 'leave empty to have one issued'),
      field('Metadata (JSON object)', metadata),
      submit),
    result,
  );
  return () => {};
}

async function copy(text) {
  try {
    await navigator.clipboard.writeText(text);
    announce('Copied.');
  } catch {
    announce('Copying is not allowed here: select the text instead.');
  }
}

// ---- Endpoint page -------------------------------------------------------------------------

const RANGES = [['now-15m', 'last 15 minutes'], ['now-1h', 'last hour'], ['now-6h', 'last 6 hours'], ['now-24h', 'last 24 hours'], ['now-7d', 'last 7 days']];
const RANGE_MS = { 'now-15m': 9e5, 'now-1h': 36e5, 'now-6h': 216e5, 'now-24h': 864e5, 'now-7d': 6048e5 };

async function endpointView(view, id) {
  const endpoint = await get(`/epr/api/v1/endpoints/${enc(id)}?include=metadata`);
  const app = endpoint.applicationName;
  const av = endpoint.appVersion.name;
  const status = h('p', { id: 'connectivity' });
  view.append(h('h1', {}, 'Endpoint ', h('code', {}, id)), h('p', { class: 'muted' }, `${app ?? ''} · ${av}`), status);

  const parts = [chartPart(id, app), metadataPart(id, status), configPart(id, av), commandPart(id)];
  for (const part of parts) view.append(part.node);
  const stop = poll(async () => {
    await Promise.all(parts.map((p) => p.refresh()));
  });
  return () => {
    stop();
    parts.forEach((p) => p.stop?.());
  };
}

// A titled section with a message line (under the title) for errors and confirmations.
function section(title, id) {
  const message = h('p', { class: 'message', role: 'status' });
  const node = h('section', { class: 'card', 'aria-labelledby': `${id}-title`, id }, h('h2', { id: `${id}-title` }, title), message);
  const say = (text, bad = false) => {
    message.textContent = text;
    message.className = bad ? 'message error' : 'message';
  };
  return { node, say };
}

// A textarea that polling must not overwrite while the user edits it.
function editor(id, rows) {
  const area = h('textarea', { id, rows, spellcheck: 'false' });
  area.dirty = false;
  area.addEventListener('input', () => {
    area.dirty = true;
  });
  area.show = (text) => {
    if (!area.dirty) area.value = text;
  };
  return area;
}

function metadataPart(id, status) {
  const { node, say } = section('Metadata', 'metadata');
  const list = h('dl', { class: 'kv' });
  const area = editor('metadata-json', 6);
  let etag = null;
  const save = async (event) => {
    event.preventDefault();
    try {
      const headers = etag ? { 'If-Match': etag } : {};
      await call('PUT', `/epr/api/v1/endpoints/${enc(id)}/metadata`, parseJson(area.value, 'Metadata'), headers);
      area.dirty = false;
      say('Saved.');
      await refresh();
    } catch (e) {
      say(e.status === 412 ? 'The metadata changed meanwhile: reload it and edit again.' : errorText(e), true);
    }
  };
  const reload = () => {
    area.dirty = false;
    refresh();
  };
  node.append(list, h('form', { onsubmit: save }, field('Edit (JSON object)', area),
    h('div', { class: 'buttons' }, h('button', { type: 'submit' }, 'Save metadata'), h('button', { type: 'button', class: 'secondary', onclick: reload }, 'Reload'))));
  async function refresh() {
    const { headers, data } = await call('GET', `/epr/api/v1/endpoints/${enc(id)}/metadata`);
    etag = headers.get('ETag');
    list.replaceChildren(...Object.entries(data).flatMap(([k, v]) => [h('dt', {}, k), h('dd', { 'data-key': k }, typeof v === 'string' ? v : JSON.stringify(v))]));
    status.replaceChildren(connectivity(data), data.connectivity_ts ? ` since ${when(data.connectivity_ts)}` : '');
    area.show(pretty(data));
  }
  return { node, refresh };
}

function chartPart(id, app) {
  const { node, say } = section('Telemetry', 'telemetry');
  const series = h('select', { id: 'series' });
  const range = h('select', { id: 'range' }, RANGES.map(([v, label]) => h('option', { value: v, selected: v === 'now-1h' }, label)));
  const figure = h('figure', { class: 'plot' });
  let known = '';
  let ticks = 0;
  node.append(h('div', { class: 'controls' }, field('Series', series), field('Time range', range)), figure);
  const draw = async () => {
    if (!series.value) return;
    const from = range.value;
    const answer = await get(`/epts/api/v1/applications/${enc(app)}/time-series/data?${query({ timeSeriesName: series.value, endpointId: id, fromDate: from, toDate: 'now', sort: 'ASC' })}`);
    const now = Date.now();
    figure.replaceChildren(lineChart(linesFromEpts(answer, id, series.value), { title: `${series.value}, ${range.selectedOptions[0].textContent}`, from: now - RANGE_MS[from], to: now }),
      h('figcaption', {}, `${series.value} of this endpoint`));
  };
  series.addEventListener('change', () => draw().catch((e) => say(errorText(e), true)));
  range.addEventListener('change', () => draw().catch((e) => say(errorText(e), true)));
  async function refresh() {
    if (!app) return say('This endpoint has no application: no time series.', true);
    // The series list changes rarely: ask again every fifth tick.
    if (ticks++ % 5 === 0) {
      const config = await get(`/epts/api/v1/time-series/config?${query({ applicationNames: app })}`);
      const names = (config?.[app] ?? []).map((s) => s.name);
      if (names.join() !== known) {
        known = names.join();
        const keep = series.value;
        const first = names.find((n) => n.startsWith('auto~')) ?? names[0];
        series.replaceChildren(...names.map((n) => h('option', { value: n, selected: n === (keep || first) }, n)));
      }
      if (!known) say('No time series yet: the device sends samples to dcx.');
      else say('');
    }
    await draw();
  }
  return { node, refresh };
}

function configPart(id, av) {
  const { node, say } = section('Configuration', 'configuration');
  const current = h('dl', { class: 'kv' });
  const area = editor('config-json', 6);
  const base = `/ecr/api/v1/endpoints/${enc(id)}/app-versions/${enc(av)}`;
  const push = async (event) => {
    event.preventDefault();
    try {
      const pushed = (await call('PUT', base, parseJson(area.value, 'Configuration'))).data;
      area.dirty = false;
      say(`Pushed configuration ${pushed.configId}.`);
      await refresh();
    } catch (e) {
      say(errorText(e), true);
    }
  };
  node.append(current, h('form', { onsubmit: push }, field('Configuration for this endpoint (JSON)', area),
    h('button', { type: 'submit' }, 'Push to this endpoint')));
  const optional = (path) => get(path).catch((e) => (e.status === 404 ? null : Promise.reject(e)));
  async function refresh() {
    const [override, defaults, statuses] = await Promise.all([
      optional(base), optional(`/ecr/api/v1/app-versions/${enc(av)}`), get(`/ecr/api/v1/statuses?${query({ endpointId: id })}`),
    ]);
    const doc = override ?? defaults;
    const st = statuses?.content?.[0];
    current.replaceChildren(
      h('dt', {}, 'Source'), h('dd', {}, override ? 'this endpoint' : defaults ? 'application version default' : 'none'),
      h('dt', {}, 'Config id'), h('dd', {}, doc?.configId ?? '—'),
      h('dt', {}, 'State'), h('dd', { id: 'config-state' }, st ? `${st.status}${st.configId ? ` (${st.configId})` : ''}` : 'not sent yet'),
      h('dt', {}, 'Last confirmed'), h('dd', {}, when(st?.lastConfirmedDate) || '—'),
    );
    let text = '{}';
    try {
      text = doc ? pretty(JSON.parse(doc.config)) : '{}';
    } catch {
      text = doc.config;
    }
    area.show(text);
  }
  return { node, refresh };
}

function commandPart(id) {
  const { node, say } = section('Commands', 'commands');
  const type = h('input', { id: 'command-type', value: 'reboot', pattern: '[A-Za-z0-9_-]{1,64}', required: true, spellcheck: 'false' });
  const payload = h('textarea', { id: 'command-payload', rows: 3, spellcheck: 'false' }, '{}');
  const wait = h('input', { id: 'command-wait', type: 'number', min: 0, max: 60, value: 10 });
  const log = h('ol', { class: 'results', id: 'command-results', reversed: true });
  const followers = new Set();
  const show = (item, command) => {
    const r = command.result;
    item.replaceChildren(
      h('strong', {}, `${command.commandType} #${command.id}`), ` ${command.state}`,
      r ? h('pre', {}, `${r.statusCode}${r.reasonPhrase ? ` ${r.reasonPhrase}` : ''} ${r.payload === undefined ? '' : pretty(r.payload)}`) : '',
    );
    item.dataset.state = command.state;
  };
  // A command the device has not answered yet: asked again until it is completed or expired.
  const follow = (item, command) => {
    const path = `/cex/api/v1/endpoints/${enc(id)}/commands/${enc(command.commandType)}/${command.id}`;
    followers.add(path);
    const again = async () => {
      if (!followers.has(path)) return;
      try {
        const latest = await get(path);
        show(item, latest);
        if (latest.state === 'completed' || latest.state === 'expired') return followers.delete(path);
      } catch (e) {
        say(errorText(e), true);
      }
      setTimeout(again, POLL_MS);
    };
    setTimeout(again, POLL_MS);
  };
  const send = async (event) => {
    event.preventDefault();
    try {
      const path = `/cex/api/v1/endpoints/${enc(id)}/commands/${enc(type.value)}?${query({ awaitTimeout: wait.value || 0 })}`;
      say(`Sending ${type.value}…`);
      const { status, data } = await call('POST', path, parseJson(payload.value, 'Payload'));
      const item = h('li');
      log.prepend(item);
      show(item, data);
      say(status === 200 ? `${type.value} answered.` : `${type.value} waits for the device.`);
      if (status !== 200) follow(item, data);
    } catch (e) {
      say(errorText(e), true);
    }
  };
  node.append(h('form', { onsubmit: send },
    h('div', { class: 'controls' }, field('Command type', type), field('Wait for the answer (s)', wait)),
    field('Payload (JSON)', payload), h('button', { type: 'submit' }, 'Send command')), log);
  return { node, refresh: async () => {}, stop: () => followers.clear() };
}

// ---- Shell ---------------------------------------------------------------------------------

let stopView = () => {};

async function route() {
  stopView();
  stopView = () => {};
  const view = $('view');
  view.replaceChildren();
  const loggedIn = Boolean(session.token());
  $('login').hidden = loggedIn;
  $('nav').hidden = !loggedIn;
  if (!loggedIn) {
    $('token').focus();
    return;
  }
  const [, page, arg] = location.hash.split('/');
  for (const a of $('nav').querySelectorAll('a')) {
    if (a.getAttribute('href') === `#/${page ?? ''}`) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  try {
    if (page === 'register') stopView = await registerView(view);
    else if (page === 'endpoints' && arg) stopView = await endpointView(view, decodeURIComponent(arg));
    else stopView = await listView(view);
  } catch (e) {
    view.append(h('p', { class: 'error', role: 'alert' }, errorText(e)));
  }
  document.title = `${view.querySelector('h1')?.textContent ?? 'Dashboard'} · kaa-rs`;
}

$('login-form').addEventListener('submit', async (event) => {
  event.preventDefault();
  session.login($('token').value.trim());
  $('token').value = '';
  appsCache = null;
  try {
    await applications();
    $('login-error').textContent = '';
    await route();
    $('main').focus();
  } catch (e) {
    session.logout();
    $('login-error').textContent = e instanceof ApiError && e.status === 401 ? 'That is not the admin token.' : errorText(e);
  }
});

$('logout').addEventListener('click', () => {
  session.logout();
  route();
});

window.addEventListener('kaa:unauthorized', () => {
  $('login-error').textContent = 'The admin token was refused: log in again.';
  route();
});
window.addEventListener('hashchange', route);
route();
