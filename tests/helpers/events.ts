import type { CanonicalEvent } from '../../core/events/canonical.ts';

/** A canonical event as the edge produces it; override what a test cares about. Runtime-neutral (used in workerd too). */
export function canonicalEvent(orgId: string, eventId: string, overrides: Partial<CanonicalEvent> = {}): CanonicalEvent {
  const now = new Date().toISOString();
  return {
    org_id: orgId,
    event_id: eventId,
    id_source: 'edge',
    type: 'impression',
    occurred_at: now,
    received_at: now,
    campaign_id: null,
    creative_id: null,
    asset_ids: [],
    user_key: null,
    click_id: null,
    value: null,
    currency: null,
    status: null,
    properties: {},
    context: { source: 'test' },
    ...overrides,
  };
}
