// Opens the fastpix-sync playground in Debian's headless Chromium with every non-localhost request
// blocked, runs the default query, then a subscription, and checks what the page shows.
// Run by tests/api/playground.rs against a real server:
//   BASE_URL=http://127.0.0.1:PORT QUERY_EXPECT=... SUBSCRIPTION=... SUBSCRIPTION_EXPECT=... node playground.mjs
// Prints one line per check and exits non-zero if any failed.
import { chromium } from 'playwright-core';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const BASE_URL = process.env.BASE_URL;
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const QUERY_EXPECT = JSON.parse(process.env.QUERY_EXPECT || '[]');
const SUBSCRIPTION = process.env.SUBSCRIPTION || '';
const SUBSCRIPTION_EXPECT = JSON.parse(process.env.SUBSCRIPTION_EXPECT || '[]');

const failures = [];
const check = (ok, what) => { console.log(`${ok ? 'ok  ' : 'FAIL'} ${what}`); if (!ok) failures.push(what); };
const isLocal = (url) => {
  const u = new URL(url);
  if (['data:', 'blob:', 'about:'].includes(u.protocol)) return true;
  return ['127.0.0.1', 'localhost', '[::1]'].includes(u.hostname);
};

const profile = mkdtempSync(join(tmpdir(), 'fastpix-sync-playground-'));
const context = await chromium.launchPersistentContext(profile, {
  executablePath: CHROMIUM,
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
try {
  const page = context.pages()[0] || (await context.newPage());
  const external = [];
  const failed = [];
  const pageErrors = [];
  const frames = [];
  await context.route('**/*', (route) => {
    const url = route.request().url();
    if (isLocal(url)) return route.continue();
    external.push(url);
    return route.abort('blockedbyclient');
  });
  page.on('requestfailed', (r) => failed.push(`${r.url()} ${r.failure()?.errorText}`));
  page.on('pageerror', (e) => pageErrors.push(String(e)));
  page.on('websocket', (ws) => ws.on('framereceived', (f) => frames.push(String(f.payload))));

  await page.goto(`${BASE_URL}/`, { waitUntil: 'load' });
  await page.locator('.graphiql-execute-button').waitFor({ state: 'visible', timeout: 20000 });
  check((await page.title()) === 'fastpix-sync playground', 'page title');

  const QUERY_EDITOR = '.graphiql-query-editor .CodeMirror';
  const setQuery = (text) => page.evaluate(([sel, t]) => document.querySelector(sel).CodeMirror.setValue(t), [QUERY_EDITOR, text]);
  const result = page.locator('.graphiql-response');
  const shows = (text) => result.getByText(text).first().waitFor({ timeout: 15000 }).then(() => true, () => false);

  await page.locator('.graphiql-execute-button').click();
  for (const text of QUERY_EXPECT) check(await shows(text), `the default query's result shows ${text}`);

  if (SUBSCRIPTION) {
    await setQuery(SUBSCRIPTION);
    await page.waitForTimeout(500); // GraphiQL re-parses the editor ~100 ms after an edit
    await page.locator('.graphiql-execute-button').click();
    let acked = false;
    for (let i = 0; i < 100 && !acked; i++) {
      acked = frames.some((f) => f.includes('connection_ack'));
      if (!acked) await page.waitForTimeout(100);
    }
    // The driving test waits for this line before it posts the webhook the subscription should show.
    check(acked, 'the subscription transport (graphql-transport-ws on /graphql) connected');
    for (const text of SUBSCRIPTION_EXPECT) check(await shows(text), `the subscription result shows ${text}`);
  }

  check(external.length === 0, `no request left the machine ${JSON.stringify(external)}`);
  check(failed.length === 0, `no request failed ${JSON.stringify(failed)}`);
  check(pageErrors.length === 0, `no page error ${JSON.stringify(pageErrors)}`);
  await page.screenshot({ path: process.env.SCREENSHOT || join(tmpdir(), 'fastpix-sync-playground.png') });
} finally {
  await context.close();
  rmSync(profile, { recursive: true, force: true });
}
console.log(`${failures.length === 0 ? 'PASS' : 'FAIL'}: ${failures.length} failed`);
process.exit(failures.length === 0 ? 0 : 1);
