// The user-service dashboard in a real browser: playwright-core driving Debian's chromium
// (headless, no browser download) against cqrs_user_service on kernel-chosen ports.
//
//   node dashboard_test.mjs --server <cqrs_user_service> --out <dir for dashboard.png>
//
// Creates 'Bob' through the form and sees the OK response and his UserCreated row; a rejected
// command; renames and deletes him; drops the page's connection, creates a user behind its back
// and sees the page resume without a gap; restarts the server on the same gateway port and sees
// the page reconnect, announce the new epoch and keep working. Saves a screenshot.
// Every wait has a timeout; nothing sleeps. Exits 0 on success, 1 on failure, 77 (skip) when
// chromium is not installed.

import { spawn } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { parseArgs } from 'node:util';

const SKIP = 77;
const WAIT_MS = 15_000;  // Any single wait.
const TEST_MS = 100_000;  // The whole test (ctest allows 120 s).

const { values: args } = parseArgs({
  options: {
    server: { type: 'string' },
    out: { type: 'string', default: '.' },
    chromium: { type: 'string', default: process.env.CHROMIUM || '/usr/bin/chromium' },
  },
});
if (!args.server) {
  console.error('usage: node dashboard_test.mjs --server <cqrs_user_service> [--out <dir>]');
  process.exit(2);
}
if (!existsSync(args.chromium)) {
  console.log(`SKIP: ${args.chromium} not found (Debian's chromium; bash .ci/install-deps ` +
              'installs it)');
  process.exit(SKIP);
}
const { chromium } = await import('playwright-core');

const started = Date.now();
const log = (line) => console.log(`[${((Date.now() - started) / 1000).toFixed(1)}s] ${line}`);

// --- The service process ----------------------------------------------------------------------

const READY = /^user-service: commands on (\S+), events and dashboard on (http:\/\/\S+?)\/$/;

// Starts cqrs_user_service and resolves once it printed its ready line.
function startServer(flags) {
  const child = spawn(args.server, flags, { stdio: ['ignore', 'pipe', 'inherit'] });
  const server = {
    child,
    exited: new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal }))),
    async stop() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
      const { code, signal } = await withTimeout(server.exited, WAIT_MS, 'the server to exit');
      if (code !== 0) throw new Error(`the server exited with ${code ?? signal}`);
    },
  };
  const ready = new Promise((resolve, reject) => {
    const lines = createInterface({ input: child.stdout });
    lines.on('line', (line) => {
      log(`server: ${line}`);
      const match = READY.exec(line);
      if (match) resolve({ ...server, commands: match[1], url: `${match[2]}/` });
    });
    child.once('error', reject);
    server.exited.then(({ code, signal }) =>
      reject(new Error(`the server exited (${code ?? signal}) before it was ready`)));
  });
  return withTimeout(ready, WAIT_MS, 'the server to be ready');
}

function withTimeout(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

// --- The page ---------------------------------------------------------------------------------

// Sends one command through the form and waits for its response panel.
async function submit(page, { action, user, name, expect }) {
  await page.click(`label[for="action-${action}"]`);
  if (user !== undefined) await page.selectOption('#user-select', user);
  if (name !== undefined) await page.fill('#name-input', name);
  await page.click('#submit');
  const command = { create: 'CreateUser', rename: 'RenameUser', delete: 'DeleteUser' }[action];
  await page.waitForSelector(`#response[data-status="${expect}"][data-command="${command}"]`);
}

async function eventRow(page, type, text) {
  const row = page.locator(`#events tbody tr[data-type="${type}"]`, { hasText: text });
  await row.first().waitFor();
  return row.first();
}

// The offsets in the events table, oldest first.
async function offsets(page) {
  const values = await page.$$eval('#events tbody tr', (rows) => rows.map((r) => r.dataset.offset));
  return values.map(Number).reverse();
}

function check(condition, message) {
  if (!condition) throw new Error(message);
}

async function run(browser, servers) {
  const page = await browser.newPage({ viewport: { width: 1440, height: 960 } });
  page.setDefaultTimeout(WAIT_MS);
  const pageErrors = [];
  page.on('pageerror', (error) => pageErrors.push(error.message));
  // Expected in the console: refused WebSocket connections while the server restarts, and the
  // 422 of the command the test has rejected on purpose.
  const expected = [/WebSocket connection to .* failed/, /status of 422 \(Unprocessable Entity\)/];
  page.on('console', (message) => {
    if (message.type() === 'error' && !expected.some((re) => re.test(message.text()))) {
      pageErrors.push(message.text());
    }
  });

  let server = await startServer(['--command_port=0', '--gateway_port=0', '--log_level=error']);
  servers.push(server);
  const gatewayPort = new URL(server.url).port;
  await page.goto(server.url);
  await page.waitForSelector('#connection[data-state="live"]');
  log(`page live at ${server.url}`);

  // Create Bob: the response shows OK and his id, the event and the user appear.
  await submit(page, { action: 'create', name: 'Bob', expect: 'OK' });
  const bob = (await page.textContent('#response-user-id')).trim();
  check(/^[0-9a-f-]{36}$/.test(bob), `CreateUser answered user id '${bob}'`);
  await eventRow(page, 'UserCreated', 'Bob');
  await page.locator(`#users tbody tr[data-user-id="${bob}"]`, { hasText: 'Bob' }).waitFor();
  log(`created Bob (${bob})`);

  // The server's validation, shown with its error code.
  await submit(page, { action: 'create', name: '   ', expect: 'REJECTED' });
  check((await page.textContent('#response-code')).trim() === 'USER_NAME_EMPTY',
        'an empty name should be REJECTED with USER_NAME_EMPTY');

  await submit(page, { action: 'rename', user: bob, name: 'Robert', expect: 'OK' });
  await eventRow(page, 'UserRenamed', 'Robert');
  await page.locator(`#users tbody tr[data-user-id="${bob}"]`, { hasText: 'Robert' }).waitFor();
  await submit(page, { action: 'delete', user: bob, expect: 'OK' });
  await eventRow(page, 'UserDeleted', 'Robert');
  await page.locator(`#users tbody tr[data-user-id="${bob}"]`).waitFor({ state: 'detached' });
  log('renamed and deleted Bob');

  // Resume: while the page is disconnected a user is created elsewhere; on reconnecting the
  // page gets it from the gateway's replay, with no gap in the offsets.
  await page.evaluate(() => window.cqrsDashboard.disconnect());
  await page.waitForSelector('#connection[data-state="offline"]');
  const created = await withTimeout(fetch(`${server.url}users`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ name: 'Dave (while away)' }),
  }), WAIT_MS, 'POST /users');
  check(created.status === 201, `POST /users answered ${created.status}`);
  await page.evaluate(() => window.cqrsDashboard.connect());
  await page.waitForSelector('#connection[data-state="live"]');
  await eventRow(page, 'UserCreated', 'Dave (while away)');
  const seen = await offsets(page);
  check(seen.join() === '1,2,3,4', `offsets after the resume: ${seen.join()} (expected 1,2,3,4)`);
  check((await page.locator('#events tr.gap').count()) === 0, 'the page reported a gap');
  log(`resumed without a gap: offsets ${seen.join()}`);

  // Restart the server on the same gateway port: a new in-memory log, so a new epoch.
  const oldEpoch = (await page.textContent('#epoch')).trim();
  await server.stop();
  await page.waitForSelector('#connection[data-state="reconnecting"]');
  log('server stopped; the page is reconnecting');
  server = await startServer(['--command_port=0', `--gateway_port=${gatewayPort}`,
                              '--log_level=error']);
  servers.push(server);
  await page.waitForSelector('#connection[data-state="live"]');
  await page.locator('#notice[data-kind="warn"]', { hasText: 'new event history' }).waitFor();
  const newEpoch = (await page.textContent('#epoch')).trim();
  check(newEpoch !== oldEpoch, `the epoch shown did not change (${oldEpoch})`);
  check((await page.locator('#events tbody tr').count()) === 0,
        'the old epoch\'s events are still listed');
  log(`reconnected: epoch ${oldEpoch} -> ${newEpoch}`);

  // The page keeps working against the new server.
  for (const name of ['Carol', 'Dan', 'Eve']) {
    await submit(page, { action: 'create', name, expect: 'OK' });
    await eventRow(page, 'UserCreated', name);
  }
  const carol = await eventRow(page, 'UserCreated', 'Carol');
  check(await carol.getAttribute('data-offset') === '1', 'Carol should be offset 1 of the new epoch');
  const eve = (await page.textContent('#response-user-id')).trim();
  await submit(page, { action: 'rename', user: eve, name: 'Evelyn', expect: 'OK' });
  await eventRow(page, 'UserRenamed', 'Evelyn');
  log('commands work after the restart');

  check(pageErrors.length === 0, `errors in the page: ${pageErrors.join(' | ')}`);
  mkdirSync(args.out, { recursive: true });
  const screenshot = path.resolve(args.out, 'dashboard.png');
  await page.screenshot({ path: screenshot, fullPage: true });
  log(`screenshot: ${screenshot}`);
}

const servers = [];
let browser;
const deadline = setTimeout(() => {
  console.error(`FAIL: the test did not finish within ${TEST_MS / 1000} s`);
  for (const server of servers) server.child.kill('SIGKILL');
  process.exit(1);
}, TEST_MS);
let exitCode = 0;
try {
  browser = await chromium.launch({ executablePath: args.chromium, headless: true, timeout: WAIT_MS });
  await run(browser, servers);
  log('PASS');
} catch (error) {
  console.error(`FAIL: ${error.stack || error}`);
  exitCode = 1;
} finally {
  if (browser) await browser.close().catch(() => {});
  for (const server of servers) {
    if (server.child.exitCode === null && server.child.signalCode === null) {
      server.child.kill('SIGTERM');
      await withTimeout(server.exited, WAIT_MS, 'the server to exit').catch(() => {
        server.child.kill('SIGKILL');
      });
    }
  }
  clearTimeout(deadline);
}
process.exit(exitCode);
