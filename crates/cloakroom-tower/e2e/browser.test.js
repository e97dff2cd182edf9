// The real-browser test of the Cloakroom demo site, with Debian's headless Chromium driven
// by playwright-core (never a browser download of its own). Run by
// scripts/check.d/50-browser.sh, which starts the demo and sets DEMO_URL and SHOTS.
//
// Two browser contexts (two cookie jars) log in as the same user; A signs out the other
// sessions; B's next page load lands on the login page. A form post without the CSRF token
// gets 403. A tampered session cookie is treated as logged out. Each step is screenshotted.
'use strict';
const { chromium } = require('playwright-core');
const { check, shot, run, shots } = require('./checks');
const fs = require('fs');

const base = process.env.DEMO_URL || 'http://127.0.0.1:3000';
const COOKIE = 'cloakroom-session';

async function fillCredentials(page, action, user, password) {
  await page.goto(`${base}${action}`);
  await page.fill('#name', user);
  await page.fill('#password', password);
  await Promise.all([page.waitForURL(`${base}/`), page.click('#submit')]);
}

async function main() {
  fs.mkdirSync(shots, { recursive: true });
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    // playwright gives every launch a fresh, temporary --user-data-dir of its own.
    args: [
      '--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
      '--disable-component-update', '--disable-sync', '--no-first-run', '--disable-quic',
    ],
  });
  try {
    const user = `ada${Date.now()}`;
    const password = 'correct horse battery';
    const a = await browser.newContext();
    const b = await browser.newContext();
    const pa = await a.newPage();
    const pb = await b.newPage();

    await fillCredentials(pa, '/signup', user, password);
    check((await pa.textContent('#who')).includes(user), 'A signed up and is signed in');
    check((await pa.textContent('#flash')).includes('Welcome'), 'A sees the welcome flash');
    await shot(pa, '01-a-signed-up');
    await pa.reload();
    check((await pa.locator('#flash').count()) === 0, 'the flash is shown once');

    await fillCredentials(pb, '/login', user, password);
    check((await pb.textContent('#who')).includes(user), 'B signed in as the same user');
    check((await pb.textContent('#flash')).includes('Signed in as'), 'B sees the login flash');
    await shot(pb, '02-b-signed-in');

    await pa.goto(`${base}/sessions`);
    check((await pa.locator('tr.session').count()) === 2, "A's sessions page lists both devices");
    await shot(pa, '03-a-sessions');
    await Promise.all([pa.waitForURL(`${base}/sessions`), pa.click('#sign-out-others')]);
    check((await pa.textContent('#flash')).includes('Signed out 1 other'), 'A signed out 1 other session');
    check((await pa.locator('tr.session').count()) === 1, 'one session left');
    await shot(pa, '04-a-signed-out-others');

    await pb.goto(`${base}/`);
    check(pb.url() === `${base}/login`, "B's next page load lands on the login page");
    await shot(pb, '05-b-on-login-page');

    await pa.goto(`${base}/`);
    const [response] = await Promise.all([
      pa.waitForResponse((r) => r.url() === `${base}/logout`),
      pa.evaluate(() => {
        const form = document.createElement('form');
        form.method = 'post';
        form.action = '/logout';
        document.body.append(form);
        form.submit();
      }),
    ]);
    check(response.status() === 403, `a form post without the CSRF token gets 403 (got ${response.status()})`);
    await pa.waitForLoadState();
    await shot(pa, '06-a-post-without-csrf-403');
    await pa.goto(`${base}/`);
    check((await pa.textContent('#who')).includes(user), 'A is still signed in after the refused post');

    // Per-session end: B signs in again, A ends B's session from the list.
    await fillCredentials(pb, '/login', user, password);
    await pa.goto(`${base}/sessions`);
    check((await pa.locator('tr.session').count()) === 2, 'B is back in the list');
    await Promise.all([pa.waitForURL(`${base}/sessions`), pa.click('tr.session button')]);
    check((await pa.textContent('#flash')).includes('Session ended'), "A ended B's session");
    await shot(pa, '08-a-ended-one-session');
    await pb.goto(`${base}/`);
    check(pb.url() === `${base}/login`, 'B, ended by A, lands on the login page');

    // A password change ends every other session, and the new password works.
    await fillCredentials(pb, '/login', user, password);
    await pa.goto(`${base}/password`);
    await pa.fill('input[name=current]', password);
    await pa.fill('input[name=new]', 'a brand new passphrase');
    await Promise.all([pa.waitForURL(`${base}/`), pa.click('button')]);
    check((await pa.textContent('#flash')).includes('1 other session(s) signed out'), 'the password change signed out B');
    check((await pa.textContent('#who')).includes(user), 'A stays signed in after the change');
    await shot(pa, '09-a-changed-password');
    await pb.goto(`${base}/`);
    check(pb.url() === `${base}/login`, 'B lands on the login page after the password change');
    await fillCredentials(pb, '/login', user, 'a brand new passphrase');
    check((await pb.textContent('#who')).includes(user), 'the new password signs in');
    await shot(pb, '10-b-new-password');

    const cookies = await a.cookies();
    const session = cookies.find((c) => c.name === COOKIE);
    check(Boolean(session) && session.httpOnly && session.sameSite === 'Lax', 'the session cookie is HttpOnly and SameSite=Lax');
    const v = session.value;
    const i = Math.floor(v.length / 2);
    const tampered = v.slice(0, i) + (v[i] === 'A' ? 'B' : 'A') + v.slice(i + 1);
    await a.addCookies([{ ...session, value: tampered }]);
    const tamperedResponse = await pa.goto(`${base}/`);
    check(pa.url() === `${base}/login`, 'a tampered cookie is treated as logged out');
    check(tamperedResponse.status() === 200, 'and is not an error page');
    await shot(pa, '07-a-tampered-cookie-logged-out');
  } finally {
    await browser.close();
  }
}

run(main);
