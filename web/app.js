// The chatd web client: the native protocol over a WebSocket to the server that served this page.
// The protocol's rules live in protocol.js; this file is the page: forms, rooms, messages,
// reconnecting. The password is held in memory only (never in storage or cookies): a reconnect
// after a network drop logs in again with it; a reload of the page asks for it again, and then
// returns to the rooms the tab was in (their names are kept in sessionStorage).

import * as P from './protocol.js';

const $ = (id) => document.getElementById(id);
const HISTORY_PAGE = 50;

const state = {
  config: { subprotocol: 'chatd.native', bots: [], max_message_bytes: 2000 },
  ws: null,
  user: null,
  password: null,
  rooms: new Map(), // name -> { messages, members: Set, joined, exhausted }
  current: null,
  nextLabel: 1,
  pending: new Map(), // label -> { lines, resolve, reject }
  retry: 0,
  held: false, // a dropped connection waits for reconnectNow() (chatd.dropConnection)
  loggingOut: false,
};

// ---- the connection ----

function connect() {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(P.socketUrl(location), [state.config.subprotocol]);
    let greeted = false;
    ws.onmessage = (e) => {
      const line = P.parseServerLine(String(e.data));
      if (!greeted && line.event === 'HELLO') {
        greeted = true;
        resolve();
        return;
      }
      onLine(line);
    };
    ws.onclose = () => {
      if (!greeted) reject(new Error('the server closed the connection'));
      onClose(ws);
    };
    state.ws = ws;
  });
}

/** Sends a labelled command; resolves with { lines, fin } once its final reply arrived. */
function request(command, ...args) {
  const ws = state.ws;
  if (!ws || ws.readyState !== WebSocket.OPEN) return Promise.reject(new Error('not connected'));
  const label = `w${state.nextLabel++}`;
  return new Promise((resolve, reject) => {
    state.pending.set(label, { lines: [], resolve, reject });
    ws.send(P.formatCommand(label, command, ...args));
  });
}

function onLine(line) {
  const waiting = line.label && state.pending.get(line.label);
  if (waiting) {
    if (P.isFinal(line)) {
      state.pending.delete(line.label);
      waiting.resolve({ lines: waiting.lines, fin: line });
    } else {
      waiting.lines.push(line);
    }
    return;
  }
  if (line.event) onEvent(line);
  else if (line.code >= 400) showError(P.errorMessage(line));
}

function onEvent(e) {
  switch (e.event) {
    case 'MSG': {
      const m = P.messageFrom(e);
      addMessages(m.room, [m], true);
      break;
    }
    case 'CMD': {
      const c = P.commandFrom(e);
      addMessages(c.room, [{ ...c, after: P.newestId(room(c.room).messages) }], true);
      break;
    }
    case 'JOIN':
      room(e.fields[0]).members.add(e.fields[1]);
      if (e.fields[0] === state.current) renderMembers();
      break;
    case 'PART':
      room(e.fields[0]).members.delete(e.fields[1]);
      if (e.fields[0] === state.current) renderMembers();
      break;
    case 'PING':
      state.ws?.send(P.formatCommand(null, 'PONG', ...e.fields));
      break;
    case 'NOTICE':
      // `* NOTICE <admin> :text` is an admin's notice to everyone; without a field, the server's.
      showStatus(e.fields[0] ? `Notice from ${e.fields[0]}: ${e.text ?? ''}` : `Server: ${e.text ?? ''}`);
      break;
    case 'DELETE': {
      const [name, id, by] = e.fields;
      const st = room(name);
      st.messages = P.withoutMessage(st.messages, Number(id));
      if (name === state.current) renderMessages();
      showStatus(`A message in #${name} was deleted by ${by}.`);
      break;
    }
    case 'KICK': {
      const [name, user, by] = e.fields;
      if (user === state.user) leftRoom(name, `You were removed from #${name} by ${by}: ${e.text ?? ''}`);
      else {
        room(name).members.delete(user);
        if (name === state.current) renderMembers();
      }
      break;
    }
    case 'DELROOM':
      leftRoom(e.fields[0], `#${e.fields[0]} was deleted by ${e.fields[1]}: ${e.text ?? ''}`);
      break;
    case 'BAN':
    case 'UNBAN':
    case 'OP':
    case 'DEOP': {
      const [name, user, by] = e.fields;
      const what = { BAN: 'banned', UNBAN: 'unbanned', OP: 'made an operator', DEOP: 'no longer an operator' }[e.event];
      if (name === state.current) showStatus(`${user} was ${what} in #${name} by ${by}.`);
      break;
    }
    case 'BYE':
      showStatus(`The server closed the connection: ${e.text ?? ''}`);
      break;
    default:
      break;
  }
}

/** The server took this user out of a room (kicked, or the room deleted): it stays listed, to
 * join again where allowed, and the reason is shown. */
function leftRoom(name, why) {
  const st = room(name);
  st.joined = false;
  st.members.clear();
  if (state.current === name) {
    state.current = null;
    sessionStorage.removeItem('chatd.current');
    $('room-title').textContent = '';
    renderMessages();
    renderMembers();
    setComposerEnabled(false);
  }
  renderRooms();
  persistRooms();
  showError(why);
}

function onClose(ws) {
  if (ws !== state.ws) return;
  state.ws = null;
  for (const [, p] of state.pending) p.reject(new Error('connection lost'));
  state.pending.clear();
  setComposerEnabled(false);
  if (!state.user || state.loggingOut) return;
  showStatus('Connection lost. Reconnecting…');
  if (!state.held) scheduleReconnect();
}

function scheduleReconnect() {
  const delay = Math.min(10000, 1000 * 2 ** state.retry);
  state.retry += 1;
  setTimeout(reconnect, delay);
}

/** Back after a drop: log in again, re-join every room, and fetch what was missed. */
async function reconnect() {
  if (state.ws || !state.user || state.held) return;
  try {
    await connect();
    const r = await request('LOGIN', state.user, state.password);
    if (r.fin.code !== 200) {
      showError(P.errorMessage(r.fin));
      if (r.fin.code === 409) return logout();
      state.ws?.close();
      return;
    }
    for (const [name, st] of state.rooms) {
      if (st.joined) await join(name, { since: P.newestId(st.messages) });
    }
    state.retry = 0;
    setComposerEnabled(Boolean(state.current));
    showStatus('Reconnected.');
  } catch {
    if (!state.ws) scheduleReconnect();
  }
}

// ---- rooms and messages ----

function room(name) {
  if (!state.rooms.has(name)) {
    state.rooms.set(name, { messages: [], members: new Set(), joined: false, exhausted: false });
  }
  return state.rooms.get(name);
}

function addMessages(name, incoming, live) {
  const st = room(name);
  const before = P.newestId(st.messages);
  st.messages = P.mergeMessages(st.messages, incoming);
  if (name !== state.current) return;
  const appended = live && incoming.every((m) => m.id === null || m.id > before);
  if (appended) incoming.forEach((m) => $('messages').append(messageItem(m)));
  else renderMessages();
  if (live) scrollToEnd();
}

/** Joins `name` (creating it when the server allows). With `since` (a reconnect), the messages
 * after that id that the replay of the last 50 does not reach are paged in with HISTORY. */
async function join(name, { since = null } = {}) {
  const r = await request('JOIN', name);
  if (r.fin.code !== 200) {
    showError(`${P.errorMessage(r.fin)}${r.fin.text ? ` (${r.fin.text})` : ''}`);
    return false;
  }
  const joined = r.fin.fields[0];
  const replay = r.lines.filter((l) => l.code === 130).map(P.messageFrom);
  const st = room(joined);
  st.joined = true;
  if (since === null) st.exhausted = replay.length < HISTORY_PAGE;
  // Ids are unique across rooms, so a gap in ids is no proof of a missed message: page back until a
  // page reaches what was known, or the room's history ends.
  let merged = replay;
  let oldest = P.oldestId(replay);
  let full = replay.length >= HISTORY_PAGE;
  while (since && oldest !== null && oldest > since && full) {
    const page = await history(joined, oldest);
    merged = merged.concat(page);
    full = page.length >= HISTORY_PAGE;
    oldest = P.oldestId(page) ?? oldest;
  }
  st.messages = P.mergeMessages(st.messages, merged);
  await loadMembers(joined);
  if (!state.current || state.current === joined || since === null) select(joined);
  else renderRooms();
  persistRooms();
  return true;
}

async function history(name, before) {
  const r = await request('HISTORY', name, 'BEFORE', before, 'LIMIT', HISTORY_PAGE);
  if (r.fin.code !== 200) {
    showError(P.errorMessage(r.fin));
    return [];
  }
  return r.lines.filter((l) => l.code === 130).map(P.messageFrom);
}

async function loadMembers(name) {
  const r = await request('NAMES', name);
  if (r.fin.code !== 200) return;
  room(name).members = new Set(r.lines.filter((l) => l.code === 120).map((l) => l.fields[1]));
}

async function older() {
  const name = state.current;
  const st = room(name);
  const oldest = P.oldestId(st.messages);
  if (oldest === null) return;
  const list = $('messages');
  const fromBottom = list.scrollHeight - list.scrollTop;
  const page = await history(name, oldest);
  st.exhausted = page.length < HISTORY_PAGE;
  st.messages = P.mergeMessages(st.messages, page);
  renderMessages();
  list.scrollTop = list.scrollHeight - fromBottom;
  showStatus(page.length ? `Loaded ${page.length} older messages.` : 'No older messages.');
}

async function send(text) {
  const name = state.current;
  const r = await request('MSG', name, text);
  const [, id, time] = r.fin.fields;
  if (r.fin.code === 200 && id !== '-') {
    addMessages(name, [{ room: name, id: Number(id), time, sender: state.user, text, kind: 'message' }], true);
    return true;
  }
  if (r.fin.code === 200 || r.fin.code === 419) {
    // A bot command line: relayed, not stored; shown here as the others see it.
    const after = P.newestId(room(name).messages);
    addMessages(name, [{ room: name, id: null, time, sender: state.user, text, kind: 'command', after }], true);
    if (r.fin.code === 419) showError(P.errorMessage(r.fin));
    return true;
  }
  showError(P.errorMessage(r.fin));
  return false;
}

async function refreshRooms() {
  const r = await request('ROOMS');
  if (r.fin.code !== 200) return;
  for (const l of r.lines.filter((x) => x.code === 110)) room(l.fields[0]);
  renderRooms();
}

function persistRooms() {
  const joined = [...state.rooms].filter(([, st]) => st.joined).map(([n]) => n);
  sessionStorage.setItem('chatd.rooms', JSON.stringify(joined));
  if (state.current) sessionStorage.setItem('chatd.current', state.current);
}

// ---- rendering ----

function select(name) {
  state.current = name;
  $('room-title').textContent = `#${name}`;
  renderRooms();
  renderMessages();
  renderMembers();
  setComposerEnabled(Boolean(state.ws));
  scrollToEnd();
  persistRooms();
}

function renderRooms() {
  const list = $('room-list');
  list.replaceChildren();
  for (const [name, st] of [...state.rooms].sort(([a], [b]) => a.localeCompare(b))) {
    const li = document.createElement('li');
    const b = document.createElement('button');
    b.type = 'button';
    b.textContent = `#${name}${st.joined ? '' : ' (join)'}`;
    b.setAttribute('aria-current', String(name === state.current));
    b.addEventListener('click', () => (st.joined ? select(name) : join(name).catch(reportFailure)));
    li.append(b);
    list.append(li);
  }
}

function messageItem(m) {
  const li = document.createElement('li');
  const bot = state.config.bots.includes(m.sender);
  li.className = [m.kind === 'command' ? 'command' : '', bot ? 'bot' : '', m.sender === state.user ? 'mine' : '']
    .filter(Boolean)
    .join(' ');
  if (m.id) li.dataset.id = String(m.id);
  const meta = document.createElement('span');
  meta.className = 'meta';
  meta.textContent = m.time ? new Date(m.time).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' }) : '';
  li.append(meta);
  if (bot || m.kind === 'command') {
    const badge = document.createElement('span');
    badge.className = 'badge';
    badge.textContent = bot ? 'bot' : 'command';
    li.append(badge);
  }
  const sender = document.createElement('span');
  sender.className = 'sender';
  sender.textContent = m.sender;
  const text = document.createElement('span');
  text.className = 'text';
  text.textContent = m.text;
  li.append(sender, text);
  return li;
}

function renderMessages() {
  const st = state.current && room(state.current);
  $('messages').replaceChildren(...(st ? st.messages.map(messageItem) : []));
  $('older').hidden = !st || st.exhausted || st.messages.length === 0;
}

function renderMembers() {
  const st = state.current && room(state.current);
  const names = st ? [...st.members].sort() : [];
  $('member-list').replaceChildren(
    ...names.map((n) => {
      const li = document.createElement('li');
      li.textContent = state.config.bots.includes(n) ? `${n} (bot)` : n;
      return li;
    }),
  );
}

function scrollToEnd() {
  const list = $('messages');
  list.scrollTop = list.scrollHeight;
}

function setComposerEnabled(on) {
  $('text').disabled = !on;
  $('send').disabled = !on;
}

function showStatus(text) {
  $('status').textContent = text;
}

function showError(text) {
  $('error').textContent = text;
}

function reportFailure(e) {
  showError(`Not connected to the server (${e.message}). Reconnecting…`);
}

// ---- signing in and out ----

async function signIn(register) {
  showError('');
  const user = $('user').value.trim();
  const password = $('password').value;
  if (!P.validUser(user)) return showError(P.ERRORS[405]);
  if (!P.validPassword(password)) return showError(P.ERRORS[407]);
  if (!P.passwordMaySend(location)) {
    return showError('This page was not loaded over HTTPS: the password is not sent over a plain connection.');
  }
  try {
    if (!state.ws) await connect();
    const r = await request(register ? 'REGISTER' : 'LOGIN', user, password);
    if (r.fin.code !== 200) return showError(P.errorMessage(r.fin));
    state.user = r.fin.fields[0];
    state.password = password;
    state.loggingOut = false;
    $('password').value = '';
    sessionStorage.setItem('chatd.user', state.user);
    $('who').textContent = `Signed in as ${state.user}`;
    $('who').hidden = false;
    $('logout').hidden = false;
    $('login-view').hidden = true;
    $('chat-view').hidden = false;
    showStatus(register ? `Welcome, ${state.user}!` : `Logged in as ${state.user}.`);
    await refreshRooms();
    const back = JSON.parse(sessionStorage.getItem('chatd.rooms') || '[]');
    const current = sessionStorage.getItem('chatd.current');
    for (const name of back) await join(name);
    if (current && room(current).joined) select(current);
  } catch (e) {
    showError(`Could not reach the server (${e.message}).`);
  }
}

function logout() {
  state.loggingOut = true;
  if (state.ws) {
    state.ws.send(P.formatCommand(null, 'QUIT'));
    state.ws.close();
  }
  Object.assign(state, { user: null, password: null, current: null, rooms: new Map(), ws: null });
  sessionStorage.removeItem('chatd.rooms');
  sessionStorage.removeItem('chatd.current');
  $('chat-view').hidden = true;
  $('login-view').hidden = false;
  $('who').hidden = true;
  $('logout').hidden = true;
  showStatus('Logged out.');
}

// ---- wiring ----

async function start() {
  try {
    const r = await fetch('/config.json', { cache: 'no-store' });
    if (r.ok) state.config = { ...state.config, ...(await r.json()) };
  } catch {
    // The defaults above do.
  }
  $('user').value = sessionStorage.getItem('chatd.user') || '';
  $('login-form').addEventListener('submit', (e) => {
    e.preventDefault();
    signIn(false);
  });
  $('signup').addEventListener('click', () => signIn(true));
  $('logout').addEventListener('click', logout);
  $('join-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const name = P.normalRoom($('join-name').value);
    if (!name) return showError(P.ERRORS[406]);
    showError('');
    $('join-name').value = '';
    join(name).catch(reportFailure);
  });
  $('older').addEventListener('click', () => older().catch(reportFailure));
  $('send-form').addEventListener('submit', async (e) => {
    e.preventDefault();
    const input = $('text');
    const text = input.value;
    if (!text.trim() || !state.current) return;
    if (new TextEncoder().encode(text).length > state.config.max_message_bytes) return showError(P.ERRORS[417]);
    showError('');
    input.value = '';
    const ok = await send(text).catch((err) => {
      reportFailure(err);
      return false;
    });
    if (!ok && !input.value) input.value = text;
  });
  // For trying the reconnect by hand (and for the browser test): drop the connection as a network
  // failure would, and hold the reconnect until reconnectNow().
  window.chatd = {
    dropConnection() {
      state.held = true;
      state.ws?.close();
    },
    reconnectNow() {
      state.held = false;
      state.retry = 0;
      reconnect();
    },
  };
  document.body.dataset.ready = 'true';
}

start();
