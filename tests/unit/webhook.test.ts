import { describe, expect, it } from 'vitest';
import { mapPayload, parseMapping, signWebhook, verifyWebhookSignature, webhookEventId } from '../../core/webhook.ts';

describe('webhook signatures', () => {
  const secret = 'whsec_test';
  const body = '{"events":[]}';

  it('accepts within five minutes either way, and not a second more', () => {
    const t = 1_764_000_000;
    expect(verifyWebhookSignature(secret, signWebhook(secret, t, body), body, t + 300)).toBe(true);
    expect(verifyWebhookSignature(secret, signWebhook(secret, t, body), body, t - 300)).toBe(true);
    expect(verifyWebhookSignature(secret, signWebhook(secret, t, body), body, t + 301)).toBe(false);
    expect(verifyWebhookSignature(secret, signWebhook(secret, t, body), body, t - 301)).toBe(false);
  });

  it('refuses a changed body, another secret, and malformed headers', () => {
    const t = 1_764_000_000;
    const header = signWebhook(secret, t, body);
    expect(verifyWebhookSignature(secret, header, `${body}\n`, t)).toBe(false);
    expect(verifyWebhookSignature('whsec_other', header, body, t)).toBe(false);
    for (const bad of [undefined, '', 't=,v1=', `v1=${header.split('v1=')[1]}`, `t=${t}`, `t=abc,v1=${header.split('v1=')[1]}`]) {
      expect(verifyWebhookSignature(secret, bad, body, t)).toBe(false);
    }
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

  it('derives the same id for the same item, and another for another', () => {
    expect(webhookEventId('i', { a: 1 })).toBe(webhookEventId('i', { a: 1 }));
    expect(webhookEventId('i', { a: 1 })).not.toBe(webhookEventId('i', { a: 2 }));
    expect(webhookEventId('i', { a: 1 })).not.toBe(webhookEventId('j', { a: 1 }));
  });
});
