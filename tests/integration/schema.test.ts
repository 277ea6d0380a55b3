import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ensureEventPartitions } from '../../scheduled/jobs/partition-upkeep.ts';
import { BACKEND, createTestDatabase, sqlState, type TestDatabase } from '../helpers/database.ts';
import { createAuthUser, seedTenant, type Tenant } from '../helpers/seed.ts';

const SEED_TABLES = [
  'organizations',
  'users',
  'org_members',
  'data_assets',
  'campaigns',
  'events',
  'metric_series',
  'relationships',
  'transactions',
  'permissions',
  'audit_log',
  'api_keys',
  'failed_events',
];
// The seed's metrics table is stored as series (above) and their points; public.metrics is a
// view of both. Beyond the seed: DSP integrations (an entity), ingestion's dedup ledger for
// sender-chosen event ids, the webhook deliveries seen within the signature tolerance, rollup
// watermarks and the rollup's state of each conversion, attribution's stores of touches and paths,
// creative fatigue's stores (campaign creatives, settings, daily detector states, verdicts,
// exposure counts per user and the exposure curve's cells), and the alert webhooks (each
// organization's secret version and state, the delivery log).
const ALL_TABLES = [
  ...SEED_TABLES,
  'metric_points',
  'integrations',
  'event_ids',
  'webhook_deliveries',
  'rollup_state',
  'rollup_conversions',
  'attribution_touches',
  'attribution_paths',
  'fatigue_creatives',
  'fatigue_campaigns',
  'fatigue_days',
  'fatigue_verdicts',
  'fatigue_exposure_users',
  'fatigue_exposure_cells',
  'alert_webhooks',
  'alert_deliveries',
];
// Logs and the audit trail itself carry no updated_at; every entity does.
const ENTITY_TABLES = [...SEED_TABLES, 'integrations'].filter((table) => !['events', 'audit_log'].includes(table));

const utcDay = (offsetDays: number) => {
  const day = new Date(Date.now() + offsetDays * 86_400_000);
  return day.toISOString().slice(0, 10).replaceAll('-', '');
};

describe(`schema (${BACKEND})`, () => {
  let test: TestDatabase;
  let tenant: Tenant;

  beforeAll(async () => {
    test = await createTestDatabase();
    tenant = await seedTenant(test.db, 'Schema Co');
  });
  afterAll(() => test?.drop());

  it('has every table of the seed', async () => {
    const { rows } = await test.db.query<{ name: string }>(
      `select c.relname as name from pg_class c join pg_namespace n on n.oid = c.relnamespace
       where n.nspname = 'public' and c.relkind in ('r', 'p') and not c.relispartition`,
    );
    expect(rows.map((row) => row.name).sort()).toEqual([...ALL_TABLES].sort());
  });

  it('gives every entity a JSONB properties object and timestamps', async () => {
    const { rows } = await test.db.query<{ table_name: string; column_name: string; data_type: string; is_nullable: string; column_default: string | null }>(
      `select table_name, column_name, data_type, is_nullable, column_default
       from information_schema.columns
       where table_schema = 'public' and column_name in ('properties', 'created_at', 'updated_at')`,
    );
    for (const table of ENTITY_TABLES) {
      const columns = Object.fromEntries(rows.filter((row) => row.table_name === table).map((row) => [row.column_name, row]));
      expect({ table, properties: columns.properties?.data_type }).toEqual({ table, properties: 'jsonb' });
      expect({ table, nullable: columns.properties?.is_nullable }).toEqual({ table, nullable: 'NO' });
      expect({ table, default: columns.properties?.column_default }).toEqual({ table, default: `'{}'::jsonb` });
      expect({ table, created: columns.created_at?.data_type }).toEqual({ table, created: 'timestamp with time zone' });
      expect({ table, updated: columns.updated_at?.data_type }).toEqual({ table, updated: 'timestamp with time zone' });
    }
  });

  it('enables row level security on every table, partitions included', async () => {
    const { rows } = await test.db.query<{ name: string; rls: boolean }>(
      `select n.nspname || '.' || c.relname as name, c.relrowsecurity as rls
       from pg_class c join pg_namespace n on n.oid = c.relnamespace
       where n.nspname in ('public', 'private') and c.relkind in ('r', 'p')`,
    );
    expect(rows.length).toBeGreaterThan(SEED_TABLES.length);
    expect(rows.filter((row) => !row.rls).map((row) => row.name)).toEqual([]);
  });

  it('keeps updated_at itself and refuses a properties value that is not an object', async () => {
    const before = await test.db.query<{ updated_at: Date }>('select updated_at from campaigns where id = $1', [tenant.campaignId]);
    await test.db.query(`update campaigns set properties = properties || '{"budget": 60000}', updated_at = '2000-01-01' where id = $1`, [
      tenant.campaignId,
    ]);
    const after = await test.db.query<{ updated_at: Date }>('select updated_at from campaigns where id = $1', [tenant.campaignId]);
    expect(after.rows[0]!.updated_at.getTime()).toBeGreaterThanOrEqual(before.rows[0]!.updated_at.getTime());
    expect(
      await sqlState(() => test.db.query(`update campaigns set properties = '[1, 2]' where id = $1`, [tenant.campaignId])),
    ).toBe('23514');
  });

  it('writes an audit row for every insert, update and delete, with who and before/after', async () => {
    const actor = await createAuthUser(test.db, 'auditor@schema.test');
    await test.db.query(`insert into org_members (org_id, user_id, role) values ($1, $2, 'admin')`, [tenant.orgId, actor]);
    const assetId = await test.db.transaction(async (tx) => {
      await tx.query(`select set_config('request.jwt.claims', $1, true)`, [JSON.stringify({ sub: actor, role: 'authenticated' })]);
      await tx.query('set local role authenticated');
      const inserted = await tx.query<{ id: string }>(
        `insert into data_assets (org_id, name, asset_type) values ($1, 'Geo visits', 'location') returning id`,
        [tenant.orgId],
      );
      const id = inserted.rows[0]!.id;
      await tx.query(`update data_assets set properties = '{"size": 42}' where id = $1`, [id]);
      await tx.query('update data_assets set updated_at = now() where id = $1', [id]);
      await tx.query(`delete from data_assets where id = $1`, [id]);
      return id;
    });
    const { rows } = await test.db.query<{
      action: string;
      actor_id: string;
      actor_role: string;
      org_id: string;
      old_data: { properties: object } | null;
      new_data: { properties: object } | null;
    }>(`select action, actor_id, actor_role, org_id, old_data, new_data from audit_log where record_id = $1 order by id`, [assetId]);
    // the timestamp-only update leaves no row
    expect(rows.map((row) => row.action)).toEqual(['INSERT', 'UPDATE', 'DELETE']);
    expect(rows.every((row) => row.actor_id === actor && row.actor_role === 'authenticated' && row.org_id === tenant.orgId)).toBe(true);
    expect(rows[1]!.old_data?.properties).toEqual({});
    expect(rows[1]!.new_data?.properties).toEqual({ size: 42 });
    expect(rows[2]!.new_data).toBeNull();
  });

  it('audits every entity table but never copies a key hash into the trail', async () => {
    const { rows } = await test.db.query<{ table_name: string }>('select distinct table_name from audit_log');
    const audited = rows.map((row) => row.table_name);
    for (const table of ENTITY_TABLES.filter((t) => !['metric_series', 'failed_events'].includes(t))) {
      expect({ table, audited: audited.includes(table) }).toEqual({ table, audited: true });
    }
    expect(audited).not.toContain('events');
    expect(audited).not.toContain('metric_series');
    const keyRows = await test.db.query<{ new_data: Record<string, unknown> }>(
      `select new_data from audit_log where table_name = 'api_keys'`,
    );
    expect(keyRows.rows.length).toBeGreaterThan(0);
    expect(keyRows.rows.every((row) => !('key_hash' in row.new_data))).toBe(true);
  });

  it('creates a partition of events for every UTC day from yesterday to two weeks ahead', async () => {
    const { rows } = await test.db.query<{ name: string }>(
      `select c.relname as name from pg_inherits i join pg_class c on c.oid = i.inhrelid
       where i.inhparent = 'public.events'::regclass`,
    );
    const names = rows.map((row) => row.name);
    for (let day = -1; day <= 14; day += 1) expect(names).toContain(`events_p${utcDay(day)}`);
    expect(names).toContain('events_default');
    // rerunning creates nothing new
    expect((await ensureEventPartitions(test.db)).created).toBe(0);
    expect((await ensureEventPartitions(test.db, { daysBack: 1, daysAhead: 20 })).created).toBe(6);
  });

  it('routes a stray day to events_default and moves it out when its partition is made', async () => {
    const eventId = randomUUID();
    await test.db.query(
      `insert into events (org_id, event_id, type, occurred_at) values ($1, $2, 'impression', '2024-02-29T23:59:59Z')`,
      [tenant.orgId, eventId],
    );
    const where = async () =>
      (await test.db.query<{ part: string }>(`select tableoid::regclass::text as part from events where event_id = $1`, [eventId])).rows[0]!.part;
    expect(await where()).toBe('events_default');
    const { rows } = await test.db.query<{ created: number }>(`select private.ensure_event_partitions('2024-02-28', '2024-03-01') as created`);
    expect(rows[0]!.created).toBe(3);
    expect(await where()).toBe('events_p20240229');
    const count = await test.db.query<{ n: number }>('select count(*)::int as n from events where event_id = $1', [eventId]);
    expect(count.rows[0]!.n).toBe(1);
  });

  it('keeps events append-only and deduplicated on (org_id, event_id)', async () => {
    const occurred = new Date().toISOString();
    const insert = () =>
      test.db.query(`insert into events (org_id, event_id, type, occurred_at) values ($1, 'dup-1', 'click', $2)`, [tenant.orgId, occurred]);
    await insert();
    expect(await sqlState(insert)).toBe('23505');
    const deduped = await test.db.query(
      `insert into events (org_id, event_id, type, occurred_at) values ($1, 'dup-1', 'click', $2) on conflict do nothing`,
      [tenant.orgId, occurred],
    );
    expect(deduped.rowCount).toBe(0);
    expect(await sqlState(() => test.db.query(`update events set type = 'conversion' where event_id = 'dup-1'`))).toBe('42501');
    expect(await sqlState(() => test.db.query(`delete from events where event_id = 'dup-1'`))).toBe('42501');
    expect(await sqlState(() => test.db.query('truncate events'))).toBe('42501');
    expect(await sqlState(() => test.db.query(`insert into events (org_id, event_id, type, occurred_at) values ($1, 'x', 'Bad Type', now())`, [tenant.orgId]))).toBe('23514');
  });

  it('summarises a campaign from metrics with ratios from summed counters', async () => {
    const campaign = await test.db.query<{ id: string }>(
      `insert into campaigns (org_id, name, properties) values ($1, 'Ratios', '{"budget": 1000}') returning id`,
      [tenant.orgId],
    );
    const id = campaign.rows[0]!.id;
    // two buckets and two countries: CTR must be 30/1000, not the mean of per-row CTRs
    const rows: Array<[string, string, string, number]> = [
      ['impressions', '2026-01-01T00:00:00Z', 'DE', 900],
      ['impressions', '2026-01-01T00:15:00Z', 'FR', 100],
      ['clicks', '2026-01-01T00:00:00Z', 'DE', 9],
      ['clicks', '2026-01-01T00:15:00Z', 'FR', 21],
      ['conversions', '2026-01-01T00:15:00Z', 'FR', 3],
      ['spend', '2026-01-01T00:15:00Z', 'FR', 150],
    ];
    for (const [metric, bucket, country, value] of rows) {
      await test.db.query(
        `insert into metrics (org_id, metric, entity_type, entity_id, granularity, bucket_start, dimensions, value)
         values ($1, $2, 'campaign', $3, '15m', $4, $5, $6)`,
        [tenant.orgId, metric, id, bucket, { country }, value],
      );
    }
    // an hourly rollup row must not be double counted
    await test.db.query(
      `insert into metrics (org_id, metric, entity_type, entity_id, granularity, bucket_start, value)
       values ($1, 'impressions', 'campaign', $2, 'hour', '2026-01-01T00:00:00Z', 1000)`,
      [tenant.orgId, id],
    );
    const summary = await test.db.query<Record<string, string>>(
      'select impressions, clicks, conversions, spend, ctr, cvr, cpa, budget_used from campaign_summary where campaign_id = $1',
      [id],
    );
    const s = summary.rows[0]!;
    expect(Number(s.impressions)).toBe(1000);
    expect(Number(s.clicks)).toBe(30);
    expect(Number(s.ctr)).toBeCloseTo(0.03, 12);
    expect(Number(s.cvr)).toBeCloseTo(0.1, 12);
    expect(Number(s.cpa)).toBe(50);
    expect(Number(s.budget_used)).toBeCloseTo(0.15, 12);
  });

  it('lists only the permissions in force now', async () => {
    const grantee = await test.db.query<{ id: string }>(
      `insert into organizations (name, properties) values ('Buyer', '{"subscription_tier": "pro"}') returning id`,
    );
    const granteeId = grantee.rows[0]!.id;
    const grant = async (label: string, conditions: object, revoked = false) =>
      test.db.query(
        `insert into permissions (org_id, grantee_type, grantee_id, resource_type, resource_id, action, conditions, properties, revoked_at)
         values ($1, 'organization', $2, 'data_asset', $3, 'use', $4, $5, $6)`,
        [tenant.orgId, granteeId, tenant.assetId, conditions, { label }, revoked ? new Date() : null],
      );
    const hour = 3_600_000;
    await grant('open', {});
    await grant('window', { valid_from: new Date(Date.now() - hour).toISOString(), valid_until: new Date(Date.now() + hour).toISOString(), usage_limit: 5000 });
    await grant('expired', { valid_until: new Date(Date.now() - hour).toISOString() });
    await grant('future', { valid_from: new Date(Date.now() + hour).toISOString() });
    await grant('revoked', {}, true);
    await grant('tier-ok', { tier_required: 'starter' });
    await grant('tier-too-low', { tier_required: 'enterprise' });
    const { rows } = await test.db.query<{ label: string; usage_limit: string | null }>(
      `select properties ->> 'label' as label, usage_limit from permissions_in_force where grantee_id = $1 order by 1`,
      [granteeId],
    );
    expect(rows.map((row) => row.label)).toEqual(['open', 'tier-ok', 'window']);
    expect(Number(rows.find((row) => row.label === 'window')!.usage_limit)).toBe(5000);
    expect(await sqlState(() => grant('bad', { valid_until: 'next tuesday' }))).toBe('23514');
  });
});
