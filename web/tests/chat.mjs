// Chats in the demo page like a person: waits for the model (from ?model=),
// sets temperature 0 and a token limit, sends two messages with Enter, then
// presses New chat. Prints {"replies": [...], "turns_before": N, "turns_after": M}.
//
// usage: node web/tests/chat.mjs URL SCREENSHOT.png MAX_TOKENS
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const [url, screenshot, maxTokens] = process.argv.slice(2);
const profile = mkdtempSync(join(tmpdir(), 'tritium-chromium-'));
const browser = await chromium.launchPersistentContext(profile, {
  executablePath: process.env.CHROMIUM ?? '/usr/lib/chromium/chromium',
  headless: true,
  viewport: { width: 1100, height: 900 },
  args: ['--no-sandbox', '--enable-unsafe-webgpu', '--disable-background-networking', '--disable-component-update',
    '--disable-sync', '--no-first-run', '--disable-quic'],
});
try {
  const page = await browser.newPage();
  await page.goto(url);
  await page.waitForFunction(() => !document.getElementById('message').disabled, null, { timeout: 600_000 });
  await page.locator('#settings summary').click();
  await page.fill('#temperature', '0');
  await page.fill('#max-tokens', maxTokens);
  const replies = [];
  for (const message of ['Hi', 'Tell me more']) {
    await page.evaluate(() => { delete document.getElementById('tritium-output').dataset.ids; });
    await page.locator('#message').fill(message);
    await page.locator('#message').press('Enter');
    await page.waitForFunction(() => document.getElementById('tritium-output').dataset.ids !== undefined, null,
      { timeout: 600_000 });
    replies.push({
      ids: await page.locator('#tritium-output').getAttribute('data-ids'),
      text: await page.locator('#tritium-output').textContent(),
    });
  }
  await page.screenshot({ path: screenshot, fullPage: true });
  const turnsBefore = await page.locator('.turn').count();
  await page.locator('#new-chat').click();
  const turnsAfter = await page.locator('.turn').count();
  console.log(JSON.stringify({ replies, turns_before: turnsBefore, turns_after: turnsAfter }));
} finally {
  await browser.close();
  rmSync(profile, { recursive: true, force: true });
}
