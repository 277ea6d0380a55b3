import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createOrganization } from '../../core/admin.ts';
import { BACKEND, createTestDatabase, sqlState, type TestDatabase } from '../helpers/database.ts';

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
