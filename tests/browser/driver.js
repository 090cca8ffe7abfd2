// SPDX-License-Identifier: MIT
// Drives Debian's Chromium (/usr/bin/chromium) with playwright-core for test_browser.py: one
// JSON command per line on stdin, one JSON answer per line on stdout. Never downloads a browser.
'use strict';

const readline = require('readline');
const { chromium } = require('playwright-core');

const ARGS = ['--no-sandbox', '--headless', '--disable-gpu', '--disable-background-networking',
  '--disable-component-update', '--disable-sync', '--no-first-run',
  '--disable-default-apps', '--disable-extensions', '--no-proxy-server'];

let browser = null;
let context = null;
let page = null;
const problems = []; // console errors, page errors, failed requests
const held = []; // requests stopped by hold until release
let holdRoute = null;
const opener = []; // the pages a command `open` left, newest last

// Records the problems of page p: console errors, page errors, failed requests.
function watch(p) {
  p.on('console', (m) => { if (m.type() === 'error') problems.push('console: ' + m.text()); });
  p.on('pageerror', (e) => problems.push('page error: ' + e.message));
  p.on('requestfailed', (r) => {
    // an event stream cut by the test stopping the server is not the page's fault
    if (!r.url().endsWith('/api/events')) problems.push('request failed: ' + r.url());
  });
}

const commands = {
  async launch({ width, height }) {
    browser = await chromium.launch({ executablePath: '/usr/bin/chromium', args: ARGS,
      headless: true, timeout: 60000 });
    context = await browser.newContext({ viewport: { width, height } });
    page = await context.newPage();
    watch(page);
    return browser.version();
  },
  // url in a new tab, which the other commands then work on until close_tab; the page that
  // opened it goes on running (its requests are not cut by a navigation)
  async open_tab({ url }) {
    const p = await context.newPage();
    watch(p);
    opener.push(page);
    page = p;
    const r = await p.goto(url, { waitUntil: 'load', timeout: 30000 });
    return r.status();
  },
  async close_tab() {
    await page.close();
    page = opener.pop();
    return true;
  },
  async goto({ url }) {
    const r = await page.goto(url, { waitUntil: 'load', timeout: 30000 });
    return r.status();
  },
  async viewport({ width, height }) {
    await page.setViewportSize({ width, height });
    return true;
  },
  async text({ selector }) {
    return page.locator(selector).first().textContent({ timeout: 10000 });
  },
  async count({ selector }) {
    return page.locator(selector).count();
  },
  async wait_text({ selector, pattern, timeout }) {
    await page.waitForFunction(([sel, pat]) => {
      const e = document.querySelector(sel);
      return e && new RegExp(pat).test(e.textContent);
    }, [selector, pattern], { timeout: timeout || 30000, polling: 100 });
    return page.locator(selector).first().textContent();
  },
  async wait_gone({ selector, timeout }) {
    await page.locator(selector).first().waitFor({ state: 'detached', timeout: timeout || 30000 });
    return true;
  },
  async click({ selector }) {
    await page.locator(selector).first().click({ timeout: 10000 });
    return true;
  },
  async press({ key }) {
    await page.keyboard.press(key);
    return true;
  },
  async focused() {
    return page.evaluate(() => {
      const e = document.activeElement;
      return e ? e.tagName + ':' + (e.textContent || '').trim().slice(0, 80) : '';
    });
  },
  async scheme({ dark }) {
    await page.emulateMedia({ colorScheme: dark ? 'dark' : 'light' });
    return true;
  },
  async screenshot({ path, fullPage }) {
    await page.screenshot({ path, fullPage: !!fullPage });
    return path;
  },
  // a JavaScript expression evaluated in the page; its (JSON) value is the answer
  async evaluate({ expression }) {
    return page.evaluate(expression);
  },
  // requests whose URL matches the pattern wait until release: the page as it is while loading
  async hold({ pattern }) {
    const re = new RegExp(pattern);
    holdRoute = (url) => re.test(url.href);
    await page.route(holdRoute, (route) => { held.push(route); });
    return true;
  },
  async release() {
    const n = held.length;
    for (const r of held.splice(0)) await r.continue();
    if (holdRoute) await page.unroute(holdRoute);
    holdRoute = null;
    return n;
  },
  async problems() {
    return problems.slice();
  },
  async close() {
    if (browser) await browser.close();
    browser = null;
    return true;
  },
};

const rl = readline.createInterface({ input: process.stdin });
rl.on('line', async (line) => {
  let msg;
  try {
    msg = JSON.parse(line);
    const value = await commands[msg.cmd](msg);
    process.stdout.write(JSON.stringify({ ok: true, value }) + '\n');
  } catch (e) {
    process.stdout.write(JSON.stringify({ ok: false, error: String(e && e.message || e) }) + '\n');
  }
  if (msg && msg.cmd === 'close') process.exit(0);
});
rl.on('close', async () => {
  if (browser) await browser.close();
  process.exit(0);
});
