import { describe, expect, it } from 'vitest';
import { normaliseEvent } from '../../core/events/canonical.ts';

describe('canonical event normalisation', () => {
  const options = { orgId: '0d000000-0000-4000-8000-000000000001', receivedAt: new Date('2026-05-01T00:00:00Z'), context: { source: 'test' } };

  it('counts an asset named twice by one event once, whatever its case', () => {
    const asset = 'A0000000-0000-4000-8000-00000000000A';
    const result = normaliseEvent({ type: 'data_usage', asset_ids: [asset, asset.toLowerCase(), '0b000000-0000-4000-8000-00000000000b'] }, options);
    expect(result.ok).toBe(true);
    if (result.ok) expect(result.event.asset_ids).toEqual([asset.toLowerCase(), '0b000000-0000-4000-8000-00000000000b']);
  });
});
