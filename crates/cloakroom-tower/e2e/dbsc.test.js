// The Device Bound Session Credentials test of the Cloakroom demo, in Debian's headless
// Chromium with DBSC switched on and software keys (driven by playwright-core, never a
// browser download of its own). Run by scripts/check.d/51-dbsc-browser.sh, which puts the
// demo behind a TLS proxy whose certificate this browser's NSS database trusts, and sets
// DEMO_URL (https), CA_FILE, BOUND_SECS, DEMO_LOG, SHOTS and HOME.
//
// The browser signs up; its session gets bound to a key the browser keeps (the sessions
// page says so and the demo logged the registration). A thief copies every cookie into a
// plain HTTP client: the copy works at first (the bound cookie is fresh), and once the
// bound cookie's lifetime has passed, the copy is logged out while the browser, which
// refreshes by itself with its key, stays signed in.
'use strict';
const { chromium } = require('playwright-core');
const https = require('https');
const { check, shot, run, shots } = require('./checks');
const fs = require('fs');

const base = process.env.DEMO_URL;
const boundSecs = Number(process.env.BOUND_SECS || '8');
const demoLog = process.env.DEMO_LOG;
const ca = fs.readFileSync(process.env.CA_FILE);
const BOUND = 'cloakroom-session-bound';

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// The thief's plain HTTP client: GET with exactly the given cookies, no redirects followed.
function thiefGet(urlPath, cookies) {
  return new Promise((resolve, reject) => {
    const header = cookies.map((c) => `${c.name}=${c.value}`).join('; ');
    const req = https.request(`${base}${urlPath}`, { method: 'GET', ca, headers: { Cookie: header } }, (res) => {
      let body = '';
      res.on('data', (d) => { body += d; });
      res.on('end', () => resolve({ status: res.statusCode, location: res.headers.location || '', body }));
    });
    req.on('error', reject);
    req.end();
  });
}

function log() {
  return fs.readFileSync(demoLog, 'utf8');
}

async function until(what, f, ms) {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (await f()) return true;
    await sleep(250);
  }
  console.log(`(gave up waiting for ${what})`);
  return false;
}

async function main() {
  fs.mkdirSync(shots, { recursive: true });
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    env: { ...process.env, HOME: process.env.HOME },
    args: [
      '--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
      '--disable-component-update', '--disable-sync', '--no-first-run', '--disable-quic',
      '--enable-features=DeviceBoundSessions,EnableBoundSessionCredentialsSoftwareKeysForManualTesting',
      '--disable-features=DeviceBoundSessionsRefreshQuota',
    ],
  });
  try {
    const context = await browser.newContext();
    const page = await context.newPage();
    const user = `dbsc${Date.now()}`;
    await page.goto(`${base}/signup`);
    await page.fill('#name', user);
    await page.fill('#password', 'correct horse battery');
    await Promise.all([page.waitForURL(`${base}/`), page.click('#submit')]);
    check((await page.textContent('#who')).includes(user), 'signed up and signed in over https');

    const registered = await until('the registration', () => log().includes('session bound to a device key'), 15000);
    check(registered, 'the browser registered a key by itself (the demo logged the binding)');
    const hasBound = await until('the bound cookie', async () => (await context.cookies()).some((c) => c.name === BOUND), 5000);
    check(hasBound, 'the browser holds the bound cookie the registration set');
    await page.goto(`${base}/sessions`);
    check((await page.textContent('#this-binding')).includes("bound to this device's key"), 'the sessions page says this session is bound');
    check((await page.locator('td.bound').count()) === 1, 'the session list marks it bound');
    await shot(page, 'dbsc-01-bound');

    // The thief copies every cookie.
    const stolen = await context.cookies();
    const firstBound = stolen.find((c) => c.name === BOUND).value;
    const fresh = await thiefGet('/', stolen);
    check(fresh.status === 200 && fresh.body.includes(user), 'the copy works while the bound cookie is fresh');

    await sleep((boundSecs + 3) * 1000);
    const stale = await thiefGet('/', stolen);
    check(stale.status >= 300 && stale.status < 400 && stale.location === '/login',
      `after ${boundSecs} s the copy is logged out (got ${stale.status} to ${stale.location || 'nowhere'})`);
    const noBound = await thiefGet('/', stolen.filter((c) => c.name !== BOUND));
    check(noBound.status >= 300 && noBound.location === '/login', 'the long-lived cookie alone is logged out');

    await page.goto(`${base}/`);
    check(page.url() === `${base}/` && (await page.textContent('#who')).includes(user),
      'the browser stays signed in');
    const renewed = (await context.cookies()).find((c) => c.name === BOUND);
    check(renewed !== undefined && renewed.value !== firstBound, 'the browser refreshed its bound cookie with its key');
    await shot(page, 'dbsc-02-still-signed-in');
  } finally {
    await browser.close();
  }
}

run(main);
