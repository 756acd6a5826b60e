// The browser test: two users in headless Chromium (Debian's /usr/bin/chromium, driven by
// playwright-core) against a running chatd, one over HTTPS + wss (accepting the test's
// self-signed certificate), one over plain HTTP on loopback at a phone's width. Started by
// bot/tests/web_browser.rs, which runs chatd, the stock bot and a native-protocol user, and hands
// the addresses over in the environment. Exits non-zero, saying why, on the first failure.
//
// CHATD_WEB_HTTPS, CHATD_WEB_PLAIN: host:port of the web listeners. CHATD_ROOM: the room the
// native user filled with 60 messages. SCREENSHOTS: a directory for PNG files. TRANSCRIPT: where
// to write what the first user's page shows at the end (id, sender, text; one message a line).
import { chromium } from 'playwright-core';
import { mkdirSync, writeFileSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const env = (name) => {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set`);
  return v;
};
const httpsAddr = env('CHATD_WEB_HTTPS');
const plainAddr = env('CHATD_WEB_PLAIN');
const roomName = env('CHATD_ROOM');
const shots = env('SCREENSHOTS');
const transcript = env('TRANSCRIPT');
const PATIENCE = 20000;
mkdirSync(shots, { recursive: true });

const step = (what) => console.log(`browser test: ${what}`);

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: [
    '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
  ],
  env: { ...process.env, HOME: mkdtempSync(join(tmpdir(), 'chatd-chromium-')) },
});

try {
  // alice: HTTPS and wss, on a desktop screen. bob: plain HTTP on loopback, on a phone's screen.
  const alice = await (await browser.newContext({ ignoreHTTPSErrors: true, viewport: { width: 1200, height: 800 } })).newPage();
  const bob = await (await browser.newContext({ viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true })).newPage();
  for (const page of [alice, bob]) {
    page.setDefaultTimeout(PATIENCE);
    page.on('pageerror', (e) => console.log(`page error: ${e}`));
  }
  const port = httpsAddr.split(':').pop();
  await alice.goto(`https://localhost:${port}/`);
  await bob.goto(`http://${plainAddr}/`);

  const messages = (page) => page.locator('#messages li');
  const waitMessage = (page, text, extra = '') => page.locator(`#messages li${extra}`, { hasText: text }).first().waitFor();
  const waitCount = (page, n) => page.waitForFunction((n) => document.querySelectorAll('#messages li').length === n, n);
  const send = async (page, text) => {
    await page.fill('#text', text);
    await page.click('#send');
  };
  const signUp = async (page, user) => {
    await page.fill('#user', user);
    await page.fill('#password', `password-${user}`);
    await page.click('#signup');
    await page.locator('#chat-view').waitFor();
  };

  step('sign-up form');
  await alice.locator('body[data-ready=true]').waitFor();
  await alice.screenshot({ path: join(shots, 'login.png') });
  await signUp(alice, 'alice');
  await signUp(bob, 'bob');

  step('join: the last 50 of 60');
  await alice.fill('#join-name', roomName);
  await alice.click('#join');
  await waitCount(alice, 50);
  const first = await messages(alice).first().textContent();
  const last = await messages(alice).last().textContent();
  if (!first.includes('history 11') || !last.includes('history 60')) throw new Error(`the last 50 are wrong: ${first} .. ${last}`);

  step('older: pages back to the first');
  await alice.click('#older');
  await waitCount(alice, 60);
  if (!(await messages(alice).first().textContent()).includes('history 01')) throw new Error('older did not reach the first');
  await alice.locator('#older').waitFor({ state: 'hidden' });

  step('bob joins, members listed');
  await bob.fill('#join-name', roomName);
  await bob.click('#join');
  await waitCount(bob, 50);
  for (const who of ['alice', 'bob', 'carol']) await alice.locator('#member-list li', { hasText: who }).waitFor();

  step('live messages both ways');
  await send(alice, 'hello bob, this is alice');
  await waitMessage(bob, 'hello bob, this is alice');
  await send(bob, 'hi alice! bob here, on my phone');
  await waitMessage(alice, 'hi alice! bob here, on my phone');

  step('/stock=aapl.us: a command line, then the bot');
  await send(alice, '/stock=aapl.us');
  await waitMessage(alice, '/stock=aapl.us', '.command');
  await waitMessage(bob, '/stock=aapl.us', '.command');
  await waitMessage(alice, 'AAPL.US quote is $125.28 per share', '.bot');
  await waitMessage(bob, 'AAPL.US quote is $125.28 per share', '.bot');
  await alice.screenshot({ path: join(shots, 'room.png') });

  step('error messages in words');
  await alice.fill('#join-name', 'no/slash');
  await alice.click('#join');
  await alice.locator('#error', { hasText: 'room name is not valid' }).waitFor();

  step('a network drop: missed messages come back after the reconnect');
  await alice.evaluate(() => window.chatd.dropConnection());
  await alice.locator('#status', { hasText: 'Connection lost' }).waitFor();
  await send(bob, 'while you were away, one');
  await waitMessage(bob, 'while you were away, one', '[data-id]');
  await send(bob, 'while you were away, two');
  await waitMessage(bob, 'while you were away, two', '[data-id]');
  await alice.evaluate(() => window.chatd.reconnectNow());
  await alice.locator('#status', { hasText: 'Reconnected' }).waitFor();
  await waitMessage(alice, 'while you were away, one');
  await waitMessage(alice, 'while you were away, two');

  step('bob reloads the page and is back in the conversation');
  await bob.reload();
  await bob.locator('body[data-ready=true]').waitFor();
  if ((await bob.inputValue('#user')) !== 'bob') throw new Error('the user name was not kept for the tab');
  if ((await bob.inputValue('#password')) !== '') throw new Error('a password survived the reload');
  const stored = await bob.evaluate(() => JSON.stringify({ ...sessionStorage }) + JSON.stringify({ ...localStorage }) + document.cookie);
  if (stored.includes('password-bob')) throw new Error('the password is stored in the browser');
  await bob.fill('#user', 'alice');
  await bob.fill('#password', 'password-bob');
  await bob.click('#signup');
  await bob.locator('#error', { hasText: 'user name is taken' }).waitFor();
  await bob.fill('#user', 'bob');
  await bob.fill('#password', 'password-bob');
  await bob.click('#login');
  await waitMessage(bob, 'while you were away, two');
  await send(bob, 'back after a reload');
  await waitMessage(alice, 'back after a reload');
  await waitMessage(bob, 'back after a reload', '[data-id]');
  await bob.screenshot({ path: join(shots, 'phone.png') });

  step('transcript');
  const lines = await alice.$$eval('#messages li[data-id]', (items) =>
    items.map((li) => [li.dataset.id, li.querySelector('.sender').textContent, li.querySelector('.text').textContent].join('\t')),
  );
  writeFileSync(transcript, `${lines.join('\n')}\n`);
  step('done');
} finally {
  await browser.close();
}
