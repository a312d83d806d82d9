#!/usr/bin/env node
// Drives a real headless Chromium (Debian's /usr/bin/chromium, through playwright-core)
// through the gateway's login and consent pages, for mcp-auth-gateway's end-to-end tests.
//
//   node tests/node/browser_login.mjs --url AUTHORIZE_URL --redirect REDIRECT_PREFIX \
//        --username alice --password PW --screenshots DIR [--viewport 390x844] [--deny]
//
// Prints ONE line of JSON on stdout: {"ok":true,"location":"<redirect URL with code>",
// "pages":[...]} or {"ok":false,"error":"..."}; diagnostics go to stderr. Screenshots of
// every page are written to DIR (login.png, consent.png).

import { chromium } from 'playwright-core';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';

for (const name of ['log', 'info', 'debug', 'warn']) {
    console[name] = (...args) => console.error(...args);
}

function args() {
    const out = { viewport: '1280x800', deny: false };
    const argv = process.argv.slice(2);
    for (let i = 0; i < argv.length; i++) {
        const key = argv[i].replace(/^--/, '');
        if (key === 'deny') {
            out.deny = true;
        } else {
            out[key] = argv[++i];
        }
    }
    for (const required of ['url', 'redirect', 'username', 'password', 'screenshots']) {
        if (!out[required]) throw new Error(`--${required} is required`);
    }
    return out;
}

let browser;
async function main() {
    const opts = args();
    mkdirSync(opts.screenshots, { recursive: true });
    const [width, height] = opts.viewport.split('x').map(Number);
    browser = await chromium.launch({
        executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
        headless: true,
        // Root in CI, and a closed network: no sandbox, no background traffic.
        args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
            '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    });
    const context = await browser.newContext({ viewport: { width, height } });
    const page = await context.newPage();
    // The redirect back to the client is where the browser's part ends: record it, do not
    // load it (nothing has to listen there).
    let location = null;
    await page.route(url => url.href.startsWith(opts.redirect), async route => {
        location = route.request().url();
        await route.fulfill({ status: 200, contentType: 'text/plain', body: 'done' });
    });
    const pages = [];
    const jsErrors = [];
    page.on('pageerror', e => jsErrors.push(String(e)));

    const login = await page.goto(opts.url);
    if (!login || login.status() !== 200) throw new Error(`authorize answered ${login && login.status()}`);
    await page.waitForSelector('form#login');
    pages.push({ title: await page.title(), url: page.url() });
    await page.screenshot({ path: join(opts.screenshots, 'login.png'), fullPage: true });
    await page.fill('#username', opts.username);
    await page.fill('#password', opts.password);
    await Promise.all([page.waitForLoadState('load'), page.click('button[type=submit]')]);

    if (!location) {
        await page.waitForSelector('form#consent', { timeout: 10000 });
        pages.push({ title: await page.title(), url: page.url(), text: await page.innerText('main') });
        await page.screenshot({ path: join(opts.screenshots, 'consent.png'), fullPage: true });
        await page.click(opts.deny ? '#deny' : '#approve');
        for (let i = 0; i < 100 && !location; i++) await page.waitForTimeout(100);
    }
    if (!location) throw new Error(`never redirected back; last page ${page.url()}`);
    // No script ran on our pages (CSP forbids them; there are none).
    return { ok: true, location, pages, jsErrors };
}

main()
    .then(result => { process.stdout.write(JSON.stringify(result) + '\n'); })
    .catch(error => {
        process.stdout.write(JSON.stringify({ ok: false, error: String(error && error.stack || error) }) + '\n');
        process.exitCode = 1;
    })
    .finally(async () => { if (browser) await browser.close(); });
