import { describe, expect, it } from 'vitest';
import { mapPayload, parseMapping, signWebhook, verifyWebhookSignature, webhookEventId } from '../../core/webhooks/delivery.ts';

describe('webhook signatures', () => {
  const secret = 'whsec_test';
  const body = '{"events":[]}';

  it('accepts within five minutes either way, and not a second more', () => {
    const t = 1_764_000_000;
    expect(verifyWebhookSignature(secret, signWebhook(secret, t, body), body, t + 300)).not.toBeNull();
    expect(verifyWebhookSignature(secret, signWebhook(secret, t, body), body, t - 300)).not.toBeNull();
    expect(verifyWebhookSignature(secret, signWebhook(secret, t, body), body, t + 301)).toBeNull();
    expect(verifyWebhookSignature(secret, signWebhook(secret, t, body), body, t - 301)).toBeNull();
  });

  it('refuses a changed body, another secret, and malformed headers', () => {
    const t = 1_764_000_000;
    const header = signWebhook(secret, t, body);
    expect(verifyWebhookSignature(secret, header, `${body}\n`, t)).toBeNull();
    expect(verifyWebhookSignature('whsec_other', header, body, t)).toBeNull();
    for (const bad of [undefined, '', 't=,v1=', `v1=${header.split('v1=')[1]}`, `t=${t}`, `t=abc,v1=${header.split('v1=')[1]}`]) {
      expect(verifyWebhookSignature(secret, bad, body, t)).toBeNull();
    }
  });

  it('keys a delivery by what was verified, not by how the header is written', () => {
    const t = 1_764_000_000;
    const v1 = signWebhook(secret, t, body).split('v1=')[1]!;
    const key = verifyWebhookSignature(secret, `t=${t},v1=${v1}`, body, t);
    expect(key).toMatch(/^[0-9a-f]{64}$/);
    for (const header of [`v1=${v1}, t=${t}`, `t=${t},v1=${v1},`, `t=${t},v0=x,v1=${v1}`, `t=${t},v1=${v1.toUpperCase()}`]) {
      expect(verifyWebhookSignature(secret, header, body, t)).toBe(key);
    }
    // the same body as bytes is the same delivery; another time is another one
    expect(verifyWebhookSignature(secret, `t=${t},v1=${v1}`, new TextEncoder().encode(body), t)).toBe(key);
    expect(verifyWebhookSignature(secret, signWebhook(secret, t + 1, body), body, t)).not.toBe(key);
  });
});

describe('webhook mappings', () => {
  it('refuses a mapping it cannot apply, naming the place', () => {
    expect(() => parseMapping({ fields: { value: { transform: 'rot13' } } })).toThrow(/mapping\.fields\.value/);
    expect(() => parseMapping({ fields: { 'Bad Name': 'x' } })).toThrow(/mapping\.fields/);
    expect(() => parseMapping({ events_path: 'x', fields: {}, extra: 1 })).toThrow(/mapping/);
  });

  it('fans out over nested arrays and reads the envelope', () => {
    const mapping = parseMapping({ events_path: 'a[*].b', fields: { event_id: 'id', value: { path: 'micros', transform: 'micros' }, currency: '$root.cur', type: { const: 'win' } } });
    const items = mapPayload({ cur: 'USD', a: [{ b: [{ id: 'x', micros: 1_500_000 }] }, { b: [{ id: 'y', micros: 2 }] }] }, mapping);
    expect(items.map((item) => item.input)).toEqual([
      { event_id: 'x', value: 1.5, currency: 'USD', type: 'win' },
      { event_id: 'y', value: 0.000002, currency: 'USD', type: 'win' },
    ]);
  });

  it('derives the same id for the same mapped event, and another for another', () => {
    expect(webhookEventId('i', { a: 1 })).toBe(webhookEventId('i', { a: 1 }));
    expect(webhookEventId('i', { a: 1 })).not.toBe(webhookEventId('i', { a: 2 }));
    expect(webhookEventId('i', { a: 1 })).not.toBe(webhookEventId('j', { a: 1 }));
    expect(webhookEventId('i', { a: 1 }, 'dsp-1')).not.toBe(webhookEventId('i', { a: 1 }, 'dsp-2'));
  });

  it('derives ids from the mapped fields: reordered keys and per-delivery fields make the same id', () => {
    const mapping = parseMapping({
      events_path: 'rows',
      fields: { type: { const: 'spend' }, value: 'spend', 'properties.meta': 'meta', 'context.ip': 'ip', campaign_id: { path: 'cmp', lookup: 'external_campaign_id' } },
    });
    const idOf = (body: unknown) => {
      const [item] = mapPayload(body, mapping);
      return webhookEventId('i', item!.input as Record<string, unknown>, item!.externalCampaignId);
    };
    const first = idOf({ sent_at: 1, rows: [{ spend: 5, cmp: 'c-1', meta: { a: 1, b: [1, { x: 1, y: 2 }] }, ip: '192.0.2.1', delivered: 'mon' }] });
    const again = idOf({ rows: [{ delivered: 'tue', ip: '192.0.2.2', meta: { b: [1, { y: 2, x: 1 }], a: 1 }, cmp: 'c-1', spend: 5 }], sent_at: 2 });
    expect(again).toBe(first);
    expect(idOf({ rows: [{ spend: 6, cmp: 'c-1', meta: { a: 1, b: [1, { x: 1, y: 2 }] } }] })).not.toBe(first);
    expect(idOf({ rows: [{ spend: 5, cmp: 'c-2', meta: { a: 1, b: [1, { x: 1, y: 2 }] } }] })).not.toBe(first);
  });

  it("maps the end user's context, keeps the item without it, and reads only own properties", () => {
    const mapping = parseMapping({
      events_path: 'rows',
      fields: { type: { path: 'kind', map: { imp: 'impression' } }, 'context.ip': 'device.ip', 'context.user_agent': 'ua', currency: '$root.cur', creative_id: 'constructor' },
    });
    const [item] = mapPayload({ cur: 'USD', rows: [{ kind: 'constructor', device: { ip: '192.0.2.7', id: 'd' }, ua: 'UA/1' }] }, mapping);
    expect(item!.input).toEqual({ type: 'constructor', currency: 'USD', context: { ip: '192.0.2.7', user_agent: 'UA/1' } });
    expect(item!.raw).toEqual({ kind: 'constructor', device: { id: 'd' } });
    expect(item!.root).toEqual({ cur: 'USD' });
    // a replay maps the kept item again with the body values it was first mapped with
    const [again] = mapPayload(item!.raw, { ...mapping, events_path: '' }, { root: item!.root });
    expect(again!.input).toEqual({ type: 'constructor', currency: 'USD' });
    expect(() => parseMapping({ fields: { 'context.email': 'e' } })).toThrow(/context targets/);
  });
});
