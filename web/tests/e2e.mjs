// Opens a deep link of the demo in headless Chromium (WebGPU on SwiftShader),
// waits for the run to finish, saves a screenshot and prints
// {"ids": "1,2,3", "text": "...", "error": null, "adapter": "..."} on stdout.
//
// usage: node web/tests/e2e.mjs URL SCREENSHOT.png [TIMEOUT_SECONDS]
// With TRITIUM_E2E_NO_WEBGPU=1 Chromium starts without WebGPU (to see the page say so).
// With TRITIUM_E2E_FILES=DIR the files of DIR are chosen with the page's "pick files"
// input, as a person would, instead of a ?model= URL.
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const [url, screenshot, timeout = '600'] = process.argv.slice(2);
const executablePath = process.env.CHROMIUM ?? '/usr/lib/chromium/chromium';
const profile = mkdtempSync(join(tmpdir(), 'tritium-chromium-'));
const browser = await chromium.launchPersistentContext(profile, {
  executablePath,
  headless: true,
  viewport: { width: 1100, height: 900 },
  args: [
    '--no-sandbox', '--disable-background-networking', '--disable-component-update',
    '--disable-sync', '--no-first-run', '--disable-quic',
    ...(process.env.TRITIUM_E2E_NO_WEBGPU === '1' ? [] : ['--enable-unsafe-webgpu']),
  ],
});
let exitCode = 0;
try {
  const page = await browser.newPage();
  const console_ = [];
  page.on('console', (m) => console_.push(`${m.type()}: ${m.text()}`));
  page.on('pageerror', (e) => console_.push(`pageerror: ${e.message}`));
  await page.goto(url);
  const picked = process.env.TRITIUM_E2E_FILES;
  if (picked) {
    await page.setInputFiles('#pick-files', readdirSync(picked).map((name) => join(picked, name)));
  }
  const output = page.locator('#tritium-output');
  await page.waitForFunction(
    () => { const o = document.getElementById('tritium-output'); return o.dataset.ids !== undefined || o.dataset.error !== undefined; },
    null,
    { timeout: Number(timeout) * 1000 },
  ).catch((e) => { console_.push(`timeout: ${e.message}`); });
  await page.screenshot({ path: screenshot, fullPage: true });
  const result = {
    ids: (await output.getAttribute('data-ids')) ?? null,
    text: await output.textContent(),
    error: (await output.getAttribute('data-error')) ?? ((await page.locator('#error').textContent()) || null),
    status: await page.locator('#status').textContent(),
    adapter: await page.locator('#model-info').textContent(),
  };
  if (result.ids === null) result.console = console_;
  console.log(JSON.stringify(result));
} catch (e) {
  console.error(e);
  exitCode = 1;
} finally {
  await browser.close();
  rmSync(profile, { recursive: true, force: true });
}
process.exit(exitCode);
