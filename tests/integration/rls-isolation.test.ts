import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { asUser, attempt, BACKEND, createTestDatabase, type TestDatabase } from '../helpers/database.ts';
import type { Database, TransactionHandle } from '../../core/db/port.ts';
import { seedTenant, type Tenant } from '../helpers/seed.ts';

// Two organizations with a row in every tenant table. A user of org A, acting as Supabase's
// `authenticated` role with JWT claims, must see and change nothing of org B.
const TENANT_TABLES: Record<string, string> = {
  organizations: 'id',
  org_members: 'org_id',
  data_assets: 'org_id',
  campaigns: 'org_id',
  relationships: 'org_id',
  transactions: 'org_id',
  permissions: 'org_id',
  api_keys: 'org_id',
  integrations: 'org_id',
  failed_events: 'org_id',
  events: 'org_id',
  metrics: 'org_id',
  metric_series: 'org_id',
  metric_points: 'org_id',
  audit_log: 'org_id',
  campaign_summary: 'org_id',
  permissions_in_force: 'org_id',
};

describe(`tenant isolation under RLS (${BACKEND})`, () => {
  let test: TestDatabase;
  let a: Tenant;
  let b: Tenant;

  beforeAll(async () => {
    test = await createTestDatabase();
    a = await seedTenant(test.db, 'Alpha Media');
    b = await seedTenant(test.db, 'Beta Data');
  });
  afterAll(() => test?.drop());

  it('a member reads every table of its own org and nothing of the other', async () => {
    const counts = await asUser(test.db, a.ownerId, async (tx) => {
      const result: Record<string, { own: number; other: number }> = {};
      for (const [table, column] of Object.entries(TENANT_TABLES)) {
        const { rows } = await tx.query<{ own: number; other: number }>(
          `select count(*) filter (where ${column} = $1)::int as own,
                  count(*) filter (where ${column} is distinct from $1)::int as other
           from public.${table}`,
          [a.orgId],
        );
        result[table] = rows[0]!;
      }
      return result;
    });
    for (const [table, count] of Object.entries(counts)) {
      expect({ table, own: count.own > 0 }).toEqual({ table, own: true });
      expect({ table, other: count.other }).toEqual({ table, other: 0 });
    }
  });

  it('the same rows are all there for the backend (so the zeros above are RLS, not missing data)', async () => {
    for (const [table, column] of Object.entries(TENANT_TABLES)) {
      const { rows } = await test.db.query<{ orgs: number }>(
        `select count(distinct ${column})::int as orgs from public.${table} where ${column} in ($1, $2)`,
        [a.orgId, b.orgId],
      );
      expect({ table, orgs: rows[0]!.orgs }).toEqual({ table, orgs: 2 });
    }
  });

  it("changes nothing of the other org: updates and deletes match no row, inserts are refused", async () => {
    await asUser(test.db, a.ownerId, async (tx) => {
      for (const table of ['data_assets', 'campaigns', 'relationships', 'transactions', 'permissions', 'api_keys', 'integrations']) {
        const update = await attempt(tx, `update public.${table} set updated_at = now() where org_id = $1`, [b.orgId]);
        expect({ table, update: update.rowCount }).toEqual({ table, update: 0 });
      }
      for (const table of ['data_assets', 'campaigns', 'relationships', 'transactions', 'permissions', 'org_members']) {
        const removed = await attempt(tx, `delete from public.${table} where org_id = $1`, [b.orgId]);
        expect({ table, removed: removed.rowCount }).toEqual({ table, removed: 0 });
      }
      expect((await attempt(tx, `update organizations set name = 'pwned' where id = $1`, [b.orgId])).rowCount).toBe(0);
      expect((await attempt(tx, `delete from organizations where id = $1`, [b.orgId])).rowCount).toBe(0);

      const insertCampaign = await attempt(tx, `insert into campaigns (org_id, name) values ($1, 'intruder')`, [b.orgId]);
      expect(insertCampaign.code).toBe('42501');
      const joinOrg = await attempt(tx, `insert into org_members (org_id, user_id, role) values ($1, $2, 'owner')`, [
        b.orgId,
        a.ownerId,
      ]);
      expect(joinOrg.code).toBe('42501');
      // Moving an own row into the other org fails the policy's WITH CHECK.
      const move = await attempt(tx, `update campaigns set org_id = $1 where id = $2`, [b.orgId, a.campaignId]);
      expect(move.code).toBe('42501');
      // The log and the metrics are written by the backend only, for every org.
      for (const table of ['events', 'metrics', 'metric_series', 'metric_points', 'failed_events', 'audit_log']) {
        const write = await attempt(tx, `insert into public.${table} (org_id) values ($1)`, [a.orgId]);
        expect({ table, code: write.code }).toEqual({ table, code: '42501' });
      }
    });
    const { rows } = await test.db.query<{ name: string }>('select name from organizations where id = $1', [b.orgId]);
    expect(rows[0]!.name).toBe('Beta Data');
  });

  it('cannot reach around the policies: partitions, hashes and helpers', async () => {
    const { rows: partitions } = await test.db.query<{ name: string }>(
      `select c.relname as name from pg_inherits i join pg_class c on c.oid = i.inhrelid
       where i.inhparent = 'public.events'::regclass order by 1`,
    );
    expect(partitions.length).toBeGreaterThan(10);
    await asUser(test.db, a.ownerId, async (tx) => {
      for (const { name } of partitions) {
        const direct = await attempt(tx, `select count(*) from public.${name}`);
        expect({ name, code: direct.code }).toEqual({ name, code: '42501' });
      }
      expect((await attempt(tx, 'select key_hash from api_keys')).code).toBe('42501');
      const ids = await tx.query<{ id: string }>('select private.user_org_ids() as id');
      expect(ids.rows.map((row) => row.id)).toEqual([a.orgId]);
      const tier = await tx.query<{ tier: string | null }>('select private.org_subscription_tier($1) as tier', [b.orgId]);
      expect(tier.rows[0]!.tier).toBeNull();
    });
  });

  it('users see their coworkers, never the other org’s people', async () => {
    const visible = await asUser(test.db, a.viewerId, (tx) => tx.query<{ id: string }>('select id from users order by email'));
    expect(visible.rows.map((row) => row.id).sort()).toEqual([a.ownerId, a.viewerId].sort());
  });

  it('roles: a viewer reads its org but cannot write; an owner can', async () => {
    await asUser(test.db, a.viewerId, async (tx) => {
      const read = await tx.query('select id from campaigns');
      expect(read.rows).toHaveLength(1);
      expect((await attempt(tx, `update campaigns set name = 'viewer edit' where id = $1`, [a.campaignId])).rowCount).toBe(0);
      expect((await attempt(tx, `insert into campaigns (org_id, name) values ($1, 'x')`, [a.orgId])).code).toBe('42501');
      expect((await attempt(tx, 'select id from api_keys')).rows).toHaveLength(0);
    });
    await asUser(test.db, a.ownerId, async (tx) => {
      expect((await attempt(tx, `update campaigns set name = 'owner edit' where id = $1`, [a.campaignId])).rowCount).toBe(1);
      expect((await attempt(tx, `insert into campaigns (org_id, name) values ($1, 'second')`, [a.orgId])).code).toBeUndefined();
      expect((await attempt(tx, 'select id from api_keys')).rows).toHaveLength(1);
    });
  });

  it('anon reads nothing at all', async () => {
    await asUser(test.db, null, async (tx) => {
      for (const table of Object.keys(TENANT_TABLES)) {
        const result = await attempt(tx, `select 1 from public.${table} limit 1`);
        expect({ table, code: result.code }).toEqual({ table, code: '42501' });
      }
    });
  });
  it('a subscription tier is told only to members of its org and the backend, never through a permission', async () => {
    await test.db.query(`update organizations set properties = properties || '{"subscription_tier": "enterprise"}' where id = $1`, [a.orgId]);
    await test.db.query(`update organizations set properties = properties || '{"subscription_tier": "pro"}' where id = $1`, [b.orgId]);
    // A licenses B: one grant B's tier meets, one it does not; and one for A's own viewers
    const grant = (label: string, grantee: string, tier: string) =>
      test.db.query(
        `insert into permissions (org_id, grantee_type, grantee_id, grantee_role, resource_type, resource_id, action, conditions, properties)
         values ($1, $2, $3, $4, 'data_asset', $5, 'use', $6, $7)`,
        [a.orgId, grantee === 'role' ? 'role' : 'organization', grantee === 'role' ? null : grantee, grantee === 'role' ? 'viewer' : null, a.assetId, { tier_required: tier }, { label }],
      );
    await grant('b-starter', b.orgId, 'starter');
    await grant('b-enterprise', b.orgId, 'enterprise');
    await grant('a-viewers-pro', 'role', 'pro');
    const tiers = async (tx: TransactionHandle) =>
      (await tx.query<{ a: string | null; b: string | null }>('select private.org_subscription_tier($1) as a, private.org_subscription_tier($2) as b', [a.orgId, b.orgId])).rows[0];
    const inForce = async (tx: TransactionHandle) =>
      (await tx.query<{ label: string }>(`select properties ->> 'label' as label from permissions_in_force where properties ? 'label' order by 1`)).rows.map((row) => row.label);

    await asUser(test.db, a.ownerId, async (tx) => {
      expect(await tiers(tx)).toEqual({ a: 'enterprise', b: null });
      // A's own tier condition holds; a grant to B that needs a tier is not shown as in force to A
      expect(await inForce(tx)).toEqual(['a-viewers-pro']);
    });
    await asUser(test.db, b.ownerId, async (tx) => {
      expect(await tiers(tx)).toEqual({ a: null, b: 'pro' });
      // the licensee: its tier meets starter, not enterprise
      expect(await inForce(tx)).toEqual(['b-starter']);
    });
    // signed-in claims without a sub: nothing
    await withClaims(test.db, 'authenticated', { role: 'authenticated' }, async (tx) => {
      expect(await tiers(tx)).toEqual({ a: null, b: null });
    });
    // the backend: everything
    await withClaims(test.db, 'service_role', { role: 'service_role' }, async (tx) => {
      expect(await tiers(tx)).toEqual({ a: 'enterprise', b: 'pro' });
      expect(await inForce(tx)).toEqual(['a-viewers-pro', 'b-starter']);
    });
  });
});

/** A rolled-back transaction as `role` with exactly these JWT claims (asUser always sets a sub). */
async function withClaims(db: Database, role: string, claims: object, fn: (tx: TransactionHandle) => Promise<void>): Promise<void> {
  const rollback = new Error('rollback');
  await db
    .transaction(async (tx) => {
      await tx.query(`select set_config('request.jwt.claims', $1, true)`, [JSON.stringify(claims)]);
      await tx.query(`set local role ${role}`);
      await fn(tx);
      throw rollback;
    })
    .catch((error) => {
      if (error !== rollback) throw error;
    });
}
