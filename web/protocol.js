// The native protocol (PROTOCOL.md) as data: parsing server lines, formatting client lines, the
// error codes in words, and the small rules the client follows (names, message order). No DOM and
// no network here, so that `node --test` runs the same module the browser loads.

/** Parses one server line (PROTOCOL.md section 3) into
 * { label, event, code, verb, fields, text }: `event` is the event word for `* EVENT` lines (code
 * null), `code` the number for replies; `fields` are the space-separated fields after the verb (or
 * after the event word), `text` the free text after " :" (null when there is none). */
export function parseServerLine(line) {
  let rest = line.replace(/\r?\n$/, '');
  let label = null;
  if (rest.startsWith('@')) {
    const sp = rest.indexOf(' ');
    label = rest.slice(1, sp < 0 ? undefined : sp);
    rest = sp < 0 ? '' : rest.slice(sp + 1);
  }
  let text = null;
  const colon = rest.indexOf(' :');
  if (colon >= 0) {
    text = rest.slice(colon + 2);
    rest = rest.slice(0, colon);
  } else if (rest.startsWith(':')) {
    text = rest.slice(1);
    rest = '';
  }
  const words = rest.split(' ').filter((w) => w !== '');
  if (words[0] === '*') {
    return { label, event: words[1] || '', code: null, verb: null, fields: words.slice(2), text };
  }
  const code = /^\d{3}$/.test(words[0] || '') ? Number(words[0]) : null;
  return { label, event: null, code, verb: words[1] || null, fields: words.slice(2), text };
}

/** A final reply ends a command's answer: any code but the 1xx listing lines. */
export function isFinal(parsed) {
  return parsed.code !== null && parsed.code >= 200;
}

/** A stored message from a `130` line or a `* MSG` event: { room, id, time, sender, text }. */
export function messageFrom(parsed) {
  const [room, id, time, sender] = parsed.fields;
  return { room, id: Number(id), time, sender, text: parsed.text ?? '', kind: 'message' };
}

/** A bot command line from a `* CMD` event: { room, time, sender, text }, not stored (no id). */
export function commandFrom(parsed) {
  const [room, time, sender] = parsed.fields;
  return { room, id: null, time, sender, text: parsed.text ?? '', kind: 'command' };
}

/** A client line: an optional label, the command and its arguments; free text goes last. Line
 * endings are never part of a line (a WebSocket message is one line). */
export function formatCommand(label, command, ...args) {
  const parts = [command, ...args.map(String)];
  const line = parts.join(' ').replace(/[\r\n]/g, ' ');
  return label ? `@${label} ${line}` : line;
}

/** Whether a message text is a bot command line (PROTOCOL.md section 5). */
export function isBotCommand(text) {
  return text.startsWith('/');
}

const USER = /^[A-Za-z][A-Za-z0-9_-]{1,23}$/;
const ROOM = /^#?[a-z0-9][a-z0-9_-]{0,31}$/i;

export function validUser(name) {
  return USER.test(name);
}

/** A room name as the server shows it (lower case, no leading `#`), or null when invalid. */
export function normalRoom(name) {
  const trimmed = name.trim();
  return ROOM.test(trimmed) ? trimmed.replace(/^#/, '').toLowerCase() : null;
}

export function validPassword(password) {
  const bytes = new TextEncoder().encode(password).length;
  return bytes >= 8 && bytes <= 128 && !/\s/.test(password);
}

/** Whether a password may be sent from a page at `location`: only over TLS, or to this machine. */
export function passwordMaySend(location) {
  if (location.protocol === 'https:') return true;
  const host = location.hostname.replace(/^\[|\]$/g, '');
  return host === 'localhost' || host === '::1' || /^127\.\d+\.\d+\.\d+$/.test(host);
}

/** The WebSocket address of the server that served the page at `location`. */
export function socketUrl(location) {
  const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
  return `${scheme}//${location.host}/ws`;
}

/** Every error code of PROTOCOL.md in words a person understands. */
export const ERRORS = {
  400: 'The server does not know that command.',
  401: 'That command had wrong arguments.',
  402: 'Please log in first.',
  403: 'You are not a member of that room, or not allowed to do that.',
  404: 'There is no such room.',
  405: 'That user name is not valid: 2 to 24 letters, digits, "_" or "-", starting with a letter.',
  406: 'That room name is not valid: up to 32 lower-case letters, digits, "_" or "-".',
  407: 'That password is not valid: 8 to 128 characters, no spaces.',
  408: 'You are already logged in.',
  409: 'Wrong user name or password.',
  410: 'That user name is taken. Choose another, or log in.',
  411: 'Sign-up is closed on this server.',
  412: 'Too many attempts. Wait a little and try again.',
  413: 'That line was too long for the server.',
  414: 'That line was not valid text (UTF-8).',
  415: 'That text contains a control character (such as a line break).',
  416: 'The message is empty.',
  417: 'The message is too long.',
  418: 'A limit was reached (rooms per connection, members per room, or rooms on the server).',
  419: 'No bot is connected that answers this command right now.',
  420: 'Slow down.',
  421: 'The server did not accept that history request.',
  422: 'That topic is too long (at most 390 bytes).',
  423: 'There is no such user.',
  424: 'Guest access is off on this server: sign up or log in.',
  425: 'That nick belongs to an account: log in, or choose another.',
  426: 'Another guest uses that nick.',
  427: 'Guests may not do that here.',
  428: 'Only the operators of that room (and server admins) may do that.',
  429: 'Only server admins may do that.',
  430: 'You are banned from that room.',
  431: 'This account is disabled. Ask an admin.',
  432: 'There is no such message in that room.',
  433: 'That user is not in that room.',
  434: 'The server refused the new configuration; the settings in effect stay.',
  500: 'The server could not store that (a server error). Nothing was changed; try again.',
};

/** The words for an error reply, with the server's own text and the seconds to wait (412). */
export function errorMessage(parsed) {
  const known = ERRORS[parsed.code] ?? `The server answered ${parsed.code}.`;
  if (parsed.code === 412 && parsed.fields[0]) {
    return `Too many attempts. Try again in ${parsed.fields[0]} s.`;
  }
  return known;
}

/** Merges messages into a room's list: one per id (commands, without ids, are kept as they came),
 * stored messages in id order. Returns a new array. */
export function mergeMessages(existing, incoming) {
  const byId = new Map();
  const loose = [];
  for (const m of [...existing, ...incoming]) {
    if (m.id === null || m.id === undefined) loose.push(m);
    else if (!byId.has(m.id)) byId.set(m.id, m);
  }
  const stored = [...byId.values()].sort((a, b) => a.id - b.id);
  if (loose.length === 0) return stored;
  // A command line sits after the stored message that came before it.
  const out = [];
  let li = 0;
  for (const m of stored) {
    while (li < loose.length && (loose[li].after ?? 0) < m.id) out.push(loose[li++]);
    out.push(m);
  }
  while (li < loose.length) out.push(loose[li++]);
  return out;
}

/** A room's list without the message `id` (an operator deleted it). Returns a new array. */
export function withoutMessage(messages, id) {
  return messages.filter((m) => m.id !== id);
}

/** The newest stored id of a list (0 when none). */
export function newestId(messages) {
  let max = 0;
  for (const m of messages) if (m.id && m.id > max) max = m.id;
  return max;
}

/** The oldest stored id of a list (null when none). */
export function oldestId(messages) {
  let min = null;
  for (const m of messages) if (m.id && (min === null || m.id < min)) min = m.id;
  return min;
}
