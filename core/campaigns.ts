import type { Queryable } from './db/port.ts';
import { callRpc, type SupabaseClient } from './db/supabase.ts';
import { TtlCache, type TtlCacheOptions } from './ttl-cache.ts';

/**
 * Campaign settings the edge needs (the click allow-list, external ids), read through
 * public.campaign_properties (org-scoped; the Supabase path calls it by rpc) and cached briefly.
 */
export interface CampaignStore {
  properties(orgId: string, campaignId: string): Promise<Record<string, unknown> | null>;
}

export function sqlCampaignStore(db: Queryable): CampaignStore {
  return {
    async properties(orgId, campaignId) {
      const { rows } = await db.query<{ properties: Record<string, unknown> | null }>(
        'select public.campaign_properties($1, $2) as properties',
        [orgId, campaignId],
      );
      return rows[0]?.properties ?? null;
    },
  };
}

export function supabaseCampaignStore(client: SupabaseClient): CampaignStore {
  return {
    async properties(orgId, campaignId) {
      const properties = await callRpc<Record<string, unknown> | null>(client, 'campaign_properties', { p_org_id: orgId, p_campaign_id: campaignId });
      return properties ?? null;
    },
  };
}

export class CampaignCache {
  private readonly cache: TtlCache<Record<string, unknown>>;

  constructor(store: CampaignStore, options: TtlCacheOptions<Record<string, unknown>> = {}) {
    this.cache = new TtlCache((key) => {
      const [orgId, campaignId] = key.split(' ') as [string, string];
      return store.properties(orgId, campaignId);
    }, options);
  }

  /** The campaign's properties, or null when the org has no such campaign. */
  properties(orgId: string, campaignId: string): Promise<Record<string, unknown> | null> {
    return this.cache.get(`${orgId} ${campaignId}`);
  }
}
