import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createCampaign, createOrganization } from '../../core/admin.ts';
import { signClick } from '../../core/click.ts';
import { deriveSecret } from '../../core/secrets.ts';
import { runCli } from '../helpers/cli.ts';
import { BACKEND } from '../helpers/database.ts';
import { createIngestHarness, SERVER_SECRET, type IngestHarness } from '../helpers/ingest.ts';

const UUID7 = /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

describe(`click redirect GET /v1/click (${BACKEND})`, () => {
  let h: IngestHarness;
  let campaignId: string;
  let keyId: string;

  beforeAll(async () => {
    h = await createIngestHarness();
    campaignId = (
      await createCampaign(h.test.db, {
        orgId: h.orgId,
        name: 'Clicks',
        properties: { click_allow_list: ['shop.example.com', '.example.org'] },
      })
    ).id;
    keyId = (await h.services.keys.resolve(h.publishableKey))!.id;
  });
  afterAll(() => h?.close());

  const click = (params: Record<string, string>, headers: Record<string, string> = {}) =>
    h.app.request(`/v1/click?${new URLSearchParams({ key: h.publishableKey, ...params })}`, { headers });
  const sign = (url: string, cmp?: string, crv?: string) => signClick(deriveSecret(SERVER_SECRET, 'click-signing', keyId), url, cmp, crv);
  const clickRow = async (clickId: string) =>
    (await h.events()).find((event) => event.click_id === clickId);

  it('records the click durably, then redirects with {click_id} substituted (signed URL)', async () => {
    const url = 'https://landing.example.net/offer?src=precise&cid={click_id}#top';
    const response = await click({ url, cmp: campaignId, crv: 'crv-9', sig: sign(url, campaignId, 'crv-9'), uid: 'u-7' });
    expect(response.status).toBe(302);
    const location = new URL(response.headers.get('location')!);
    const clickId = location.searchParams.get('cid')!;
    expect(clickId).toMatch(UUID7);
    expect(location.origin + location.pathname).toBe('https://landing.example.net/offer');
    expect(location.hash).toBe('#top');
    expect(response.headers.get('cache-control')).toBe('no-store');
    const row = await clickRow(clickId);
    expect(row).toMatchObject({ type: 'click', campaign_id: campaignId, creative_id: 'crv-9', user_key: 'u-7' });
    expect(row!.properties.destination).toBe('https://landing.example.net/offer?src=precise&cid={click_id}#top');
    expect(row!.context.source).toBe('click');
  });

  it("follows an allow-listed host without a signature, appending pclid=", async () => {
    const response = await click({ url: 'https://shop.example.com/p/42?color=red', cmp: campaignId });
    expect(response.status).toBe(302);
    const location = new URL(response.headers.get('location')!);
    expect(location.searchParams.get('color')).toBe('red');
    expect(location.searchParams.get('pclid')).toMatch(UUID7);
    expect(await clickRow(location.searchParams.get('pclid')!)).toBeDefined();
    const subdomain = await click({ url: 'https://www.example.org/', cmp: campaignId });
    expect(subdomain.status).toBe(302);
    const apex = await click({ url: 'https://example.org/', cmp: campaignId });
    expect(apex.status).toBe(302);
  });

  it('never redirects where it was not told to: every refusal is a 400 naming the field', async () => {
    const before = (await h.events()).length;
    const refusals: Array<[Record<string, string>, string, RegExp]> = [
      [{ url: 'https://evil.example/' , cmp: campaignId }, 'url', /neither signed/],
      [{ url: 'https://shop.example.com.evil.example/', cmp: campaignId }, 'url', /neither signed/],
      [{ url: 'https://shop.example.com@evil.example/', cmp: campaignId }, 'url', /credentials/],
      [{ url: 'https://shop.example.com/' }, 'url', /neither signed/],
      [{ url: 'javascript:alert(1)', cmp: campaignId }, 'url', /scheme javascript: is not allowed/],
      [{ url: 'data:text/html,<script>alert(1)</script>', cmp: campaignId }, 'url', /scheme data:/],
      [{ url: 'https://shop.example.com/\r\nSet-Cookie: a=b', cmp: campaignId }, 'url', /control characters/],
      [{ url: 'https://shop.example.com/%0d%0aSet-Cookie:%20a=b', cmp: campaignId }, 'url', /control characters/],
      [{ url: '//evil.example/', cmp: campaignId }, 'url', /absolute http/],
      [{ cmp: campaignId }, 'url', /url is required/],
      [{ url: 'https://evil.example/', sig: sign('https://evil.example/other') }, 'sig', /does not match/],
      [{ url: 'https://evil.example/', sig: 'zz' }, 'sig', /does not match/],
      [{ url: 'https://evil.example/', cmp: campaignId, sig: sign('https://evil.example/') }, 'sig', /does not match/],
    ];
    for (const [params, field, message] of refusals) {
      const response = await click(params);
      const body = (await response.json()) as { error: { code: string; message: string; details: { field: string } } };
      expect({ params, status: response.status, field: body.error.details.field }).toEqual({ params, status: 400, field });
      expect(body.error.message).toMatch(message);
      expect(response.headers.get('location')).toBeNull();
    }
    expect((await h.events()).length).toBe(before);
  });

  it("refuses another organization's campaign allow-list and keys that are not publishable", async () => {
    const other = await createOrganization(h.test.db, { name: 'Other Org' });
    const theirs = await createCampaign(h.test.db, { orgId: other.id, name: 'Theirs', properties: { click_allow_list: ['other.example'] } });
    const borrowed = await click({ url: 'https://other.example/', cmp: theirs.id });
    expect(borrowed.status).toBe(400);
    const noKey = await h.app.request(`/v1/click?url=${encodeURIComponent('https://shop.example.com/')}`);
    expect(noKey.status).toBe(401);
    const secret = await h.app.request(`/v1/click?key=${h.ingestKey}&url=${encodeURIComponent('https://shop.example.com/')}`);
    expect(secret.status).toBe(401);
  });

  it('prints a signed click URL from the CLI that the server accepts', async () => {
    const { code, err, json } = await runCli(
      { DATABASE_URL: await h.test.connectionUrl(), PRECISE_SECRET: SERVER_SECRET, PRECISE_DATA_DIR: '/nonexistent' },
      'click-url', '--key', h.publishableKey, '--url', 'https://landing.example.net/?id={click_id}', '--cmp', campaignId, '--crv', 'crv-cli',
      '--base', 'https://collect.example.com', '--json',
    );
    expect({ code, err }).toEqual({ code: 0, err: '' });
    const signed = new URL(json.url);
    expect(signed.origin + signed.pathname).toBe('https://collect.example.com/v1/click');
    const response = await h.app.request(signed.pathname + signed.search);
    expect(response.status).toBe(302);
    expect(response.headers.get('location')).toMatch(/^https:\/\/landing\.example\.net\/\?id=[0-9a-f-]{36}$/);
  });
});
