// Unit tests of the web client's protocol module (web/protocol.js), the lines of PROTOCOL.md's
// transcripts parsed and formatted as the browser does. Run: node --test tests/web/protocol.test.js
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as P from '../../web/protocol.js';

test('replies, labels and free text', () => {
  const r = P.parseServerLine('@a4 130 HISTORY general 6 2026-11-29T04:39:00.500Z carol :hi there : you');
  assert.equal(r.label, 'a4');
  assert.equal(r.code, 130);
  assert.equal(r.verb, 'HISTORY');
  assert.deepEqual(r.fields, ['general', '6', '2026-11-29T04:39:00.500Z', 'carol']);
  assert.equal(r.text, 'hi there : you');
  assert.equal(P.isFinal(r), false);
  const fin = P.parseServerLine('@a4 200 HISTORY general 2 :2 messages\r\n');
  assert.equal(P.isFinal(fin), true);
  assert.deepEqual(fin.fields, ['general', '2']);
  const ack = P.parseServerLine('200 MSG general 8 2026-11-29T04:48:06.123Z');
  assert.deepEqual([ack.label, ack.code, ack.fields, ack.text], [null, 200, ['general', '8', '2026-11-29T04:48:06.123Z'], null]);
});

test('events', () => {
  const m = P.parseServerLine('* MSG general 9 2026-11-29T04:48:09.870Z bob :fine, thanks');
  assert.equal(m.event, 'MSG');
  assert.equal(m.code, null);
  assert.deepEqual(P.messageFrom(m), {
    room: 'general', id: 9, time: '2026-11-29T04:48:09.870Z', sender: 'bob', text: 'fine, thanks', kind: 'message',
  });
  const c = P.commandFrom(P.parseServerLine('* CMD general 2026-11-29T04:48:12.001Z alice :/stock=aapl.us'));
  assert.deepEqual([c.room, c.id, c.sender, c.text, c.kind], ['general', null, 'alice', '/stock=aapl.us', 'command']);
  assert.deepEqual(P.parseServerLine('* PING 42').fields, ['42']);
  assert.equal(P.parseServerLine('* BYE :ping timeout').text, 'ping timeout');
  assert.equal(P.parseServerLine('* MSG general 10 2026-11-29T04:48:12.250Z stockbot :').text, '');
});

test('client lines are one line, labelled', () => {
  assert.equal(P.formatCommand('w1', 'LOGIN', 'alice', 'correct-horse'), '@w1 LOGIN alice correct-horse');
  assert.equal(P.formatCommand(null, 'MSG', 'general', 'two\nlines'), 'MSG general two lines');
  assert.equal(P.formatCommand('w2', 'HISTORY', 'general', 'BEFORE', 8, 'LIMIT', 50), '@w2 HISTORY general BEFORE 8 LIMIT 50');
});

test('names, passwords and bot commands', () => {
  assert.ok(P.validUser('alice') && !P.validUser('a') && !P.validUser('9lives') && !P.validUser('~bob'));
  assert.equal(P.normalRoom('#General'), 'general');
  assert.equal(P.normalRoom('no/slash'), null);
  assert.ok(P.validPassword('correct-horse') && !P.validPassword('short') && !P.validPassword('has space in it'));
  assert.ok(P.isBotCommand('/stock=aapl.us') && !P.isBotCommand('hi /stock'));
});

test('the password goes only over TLS or to this machine', () => {
  assert.ok(P.passwordMaySend({ protocol: 'https:', hostname: 'chat.example.org' }));
  assert.ok(P.passwordMaySend({ protocol: 'http:', hostname: '127.0.0.1' }));
  assert.ok(P.passwordMaySend({ protocol: 'http:', hostname: '[::1]' }));
  assert.ok(!P.passwordMaySend({ protocol: 'http:', hostname: 'chat.example.org' }));
  assert.equal(P.socketUrl({ protocol: 'https:', host: 'localhost:8443' }), 'wss://localhost:8443/ws');
  assert.equal(P.socketUrl({ protocol: 'http:', host: '127.0.0.1:8080' }), 'ws://127.0.0.1:8080/ws');
});

test('every error code of PROTOCOL.md has words', async () => {
  const { readFile } = await import('node:fs/promises');
  const doc = await readFile(new URL('../../PROTOCOL.md', import.meta.url), 'utf8');
  const codes = [...doc.matchAll(/^\| `([45]\d\d)` \|/gm)].map((m) => Number(m[1]));
  assert.ok(codes.length > 25, `found ${codes.length} codes`);
  for (const code of codes) assert.ok(P.ERRORS[code], `no words for ${code}`);
  assert.equal(P.errorMessage(P.parseServerLine('@w3 412 LOGIN 8 :too many attempts')), 'Too many attempts. Try again in 8 s.');
  assert.equal(P.errorMessage(P.parseServerLine('409 LOGIN :wrong user name or password')), P.ERRORS[409]);
});

test('messages merge by id, in order, commands kept in place', () => {
  const m = (id) => ({ id, text: `m${id}`, kind: 'message' });
  const merged = P.mergeMessages([m(1), m(3)], [m(3), m(2), m(5)]);
  assert.deepEqual(merged.map((x) => x.id), [1, 2, 3, 5]);
  const cmd = { id: null, text: '/stock=aapl.us', kind: 'command', after: 3 };
  const withCmd = P.mergeMessages(merged, [cmd, m(4)]);
  assert.deepEqual(withCmd.map((x) => x.id), [1, 2, 3, null, 4, 5]);
  assert.equal(P.newestId(withCmd), 5);
  assert.equal(P.oldestId(withCmd), 1);
  assert.equal(P.oldestId([]), null);
});

test('a deleted message leaves the list, the others stay in order', () => {
  const m = (id) => ({ id, text: `m${id}`, kind: 'message' });
  const cmd = { id: null, text: '/stock=aapl.us', kind: 'command', after: 2 };
  const list = P.mergeMessages([m(1), m(2), m(3)], [cmd]);
  assert.deepEqual(P.withoutMessage(list, 2).map((x) => x.text), ['m1', '/stock=aapl.us', 'm3']);
  assert.equal(P.withoutMessage(list, 9).length, 4, 'an unknown id changes nothing');
});
