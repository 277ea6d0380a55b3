import { randomUUID } from 'node:crypto';
import type { Database } from '../../core/db/port.ts';
import { hashKey, generateKey } from '../../core/keys.ts';

/** One organization with a row in every tenant table, created by the backend (superuser). */
export interface Tenant {
  orgId: string;
  ownerId: string;
  viewerId: string;
  campaignId: string;
  assetId: string;
  relationshipId: string;
  transactionId: string;
  permissionId: string;
  keyId: string;
  failedEventId: string;
  eventId: string;
}

export async function createAuthUser(db: Database, email: string): Promise<string> {
  const id = randomUUID();
  await db.query('insert into auth.users (id, email, raw_user_meta_data) values ($1, $2, $3)', [
    id,
    email,
    { display_name: email.split('@')[0] },
  ]);
  return id;
}

export async function seedTenant(db: Database, name: string): Promise<Tenant> {
  const one = async (text: string, params: unknown[]) => (await db.query<{ id: string }>(text, params)).rows[0]!.id;
  const slug = name.toLowerCase().replace(/\W+/g, '-');
  const ownerId = await createAuthUser(db, `owner@${slug}.test`);
  const viewerId = await createAuthUser(db, `viewer@${slug}.test`);
  const orgId = await one(`insert into organizations (name, kind) values ($1, 'both') returning id`, [name]);
  await db.query(`insert into org_members (org_id, user_id, role) values ($1, $2, 'owner'), ($1, $3, 'viewer')`, [
    orgId,
    ownerId,
    viewerId,
  ]);
  const campaignId = await one(
    `insert into campaigns (org_id, name, status, properties) values ($1, $2, 'active', $3) returning id`,
    [orgId, `${name} launch`, { budget: 50000, targeting: { age: '25-54' }, creative_fatigue_threshold: 2000000 }],
  );
  const assetId = await one(
    `insert into data_assets (org_id, name, asset_type, properties) values ($1, $2, 'audience', $3) returning id`,
    [orgId, `${name} auto intenders`, { size: 1000000, quality_score: 95 }],
  );
  const relationshipId = await one(
    `insert into relationships (org_id, relationship_type, source_type, source_id, target_type, target_id)
     values ($1, 'campaign_uses_asset', 'campaign', $2, 'data_asset', $3) returning id`,
    [orgId, campaignId, assetId],
  );
  const transactionId = await one(
    `insert into transactions (org_id, transaction_type, amount, currency, properties)
     values ($1, 'data_purchase', 120.50, 'USD', $2) returning id`,
    [orgId, { line_items: [{ asset_id: assetId, amount: 120.5 }] }],
  );
  const permissionId = await one(
    `insert into permissions (org_id, grantee_type, grantee_role, resource_type, resource_id, action)
     values ($1, 'role', 'viewer', 'data_asset', $2, 'read') returning id`,
    [orgId, assetId],
  );
  const keyId = await one(
    `insert into api_keys (org_id, kind, prefix, key_hash, scopes) values ($1, 'secret', 'sk_test', $2, '{read}') returning id`,
    [orgId, hashKey(generateKey('secret'))],
  );
  const failedEventId = await one(
    `insert into failed_events (org_id, source, reason_code, reason, payload) values ($1, 'pixel', 'bad_value', 'v is not a number', 'v=abc') returning id`,
    [orgId],
  );
  await db.query(`insert into integrations (org_id, name, properties) values ($1, $2, '{"secret_version": 1}')`, [orgId, `${name} DSP`]);
  const eventId = randomUUID();
  await db.query(
    `insert into events (org_id, event_id, type, occurred_at, campaign_id) values ($1, $2, 'impression', now(), $3)`,
    [orgId, eventId, campaignId],
  );
  await db.query(
    `insert into metrics (org_id, metric, entity_type, entity_id, granularity, bucket_start, value)
     values ($1, 'impressions', 'campaign', $2, '15m', date_trunc('hour', now()), 1)`,
    [orgId, campaignId],
  );
  return {
    orgId,
    ownerId,
    viewerId,
    campaignId,
    assetId,
    relationshipId,
    transactionId,
    permissionId,
    keyId,
    failedEventId,
    eventId,
  };
}

/**
 * Campaigns and data assets with the given ids, owned by an organization: events name only what
 * their organization owns (or is licensed to use); anything else is kept apart, never counted.
 */
export async function ownEntities(db: Database, orgId: string, ids: { campaigns?: string[]; assets?: string[] }): Promise<void> {
  for (const id of ids.campaigns ?? []) {
    await db.query(`insert into campaigns (id, org_id, name, status) values ($1, $2, $3, 'active')`, [id, orgId, `campaign ${id.slice(0, 8)}`]);
  }
  for (const id of ids.assets ?? []) {
    await db.query(`insert into data_assets (id, org_id, name, asset_type) values ($1, $2, $3, 'audience')`, [id, orgId, `asset ${id.slice(0, 8)}`]);
  }
}
