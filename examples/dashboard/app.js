// The user-service dashboard: live events from the gateway (WebSocket, cqrs.v1.json), a chart
// of their rate, the users derived from them, and a form that sends commands.
//
// Resume (proto/README.md, 8.3): the page remembers the epoch and the last offset it processed.
// After a dropped connection it subscribes again from that offset with that epoch, and the
// gateway replays what was missed, with no gap and no duplicate. When the server comes back
// with a new epoch (an in-memory log restarted), the old history is gone: the page says so and
// starts over from offset 0 of the new epoch.

'use strict';

const CHANNELS = ['*'];
const MAX_EVENT_ROWS = 500;
const MAX_USER_ROWS = 100;
const CHART_SECONDS = 60;
const BACKOFF = { initialMs: 500, factor: 1.8, maxMs: 10000, jitter: 0.2 };

const $ = (selector) => document.querySelector(selector);

// Everything the page knows; offsets and epochs are decimal strings on the wire, BigInt here.
const state = {
  epoch: null,  // BigInt once the first subscription is confirmed.
  lastOffset: 0n,  // Last offset processed; the next subscribe resumes after it.
  liveAfter: 0n,  // Events after this offset arrived live (highlighted); the rest are replayed.
  eventCount: 0,
  users: new Map(),  // userId -> {name, updated}, in the order of creation.
  perSecond: new Map(),  // Unix second -> events with that timestamp.
};

const connection = {
  socket: null,
  attempt: 0,  // Failed connection attempts since the last successful subscribe.
  retryTimer: null,
  countdownTimer: null,
  subscriptions: 0,
  wasLive: false,
  paused: false,  // Disconnected on purpose (cqrsDashboard.disconnect()): no reconnect.
  startedOver: false,  // The current subscription starts a new epoch from offset 0.
};

let usersChanged = true;

// The user a successful CreateUser made: chosen in the form once its event has arrived.
let preferredUser = null;

// ---------------------------------------------------------------------------------------------
// Small helpers.

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === 'dataset') Object.assign(node.dataset, value);
    else if (key === 'className') node.className = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) {
    if (child !== null && child !== undefined) node.append(child);
  }
  return node;
}

function big(text) {
  try {
    return BigInt(text ?? 0);
  } catch {
    return 0n;
  }
}

function shortId(id) {
  return id && id.length > 13 ? `${id.slice(0, 8)}…` : id || '';
}

function timeOf(timestamp, { millis = true } = {}) {
  const date = timestamp ? new Date(timestamp) : new Date();
  if (Number.isNaN(date.getTime())) return '';
  const pad = (n, width = 2) => String(n).padStart(width, '0');
  const time = `${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}`;
  return millis ? `${time}.${pad(date.getMilliseconds(), 3)}` : time;
}

function typeName(event) {
  const url = (event.payload && event.payload['@type']) || event.type || '';
  return url.slice(url.lastIndexOf('.') + 1) || 'Event';
}

// ---------------------------------------------------------------------------------------------
// Connection state, notices and the stream position in the top bar.

function setConnection(stateName, text) {
  const badge = $('#connection');
  badge.dataset.state = stateName;
  $('#connection-text').textContent = text;
}

function showNotice(kind, text) {
  const notice = $('#notice');
  notice.dataset.kind = kind;
  $('#notice-text').textContent = text;
  notice.hidden = false;
}

function renderPosition() {
  $('#epoch').textContent = state.epoch === null ? '–' : String(state.epoch);
  $('#offset').textContent = state.epoch === null ? '–' : String(state.lastOffset);
  $('#event-count').textContent = state.eventCount.toLocaleString('en-US');
}

// ---------------------------------------------------------------------------------------------
// The WebSocket subscription.

function connect() {
  clearTimeout(connection.retryTimer);
  clearInterval(connection.countdownTimer);
  setConnection('connecting', connection.wasLive ? 'Reconnecting…' : 'Connecting…');
  const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
  const socket = new WebSocket(`${scheme}://${location.host}/events`, 'cqrs.v1.json');
  connection.socket = socket;
  socket.addEventListener('open', () => subscribe());
  socket.addEventListener('message', (message) => {
    let parsed;
    try {
      parsed = JSON.parse(message.data);
    } catch {
      showNotice('error', 'The gateway sent a message that is not JSON.');
      return;
    }
    onServerMessage(parsed);
  });
  socket.addEventListener('close', (close) => {
    if (connection.socket !== socket) return;
    connection.socket = null;
    if (connection.paused) {
      setConnection('offline', `Disconnected · will resume after offset ${state.lastOffset}`);
    } else {
      scheduleReconnect(close);
    }
  });
}

// Subscribes from the last processed offset: everything after it is replayed, then live.
function subscribe() {
  connection.subscriptions += 1;
  const subscribe = {
    subscriptionId: `dashboard-${connection.subscriptions}`,
    channels: CHANNELS,
    fromOffset: String(state.lastOffset),
  };
  if (state.epoch !== null) subscribe.epoch = String(state.epoch);
  connection.socket.send(JSON.stringify({ subscribe }));
}

function scheduleReconnect(close) {
  const delay = Math.min(BACKOFF.maxMs, BACKOFF.initialMs * BACKOFF.factor ** connection.attempt) *
                (1 + BACKOFF.jitter * (2 * Math.random() - 1));
  connection.attempt += 1;
  const why = close.code === 1006 || !close.code
      ? 'connection lost'
      : `closed ${close.code}${close.reason ? `: ${close.reason}` : ''}`;
  const until = Date.now() + delay;
  const tick = () => {
    const seconds = Math.max(0, Math.ceil((until - Date.now()) / 1000));
    setConnection('reconnecting', `Offline (${why}) · retrying in ${seconds} s`);
  };
  tick();
  connection.countdownTimer = setInterval(tick, 250);
  connection.retryTimer = setTimeout(connect, delay);
}

function onServerMessage(message) {
  if (message.subscribed) {
    const subscribed = message.subscribed;
    state.epoch = big(subscribed.epoch);
    state.liveAfter = big(subscribed.headOffset);
    connection.attempt = 0;
    let text = 'Live';
    if (connection.startedOver) text = `Live · new epoch ${state.epoch}`;
    else if (connection.wasLive) text = `Live · resumed after offset ${state.lastOffset}`;
    connection.wasLive = true;
    connection.startedOver = false;
    setConnection('live', text);
    renderPosition();
    if ($('#events tbody').childElementCount === 0) $('#events-empty').textContent = 'No events yet.';
  } else if (message.event) {
    onEvent(message.event);
  } else if (message.error) {
    onGatewayError(message.error);
  }
}

function onGatewayError(error) {
  if (error.code !== 'OFFSET_UNAVAILABLE') {
    showNotice('error', `Gateway error ${error.code}: ${error.message}`);
    return;
  }
  const epoch = big(error.epoch);
  const earliest = big(error.earliestOffset);
  if (state.epoch !== null && epoch !== state.epoch) {
    // The server restarted with a new in-memory log: offsets of the old epoch mean nothing now.
    showNotice('warn',
        `The server restarted with a new event history (epoch ${state.epoch} → ${epoch}). ` +
        `The events up to offset ${state.lastOffset} of the old epoch are gone; ` +
        'starting over from offset 0 of the new epoch.');
    startOver(epoch, 0n);
  } else if (state.lastOffset + 1n < earliest) {
    showNotice('warn',
        `Events ${state.lastOffset + 1n}–${earliest - 1n} are no longer retained by the ` +
        `server; continuing from offset ${earliest}. Users created before may be missing.`);
    state.epoch = epoch;
    state.lastOffset = earliest - 1n;
  } else {
    // Our offset is beyond the server's newest event: its history was lost without a new epoch.
    showNotice('warn', `The server no longer has offset ${state.lastOffset} (${error.message}); ` +
                       'starting over from offset 0.');
    startOver(epoch, 0n);
  }
  subscribe();
}

function startOver(epoch, offset) {
  connection.startedOver = true;
  state.epoch = epoch;
  state.lastOffset = offset;
  state.eventCount = 0;
  state.users.clear();
  state.perSecond.clear();
  pendingRows.length = 0;
  $('#events tbody').replaceChildren();
  $('#events-empty').hidden = false;
  renderUsers();
  renderPosition();
  drawChart();
}

// ---------------------------------------------------------------------------------------------
// Events: the table, the users, the chart.

const pendingRows = [];
let renderScheduled = false;

function onEvent(event) {
  const offset = big(event.offset);
  if (offset <= state.lastOffset) return;  // Already processed (cannot happen on a resume).
  const gap = state.lastOffset !== 0n && offset !== state.lastOffset + 1n;
  state.lastOffset = offset;
  state.eventCount += 1;
  applyToUsers(event);
  const second = Math.floor((Date.parse(event.timestamp) || Date.now()) / 1000);
  state.perSecond.set(second, (state.perSecond.get(second) || 0) + 1);
  pendingRows.push({ event, gap });
  if (pendingRows.length > MAX_EVENT_ROWS) pendingRows.shift();
  if (!renderScheduled) {
    renderScheduled = true;
    requestAnimationFrame(flushEvents);
  }
}

// Renders the events that arrived since the last frame, all at once (replays can be large).
function flushEvents() {
  renderScheduled = false;
  const body = $('#events tbody');
  const rows = document.createDocumentFragment();
  for (let i = pendingRows.length - 1; i >= 0; i -= 1) rows.append(eventRow(pendingRows[i]));
  pendingRows.length = 0;
  body.prepend(rows);
  while (body.childElementCount > MAX_EVENT_ROWS) body.lastElementChild.remove();
  $('#events-empty').hidden = body.childElementCount > 0;
  if (usersChanged) renderUsers();
  renderPosition();
  drawChart();
}

function eventRow({ event, gap }) {
  const type = typeName(event);
  const stream = event.streamInfo || {};
  const live = big(event.offset) > state.liveAfter;
  const row = el('tr', {
    className: [live ? 'fresh' : '', gap ? 'gap' : ''].join(' ').trim(),
    dataset: { offset: event.offset, type },
  });
  if (gap) row.title = 'Offsets before this one were not received';
  row.append(
      el('td', { className: 'num' }, event.offset),
      el('td', { className: 'time', title: event.timestamp || '' }, timeOf(event.timestamp)),
      el('td', {}, el('span', { className: 'type', dataset: { type } }, type)),
      el('td', { title: `${stream.entityType || ''} ${stream.id || ''}`.trim() },
         stream.entityType ? `${stream.entityType} ` : '',
         el('span', { className: 'id' }, shortId(stream.id || event.partitionKey))),
      el('td', { className: 'payload' }, ...payloadParts(event.payload, stream.id)));
  return row;
}

// `name "Bob"` pairs; the user id is left out when the stream column already shows it.
function payloadParts(payload, streamId) {
  const parts = [];
  for (const [key, value] of Object.entries(payload || {})) {
    if (key === '@type' || (key === 'userId' && value === streamId)) continue;
    if (parts.length) parts.push('  ');
    parts.push(el('span', { className: 'key' }, `${key} `), JSON.stringify(value));
  }
  return parts;
}

function applyToUsers(event) {
  const payload = event.payload || {};
  const user = state.users.get(payload.userId);
  switch (typeName(event)) {
    case 'UserCreated':
      state.users.delete(payload.userId);  // A re-created id moves to the end.
      state.users.set(payload.userId, { name: payload.name || '', updated: event.timestamp });
      usersChanged = true;
      break;
    case 'UserRenamed':
      if (user) Object.assign(user, { name: payload.newName || '', updated: event.timestamp });
      usersChanged = true;
      break;
    case 'UserDeleted':
      state.users.delete(payload.userId);
      usersChanged = true;
      break;
    default:
      break;
  }
}

// The newest MAX_USER_ROWS users, oldest first (a Map keeps the order of creation).
function renderUsers() {
  usersChanged = false;
  const total = state.users.size;
  const users = [];
  let skip = total - MAX_USER_ROWS;
  for (const entry of state.users) {
    if (skip-- <= 0) users.push(entry);
  }
  const body = $('#users tbody');
  body.replaceChildren(...users.map(([id, user]) => el('tr', { dataset: { userId: id } },
      el('td', { title: user.name }, user.name),
      el('td', { className: 'id', title: id }, shortId(id)),
      el('td', { className: 'id', title: user.updated || '' },
         timeOf(user.updated, { millis: false })),
      el('td', { className: 'actions' },
         el('button', { type: 'button', className: 'small', dataset: { act: 'rename', id } },
            'Rename'),
         el('button', { type: 'button', className: 'small', dataset: { act: 'delete', id } },
            'Delete')))));
  const note = $('#users-empty');
  note.hidden = total > 0 && total <= MAX_USER_ROWS;
  note.textContent = total ? `Showing the newest ${MAX_USER_ROWS} of ${total.toLocaleString('en-US')} users.`
                           : 'No users yet.';
  $('#user-count').textContent = total.toLocaleString('en-US');

  // The form's user picker follows the same list.
  const select = $('#user-select');
  const chosen = select.value;
  select.replaceChildren(...users.map(([id, user]) =>
      el('option', { value: id }, `${user.name} · ${shortId(id)}`)));
  if (!users.length) select.append(el('option', { value: '' }, 'No users yet'));
  if (state.users.has(preferredUser)) {
    select.value = preferredUser;
    preferredUser = null;
  } else if (state.users.has(chosen)) {
    select.value = chosen;
  }
  syncForm();
}

// ---------------------------------------------------------------------------------------------
// The events-per-second chart (canvas, last CHART_SECONDS seconds, one bar per second).

function drawChart() {
  const canvas = $('#rate-chart');
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth;
  const height = canvas.clientHeight;
  if (!width || !height) return;
  if (canvas.width !== Math.round(width * ratio)) canvas.width = Math.round(width * ratio);
  if (canvas.height !== Math.round(height * ratio)) canvas.height = Math.round(height * ratio);
  const ctx = canvas.getContext('2d');
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  ctx.clearRect(0, 0, width, height);

  const css = getComputedStyle(document.documentElement);
  const color = (name) => css.getPropertyValue(name).trim();
  const now = Math.floor(Date.now() / 1000);
  const counts = [];
  for (let second = now - CHART_SECONDS + 1; second <= now; second += 1) {
    counts.push(state.perSecond.get(second) || 0);
  }
  for (const second of state.perSecond.keys()) {
    if (second < now - CHART_SECONDS * 2) state.perSecond.delete(second);
  }
  const total = counts.reduce((sum, n) => sum + n, 0);
  const peak = Math.max(...counts);
  $('#rate-summary').textContent =
      `${total.toLocaleString('en-US')} in the last minute · peak ${peak.toLocaleString('en-US')}/s`;

  const left = 40;
  const bottom = 20;
  const top = 8;
  const plotWidth = width - left - 8;
  const plotHeight = height - top - bottom;
  const scale = niceMax(peak);

  ctx.font = '11px system-ui, sans-serif';
  ctx.fillStyle = color('--muted');
  ctx.strokeStyle = color('--border');
  ctx.lineWidth = 1;
  ctx.textAlign = 'right';
  ctx.textBaseline = 'middle';
  for (let i = 0; i <= 4; i += 1) {
    const y = Math.round(top + plotHeight - (plotHeight * i) / 4) + 0.5;
    ctx.beginPath();
    ctx.moveTo(left, y);
    ctx.lineTo(left + plotWidth, y);
    ctx.stroke();
    ctx.fillText(formatCount((scale * i) / 4), left - 6, y);
  }
  ctx.textBaseline = 'top';
  ctx.textAlign = 'left';
  ctx.fillText(`${CHART_SECONDS} s ago`, left, top + plotHeight + 6);
  ctx.textAlign = 'right';
  ctx.fillText('now', left + plotWidth, top + plotHeight + 6);

  const slot = plotWidth / CHART_SECONDS;
  ctx.fillStyle = color('--accent');
  counts.forEach((count, i) => {
    if (!count) return;
    const barHeight = Math.max(2, (plotHeight * count) / scale);
    ctx.fillRect(left + i * slot + 1, top + plotHeight - barHeight, Math.max(1, slot - 2), barHeight);
  });
}

function niceMax(peak) {
  if (peak <= 4) return 4;
  const magnitude = 10 ** Math.floor(Math.log10(peak));
  for (const step of [1, 2, 2.5, 5, 10]) {
    if (step * magnitude >= peak) return step * magnitude;
  }
  return 10 * magnitude;
}

function formatCount(value) {
  if (value >= 1e6) return `${value / 1e6}M`;
  if (value >= 1e3) return `${value / 1e3}k`;
  return String(Math.round(value * 10) / 10);
}

// ---------------------------------------------------------------------------------------------
// Commands.

const ACTIONS = {
  create: {
    command: 'CreateUser', button: 'Create user', endpoint: 'POST /users',
    needsUser: false, needsName: true, nameLabel: 'Name',
  },
  rename: {
    command: 'RenameUser', button: 'Rename user',
    endpoint: 'POST /commands/users.v1.RenameUser',
    needsUser: true, needsName: true, nameLabel: 'New name',
  },
  delete: {
    command: 'DeleteUser', button: 'Delete user',
    endpoint: 'POST /commands/users.v1.DeleteUser',
    needsUser: true, needsName: false, nameLabel: 'Name',
  },
};

function currentAction() {
  return $('input[name="action"]:checked').value;
}

function syncForm() {
  const action = ACTIONS[currentAction()];
  $('#user-field').hidden = !action.needsUser;
  $('#name-field').hidden = !action.needsName;
  $('#name-label').textContent = action.nameLabel;
  $('#command-endpoint').textContent = action.endpoint;
  const submit = $('#submit');
  submit.textContent = action.button;
  submit.toggleAttribute('data-danger', currentAction() === 'delete');
  submit.disabled = action.needsUser && !state.users.has($('#user-select').value);
}

function chooseAction(action, userId) {
  $(`#action-${action}`).checked = true;
  if (userId) $('#user-select').value = userId;
  syncForm();
  (ACTIONS[action].needsName ? $('#name-input') : $('#submit')).focus();
}

async function sendCommand(action, userId, name) {
  const spec = ACTIONS[action];
  let url = '/users';
  let body = { name };
  const headers = { 'Content-Type': 'application/json' };
  if (action !== 'create') {
    url = `/commands/users.v1.${spec.command}`;
    body = action === 'rename' ? { userId, name } : { userId };
    headers['X-Subject'] = userId;  // The user's commands run in order.
  }
  const started = performance.now();
  let http;
  let text = '';
  try {
    http = await fetch(url, { method: 'POST', headers, body: JSON.stringify(body) });
    text = await http.text();
  } catch (error) {
    return { command: spec.command, status: 'error', httpStatus: 0,
             message: `The request failed: ${error.message}`, elapsedMs: performance.now() - started };
  }
  return describeResponse(spec.command, http, text, performance.now() - started, userId);
}

// One shape for POST /users answers, command envelopes and plain HTTP errors.
function describeResponse(command, http, text, elapsedMs, userId) {
  let json = null;
  try {
    json = JSON.parse(text);
  } catch {
    // A plain-text HTTP error (e.g. 403 for an origin not allowed).
  }
  const error = json && json.error;
  const result = {
    command,
    httpStatus: http.status,
    httpText: http.statusText,
    elapsedMs,
    status: (json && json.status) || (http.ok ? 'OK' : 'error'),
    userId: (json && (json.userId || (json.payload && json.payload.userId))) || userId || '',
    commandId: (json && json.commandId) || '',
    eventOffsets: (json && json.eventOffsets) || [],
    code: (error && (error.code || error.errorCode)) || '',
    message: typeof error === 'string' ? error : (error && error.message) || '',
    developerMessage: (error && error.developerMessage) || '',
  };
  if (!json && !http.ok) result.message = text.trim();
  return result;
}

function renderResponse(result) {
  const panel = $('#response');
  const status = result.status === 'OK' || result.status === 'REJECTED' ? result.status : 'error';
  panel.dataset.status = status;
  panel.dataset.command = result.command;
  const badgeClass = { OK: 'ok', REJECTED: 'rejected', error: 'error' }[status];
  const head = el('div', { className: 'response-head' },
      el('span', { id: 'response-status', className: `badge ${badgeClass}` },
         result.status === 'error' ? 'ERROR' : result.status),
      el('strong', {}, result.command),
      el('span', { className: 'meta' },
         `HTTP ${result.httpStatus || '—'} · ${Math.round(result.elapsedMs)} ms`));
  const fields = el('dl');
  const add = (label, value, props) => {
    if (value) fields.append(el('dt', {}, label), el('dd', props, value));
  };
  add('Error code', result.code, { id: 'response-code', className: 'mono' });
  add('Message', result.message, { id: 'response-message' });
  add('Detail', result.developerMessage, {});
  add('User id', result.userId, { id: 'response-user-id', className: 'mono' });
  add('Command id', result.commandId, { className: 'mono' });
  add('Event offsets', result.eventOffsets.join(', '), { id: 'response-offsets', className: 'mono' });
  panel.replaceChildren(head, fields);
}

async function onSubmit(submitEvent) {
  submitEvent.preventDefault();
  const action = currentAction();
  const userId = $('#user-select').value;
  const nameInput = $('#name-input');
  const submit = $('#submit');
  submit.disabled = true;
  const panel = $('#response');
  panel.dataset.status = 'pending';
  panel.dataset.command = ACTIONS[action].command;
  panel.replaceChildren(el('p', { className: 'placeholder' }, `Sending ${ACTIONS[action].command}…`));
  const result = await sendCommand(action, userId, nameInput.value);
  renderResponse(result);
  if (result.status === 'OK') {
    nameInput.value = '';
    if (action === 'create') preferredUser = result.userId;
  }
  syncForm();
}

// ---------------------------------------------------------------------------------------------

// For the console and the browser test: drop the connection and come back later (a resume).
window.cqrsDashboard = {
  disconnect() {
    connection.paused = true;
    clearTimeout(connection.retryTimer);
    clearInterval(connection.countdownTimer);
    if (connection.socket) connection.socket.close(1000, 'paused by the user');
    else setConnection('offline', `Disconnected · will resume after offset ${state.lastOffset}`);
  },
  connect() {
    connection.paused = false;
    if (!connection.socket) connect();
  },
  get position() {
    return { epoch: String(state.epoch), lastOffset: String(state.lastOffset) };
  },
};

function start() {
  $('#command-form').addEventListener('submit', onSubmit);
  for (const radio of document.querySelectorAll('input[name="action"]')) {
    radio.addEventListener('change', syncForm);
  }
  $('#user-select').addEventListener('change', syncForm);
  $('#users').addEventListener('click', (click) => {
    const button = click.target.closest('button[data-act]');
    if (button) chooseAction(button.dataset.act, button.dataset.id);
  });
  $('#notice-close').addEventListener('click', () => { $('#notice').hidden = true; });
  window.addEventListener('resize', drawChart);
  setInterval(drawChart, 1000);
  renderUsers();
  renderPosition();
  drawChart();
  connect();
}

start();
