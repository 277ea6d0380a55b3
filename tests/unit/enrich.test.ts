import { describe, expect, it } from 'vitest';
import { normaliseEvent } from '../../core/events/canonical.ts';
import { enrichRequest, hashIp, truncateIp } from '../../core/events/enrich.ts';
import { pixelInput } from '../../core/events/pixel-params.ts';

const headers = (values: Record<string, string> = {}) => ({ get: (name: string) => values[name.toLowerCase()] ?? null });

describe('enrichment', () => {
  it('truncates IPv4 to /24 and IPv6 to /48, and refuses what is not an IP', () => {
    expect(truncateIp('203.0.113.77')).toBe('203.0.113.0');
    expect(truncateIp('::ffff:198.51.100.23')).toBe('198.51.100.0');
    expect(truncateIp('2001:0db8:85a3:08d3:1319:8a2e:0370:7348')).toBe('2001:db8:85a3::');
    expect(truncateIp('2001:db8::1')).toBe('2001:db8:0::');
    expect(truncateIp('::1')).toBe('0:0:0::');
    expect(truncateIp('not-an-ip')).toBeUndefined();
    expect(truncateIp('1:2:3:4:5:6:7:8:9')).toBeUndefined();
  });

  it('reads mapped IPv4 as IPv4, drops zone ids, and refuses ambiguous or broken forms', () => {
    expect(truncateIp('::FFFF:198.51.100.23')).toBe('198.51.100.0');
    expect(truncateIp('::ffff:c633:6417')).toBe('198.51.100.0'); // the same address in hex
    expect(truncateIp(' 203.0.113.77 ')).toBe('203.0.113.0');
    expect(truncateIp('fe80::1%eth0')).toBe('fe80:0:0::');
    expect(truncateIp('2001:DB8:85A3::8A2E:370:7334')).toBe('2001:db8:85a3::');
    expect(truncateIp('2001:db8::198.51.100.23')).toBe('2001:db8:0::'); // IPv4 inside IPv6, not mapped
    // short, hex and octal IPv4 forms are not what a socket or a proxy reports: "010.1.1.1" would be 8.1.1.1
    for (const garbage of ['', '127.1', '0x7f.0.0.1', '010.1.1.1', '256.1.1.1', '1.2.3.4.5', ':::::', '1::2::3', 'fe80::1%', '::ffff:127.1', '203.0.113.7, 10.0.0.1']) {
      expect([garbage, truncateIp(garbage)]).toEqual([garbage, undefined]);
    }
  });

  it('hashes one address the same however it is written', () => {
    const day = new Date('2026-11-24T12:00:00Z');
    const hash = (ip: string) => hashIp(ip, 'secret-one-0123456789', day);
    expect(hash('::ffff:203.0.113.77')).toBe(hash('203.0.113.77'));
    expect(hash('2001:0DB8:0000:0000:0000:0000:0000:0001')).toBe(hash('2001:db8::1'));
    expect(hash('fe80::1%eth0')).toBe(hash('fe80::1'));
    expect(hash('2001:db8::2')).not.toBe(hash('2001:db8::1'));
  });

  it('accepts an end user context ip only when it is an address', () => {
    const context = enrichRequest({ source: 'api', headers: headers(), now: new Date() }, 'secret-0123456789abcdef');
    const options = { orgId: 'o', receivedAt: new Date(), context, userContext: () => context };
    const withIp = (ip: string) => normaliseEvent({ type: 'impression', context: { ip } }, options);
    for (const ip of ['203.0.113.7', '2001:db8::1', '::ffff:203.0.113.7']) expect(withIp(ip).ok).toBe(true);
    for (const ip of ['not-an-ip', '127.1', ':::::', '999.1.1.1']) expect(withIp(ip)).toMatchObject({ ok: false, rejection: { field: 'context.ip' } });
  });

  it('hashes an IP stably within a UTC day and differently across days and secrets', () => {
    const day1 = new Date('2026-11-24T00:00:01Z');
    const day1Later = new Date('2026-11-24T23:59:59Z');
    const day2 = new Date('2026-11-25T00:00:00Z');
    expect(hashIp('203.0.113.77', 'secret-one-0123456789', day1)).toBe(hashIp('203.0.113.77', 'secret-one-0123456789', day1Later));
    expect(hashIp('203.0.113.77', 'secret-one-0123456789', day1)).not.toBe(hashIp('203.0.113.77', 'secret-one-0123456789', day2));
    expect(hashIp('203.0.113.77', 'secret-one-0123456789', day1)).not.toBe(hashIp('203.0.113.77', 'secret-two-0123456789', day1));
    expect(hashIp('203.0.113.77', 'secret-one-0123456789', day1)).toMatch(/^[0-9a-f]{32}$/);
  });

  it('limits processing under GPC and keeps only the device type when anonymous', () => {
    const base = { source: 'pixel', ip: '203.0.113.77', userAgent: 'Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1', cf: { country: 'DE', city: 'Berlin' }, now: new Date() };
    const gpc = enrichRequest({ ...base, headers: headers({ 'sec-gpc': '1' }) }, 'secret-0123456789abcdef');
    expect(gpc.ip).toBeUndefined();
    expect(gpc.geo).toEqual({ country: 'DE' });
    expect(gpc.consent).toMatchObject({ gpc: true, limited: true });
    const anon = enrichRequest({ ...base, headers: headers({ 'x-precise-anonymous': 'true' }) }, 'secret-0123456789abcdef');
    expect(anon).toMatchObject({ anonymous: true, device: { type: 'mobile' } });
    expect(anon.device).toEqual({ type: 'mobile' });
    const full = enrichRequest({ ...base, headers: headers() }, 'secret-0123456789abcdef');
    expect(full.ip?.truncated).toBe('203.0.113.0');
    expect(full.geo).toEqual({ country: 'DE', city: 'Berlin' });
  });
});

describe('pixel parameters and normalisation', () => {
  it('maps the pixel contract onto the canonical input', () => {
    const input = pixelInput(new URLSearchParams('ev=click&cmp=0D000000-0000-4000-8000-000000000001&crv=c1&ast=a,b&uid=u&eid=e1&ts=1764000000000&v=1.5&cur=EUR&p.size=300x250&cb=999'));
    expect(input).toEqual({
      type: 'click',
      campaign_id: '0D000000-0000-4000-8000-000000000001',
      creative_id: 'c1',
      asset_ids: ['a', 'b'],
      user_key: 'u',
      event_id: 'e1',
      occurred_at: 1764000000000,
      value: 1.5,
      currency: 'EUR',
      properties: { size: '300x250' },
    });
  });

  it('lower-cases ids, keeps value as a number, and names a non-numeric value', () => {
    const context = { source: 'pixel' };
    const ok = normaliseEvent({ type: 'conversion', campaign_id: '0D000000-0000-4000-8000-000000000001', value: 10, currency: 'USD' }, { orgId: 'o', receivedAt: new Date(), context });
    expect(ok.ok && ok.event.campaign_id).toBe('0d000000-0000-4000-8000-000000000001');
    const bad = normaliseEvent(pixelInput(new URLSearchParams('v=12abc')), { orgId: 'o', receivedAt: new Date(), context });
    expect(bad).toMatchObject({ ok: false, rejection: { code: 'invalid_field', field: 'value' } });
    const noValue = normaliseEvent({ type: 'conversion', currency: 'USD' }, { orgId: 'o', receivedAt: new Date(), context });
    expect(noValue).toMatchObject({ ok: false, rejection: { field: 'value' } });
    const old = normaliseEvent({ type: 'click', occurred_at: '2020-01-01T00:00:00Z' }, { orgId: 'o', receivedAt: new Date(), context });
    expect(old).toMatchObject({ ok: false, rejection: { code: 'occurred_at_out_of_range' } });
  });
});
