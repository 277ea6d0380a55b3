import { createServer, type RequestListener, type Server } from 'node:http';
import type { Browser } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { signClick } from '../../core/click.ts';
import { deriveSecret } from '../../core/secrets.ts';
import { startHttpServer, type HttpServer } from '../../functions/node.ts';
import { launchChromium } from '../helpers/browser.ts';
import { BACKEND } from '../helpers/database.ts';
import { createIngestHarness, SERVER_SECRET, type IngestHarness } from '../helpers/ingest.ts';

// A person's click, end to end: a real Chromium opens a publisher's page, clicks the ad, is
// redirected by Precise, and lands on the advertiser's page with the click id; the click is in
// the database.
async function listen(handler: RequestListener): Promise<{ server: Server; url: string }> {
  const server = createServer(handler);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { server, url: `http://127.0.0.1:${(server.address() as { port: number }).port}` };
}

describe(`a click in a real browser (${BACKEND})`, () => {
  let h: IngestHarness;
  let precise: HttpServer;
  let advertiser: { server: Server; url: string };
  let publisher: { server: Server; url: string };
  let browser: Browser;
  const landings: string[] = [];

  beforeAll(async () => {
    h = await createIngestHarness();
    precise = await startHttpServer({ services: h.services, port: 0, host: '127.0.0.1' });
    advertiser = await listen((request, response) => {
      landings.push(request.url ?? '');
      response.writeHead(200, { 'content-type': 'text/html' });
      response.end('<!doctype html><title>Offer</title><h1 id="offer">Winter offer</h1>');
    });
    const keyId = (await h.services.keys.resolve(h.publishableKey))!.id;
    const destination = `${advertiser.url}/offer?clk={click_id}`;
    const sig = signClick(deriveSecret(SERVER_SECRET, 'click-signing', keyId), destination, null, 'crv-browser');
    const clickUrl = `${precise.url}/v1/click?${new URLSearchParams({ key: h.publishableKey, url: destination, crv: 'crv-browser', sig })}`;
    publisher = await listen((_request, response) => {
      response.writeHead(200, { 'content-type': 'text/html' });
      response.end(`<!doctype html><title>News</title><p>Story</p><a id="ad" href="${clickUrl.replaceAll('&', '&amp;')}">Winter sale</a>`);
    });
    // a system Chromium where there is one, else the npm package's (tests/helpers/browser.ts)
    const launched = await launchChromium();
    browser = launched.browser;
    console.log(`browser: ${launched.choice.source} Chromium ${browser.version()} at ${launched.choice.executablePath}`);
  });
  afterAll(async () => {
    await browser?.close();
    publisher?.server.close();
    advertiser?.server.close();
    await precise?.close();
    await h?.close();
  });

  it('lands on the destination with its click id, and the click is stored', async () => {
    const page = await browser.newPage();
    await page.goto(`${publisher.url}/article`);
    await Promise.all([page.waitForURL(`${advertiser.url}/offer?clk=*`), page.click('#ad')]);
    expect(await page.textContent('#offer')).toBe('Winter offer');
    const clickId = new URL(page.url()).searchParams.get('clk')!;
    expect(clickId).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    expect(landings.filter((path) => path.startsWith('/offer'))).toEqual([`/offer?clk=${clickId}`]);
    const stored = (await h.events()).filter((event) => event.type === 'click');
    expect(stored).toHaveLength(1);
    expect(stored[0]).toMatchObject({ click_id: clickId, creative_id: 'crv-browser' });
    expect(stored[0]!.context.source).toBe('click');
    // the browser's user agent was parsed at the edge (headless Chromium announces itself)
    expect(stored[0]!.context.device.type).toMatch(/^(desktop|bot)$/);
  });
});
