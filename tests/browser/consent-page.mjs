// Browser test of the consent storage page (`fapi-gateway fixture consent-storage`):
// the customer sees an authorised consent and revokes it with the page's own button.
//
//   node consent-page.mjs --url http://127.0.0.1:PORT/ --consent ID [--screenshot FILE]
//
// Drives the system Chromium (/usr/bin/chromium, `apt-get install chromium`) through
// playwright-core, which downloads no browser. Checks that the row
// tr[data-consent-id="ID"] exists with a status containing "Authorised", saves a
// screenshot of the page to FILE when given, clicks the row's Revoke button (a form
// posting to /consents/ID/revoke, answered 303 to the page), and checks that the row's
// status now contains "Revoked" and that its Revoke button is gone.
// On success prints exactly `REVOKED ID` to stdout and exits 0; on any failure prints
// the reason to stderr and exits 1. The whole run is bounded by 30 seconds.

import { parseArgs } from 'node:util';

import { chromium } from 'playwright-core';

const OVERALL_TIMEOUT_MS = 30_000;
const STEP_TIMEOUT_MS = 10_000;

const fail = (message) => {
  // Playwright's call logs carry terminal colours.
  process.stderr.write(`consent-page: ${String(message).replace(/\x1b\[[0-9;]*m/g, '')}\n`);
  process.exit(1);
};

let args;
try {
  ({ values: args } = parseArgs({
    options: {
      url: { type: 'string' },
      consent: { type: 'string' },
      screenshot: { type: 'string' },
    },
    strict: true,
  }));
} catch (e) {
  fail(`${e.message}\nusage: node consent-page.mjs --url URL --consent ID [--screenshot FILE]`);
}
if (!args.url || !args.consent) {
  fail('usage: node consent-page.mjs --url URL --consent ID [--screenshot FILE]');
}
const { url, consent: consentId } = args;

// The whole run, browser start included. process.exit runs playwright-core's exit
// handlers, which kill the browser it launched.
const deadline = setTimeout(() => fail(`timed out after ${OVERALL_TIMEOUT_MS / 1000} s`), OVERALL_TIMEOUT_MS);

// JSON string syntax is valid CSS string syntax for any id.
const rowSelector = `tr[data-consent-id=${JSON.stringify(consentId)}]`;

// The status cell: the column whose header reads "Status" when the table has headers,
// otherwise the third cell (id, TPP, status, permissions, accounts, created).
async function statusText(page) {
  const row = page.locator(rowSelector);
  const count = await row.count();
  if (count !== 1) {
    throw new Error(`expected one row ${rowSelector} on ${page.url()}, found ${count}`);
  }
  const column = await row.evaluate((tr) => {
    const table = tr.closest('table');
    const headerRow = table?.querySelector('thead tr') ?? table?.querySelector('tr:has(th)');
    const headers = headerRow ? [...headerRow.children].map((c) => c.textContent.trim().toLowerCase()) : [];
    const i = headers.findIndex((h) => h === 'status' || h.startsWith('status'));
    return i >= 0 ? i : 2;
  });
  const cells = row.locator(':scope > td, :scope > th');
  const cellCount = await cells.count();
  if (column >= cellCount) {
    throw new Error(`row ${rowSelector} has ${cellCount} cells, no status cell (column ${column + 1})`);
  }
  return (await cells.nth(column).innerText()).trim();
}

const revokeButton = (page) =>
  page.locator(`${rowSelector} form[method="post" i][action$="/revoke"] button[type="submit"]`, { hasText: 'Revoke' });

let browser;
try {
  browser = await chromium.launch({
    executablePath: '/usr/bin/chromium',
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--no-first-run',
      '--disable-quic',
    ],
    headless: true,
    timeout: STEP_TIMEOUT_MS,
  });
  const page = await browser.newPage();
  page.setDefaultTimeout(STEP_TIMEOUT_MS);
  page.setDefaultNavigationTimeout(STEP_TIMEOUT_MS);

  const response = await page.goto(url, { waitUntil: 'load' });
  if (!response || !response.ok()) {
    throw new Error(`GET ${url}: ${response ? `HTTP ${response.status()}` : 'no response'}`);
  }

  const before = await statusText(page);
  if (!before.includes('Authorised')) {
    throw new Error(`consent ${consentId} has status "${before}", expected Authorised`);
  }
  if (args.screenshot) {
    await page.screenshot({ path: args.screenshot, fullPage: true });
  }

  const button = revokeButton(page);
  if ((await button.count()) !== 1) {
    throw new Error(`row ${rowSelector} has no Revoke button in a form posting to .../revoke`);
  }
  // The POST is answered 303 to the page: wait for that page to load.
  const [navigation] = await Promise.all([
    page.waitForNavigation({ waitUntil: 'load' }),
    button.click(),
  ]);
  if (!navigation || !navigation.ok()) {
    throw new Error(`revoking: ${navigation ? `HTTP ${navigation.status()} from ${navigation.url()}` : 'no navigation'}`);
  }

  const after = await statusText(page);
  if (!after.includes('Revoked')) {
    throw new Error(`after Revoke, consent ${consentId} has status "${after}", expected Revoked`);
  }
  if ((await revokeButton(page).count()) !== 0) {
    throw new Error(`after Revoke, row ${rowSelector} still has a Revoke button`);
  }

  await browser.close();
  clearTimeout(deadline);
  process.stdout.write(`REVOKED ${consentId}\n`);
  process.exit(0);
} catch (e) {
  fail(e?.message ?? String(e));
}
