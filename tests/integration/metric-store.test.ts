import { randomUUID } from 'node:crypto';
import { cp, mkdtemp, readdir, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createOrganization } from '../../core/admin.ts';
import { migrate } from '../../core/db/migrate.ts';
import type { Queryable } from '../../core/db/port.ts';
import { sqlEventWriter } from '../../core/ingest/writer.ts';
import { runRollup } from '../../scheduled/jobs/rollup.ts';
import { BACKEND, createEmptyDatabase, createTestDatabase, sqlState, type TestDatabase } from '../helpers/database.ts';
import { canonicalEvent } from '../helpers/events.ts';

const MIGRATIONS = path.resolve(import.meta.dirname, '../../supabase/migrations');
const STORE_MIGRATION = '20261124230000_metric_store.sql';

describe(`metric store: series and points behind the metrics view (${BACKEND})`, () => {
  let test: TestDatabase;
  let orgId: string;
  const row = (metric: string, bucket: string, value: number, dimensions: object = {}) => [
    orgId, metric, 'campaign', 'cmp-1', '15m', bucket, JSON.stringify(dimensions), value,
  ];
  const insert = `insert into metrics (org_id, metric, entity_type, entity_id, granularity, bucket_start, dimensions, value)
                  values ($1, $2, $3, $4, $5, $6, $7::jsonb, $8)`;
  const listed = async () =>
    (
      await test.db.query<{ row: string }>(
        `select concat_ws('|', metric, entity_id, to_char(bucket_start at time zone 'UTC', 'HH24:MI'), dimensions::text, value::text) as row
         from metrics where org_id = $1 order by 1`,
        [orgId],
      )
    ).rows.map((r) => r.row);

  beforeAll(async () => {
    test = await createTestDatabase();
    orgId = (await createOrganization(test.db, { name: 'Store Co' })).id;
  });
  afterAll(() => test?.drop());

  it('is written through the view: one series named once, a point per bucket', async () => {
    await test.db.query(insert, row('clicks', '2026-05-01T10:00:00Z', 3, { country: 'DE' }));
    await test.db.query(insert, row('clicks', '2026-05-01T10:15:00Z', 4, { country: 'DE' }));
    await test.db.query(insert, row('clicks', '2026-05-01T10:15:00Z', 1, { country: 'FR' }));
    expect(await listed()).toEqual([
      'clicks|cmp-1|10:00|{"country": "DE"}|3',
      'clicks|cmp-1|10:15|{"country": "DE"}|4',
      'clicks|cmp-1|10:15|{"country": "FR"}|1',
    ]);
    const series = await test.db.query<{ n: number }>('select count(*)::int as n from metric_series where org_id = $1', [orgId]);
    expect(series.rows[0]!.n).toBe(2);
  });

  it('refuses a second value for the same series and bucket, as a table would', async () => {
    expect(await sqlState(() => test.db.query(insert, row('clicks', '2026-05-01T10:00:00Z', 9, { country: 'DE' })))).toBe('23505');
  });

  it('updates and deletes through the view', async () => {
    const updated = await test.db.query(
      `update metrics set value = value + 10 where org_id = $1 and metric = 'clicks' and dimensions = '{"country": "FR"}'`,
      [orgId],
    );
    expect(updated.rowCount).toBe(1);
    const removed = await test.db.query(
      `delete from metrics where org_id = $1 and bucket_start = '2026-05-01T10:00:00Z'`,
      [orgId],
    );
    expect(removed.rowCount).toBe(1);
    expect(await listed()).toEqual(['clicks|cmp-1|10:15|{"country": "DE"}|4', 'clicks|cmp-1|10:15|{"country": "FR"}|11']);
  });
});

describe(`metric store migration (${BACKEND})`, () => {
  let test: TestDatabase;
  let before: string;

  beforeAll(async () => {
    test = await createEmptyDatabase();
    // every migration before the store's, as a database that ran them before it landed
    before = await mkdtemp(path.join(os.tmpdir(), 'precise-migrations-'));
    for (const file of (await readdir(MIGRATIONS)).filter((name) => name < STORE_MIGRATION)) {
      await cp(path.join(MIGRATIONS, file), path.join(before, file));
    }
  });
  afterAll(async () => {
    await test?.drop();
    if (before) await rm(before, { recursive: true, force: true });
  });

  it('moves the rows of the first metrics table into series and points, unchanged', async () => {
    await migrate(test.db, { dir: before });
    const orgId = (await createOrganization(test.db, { name: 'Old Rows Co' })).id;
    const campaignId = randomUUID();
    const kind = await test.db.query<{ kind: string }>(`select relkind::text as kind from pg_class where oid = 'public.metrics'::regclass`);
    expect(kind.rows[0]!.kind).toBe('r');
    await test.db.query(
      `insert into metrics (org_id, metric, entity_type, entity_id, granularity, bucket_start, dimensions, value, properties)
       values ($1, 'impressions', 'campaign', $2, '15m', '2026-04-01T00:00:00Z', '{"country": "NP"}', 12, '{"source": "old"}'),
              ($1, 'impressions', 'campaign', $2, '15m', '2026-04-01T00:15:00Z', '{"country": "NP"}', 5, '{"source": "old"}'),
              ($1, 'spend', 'organization', $1::text, 'day', '2026-04-01T00:00:00Z', '{"currency": "USD"}', 7.25, '{}')`,
      [orgId, campaignId],
    );

    const report = await migrate(test.db);
    expect(report.applied.some((applied) => applied.startsWith('20261124230000'))).toBe(true);
    const after = await test.db.query<{ kind: string }>(`select relkind::text as kind from pg_class where oid = 'public.metrics'::regclass`);
    expect(after.rows[0]!.kind).toBe('v');
    const { rows } = await test.db.query<{ row: string }>(
      `select concat_ws('|', metric, entity_type, granularity, to_char(bucket_start at time zone 'UTC', 'MM-DD HH24:MI'),
                        dimensions::text, value::text, properties::text) as row
       from metrics where org_id = $1 order by 1`,
      [orgId],
    );
    expect(rows.map((r) => r.row)).toEqual([
      'impressions|campaign|15m|04-01 00:00|{"country": "NP"}|12|{"source": "old"}',
      'impressions|campaign|15m|04-01 00:15|{"country": "NP"}|5|{"source": "old"}',
      'spend|organization|day|04-01 00:00|{"currency": "USD"}|7.25|{}',
    ]);
    const series = await test.db.query<{ n: number }>('select count(*)::int as n from metric_series where org_id = $1', [orgId]);
    expect(series.rows[0]!.n).toBe(2);
  });

  it('knows what the earlier rollup counted: a conversion rejected after the migration leaves the metrics', async () => {
    // a database that ran the earlier rollup (no conversion state) before the store migration
    const fresh = await createEmptyDatabase();
    try {
      await migrate(fresh.db, { dir: before });
      const orgId = (await createOrganization(fresh.db, { name: 'Converted Before Co' })).id;
      await sqlEventWriter(fresh.db).write({ events: [conversionOf(orgId, 'approved', '2026-04-02T09:05:00Z')], failures: [] });
      await fresh.db.query('select private.rollup_metrics()'); // the rollup as it was before the store
      expect(await organizationTotal(fresh.db, orgId, 'conversions')).toBe(1);
      await migrate(fresh.db);
      expect(await organizationTotal(fresh.db, orgId, 'conversion_value')).toBe(30);
      await sqlEventWriter(fresh.db).write({ events: [conversionOf(orgId, 'rejected', '2026-04-05T10:00:00Z')], failures: [] });
      await runRollup(fresh.db);
      expect(await organizationTotal(fresh.db, orgId, 'conversions')).toBe(0);
      expect(await organizationTotal(fresh.db, orgId, 'conversion_value')).toBe(0);
      const negative = await fresh.db.query<{ n: number }>('select count(*)::int as n from metric_points where value < 0');
      expect(negative.rows[0]!.n).toBe(0);
    } finally {
      await fresh.drop();
    }
    // and on the database migrated above, a conversion counted only after the migration
    const orgId = (await createOrganization(test.db, { name: 'Converted After Co' })).id;
    await sqlEventWriter(test.db).write({ events: [conversionOf(orgId, 'approved', '2026-04-02T09:05:00Z')], failures: [] });
    await runRollup(test.db);
    expect(await organizationTotal(test.db, orgId, 'conversions')).toBe(1);
  });
});

/** One event of the conversion (click clk-before, order order-before) worth 30 EUR. */
function conversionOf(orgId: string, status: string, at: string) {
  return canonicalEvent(orgId, randomUUID(), {
    type: 'conversion', occurred_at: at, click_id: 'clk-before', status, value: 30, currency: 'EUR', properties: { txid: 'order-before' },
  });
}

async function organizationTotal(db: Queryable, orgId: string, metric: string): Promise<number> {
  const { rows } = await db.query<{ total: string | null }>(
    `select sum(value)::text as total from metrics where org_id = $1 and metric = $2 and entity_type = 'organization'`,
    [orgId, metric],
  );
  return Number(rows[0]!.total ?? 0);
}
