/**
 * Attribution on a generated history (a first measurement, not yet issue 12's full benchmark of
 * 2M paths loaded by COPY): users with about 4 touches each (30 % clicks) over 20 campaigns and
 * ATTRIBUTION_CREATIVES creatives within 30 days, half of them converting, written through
 * public.ingest_events on a fresh database of the local Postgres. It times (a) a bare SQL query
 * grouping the same touches into ordered paths per user, (b) the attribution job's full build,
 * (c) one incremental step of 10 % new converting users on top, (d) GET /v1/attribution's work
 * (queryAttribution) for all seven models at dimension=campaign and at dimension=creative.
 *
 *   ATTRIBUTION_USERS=20000 node --experimental-strip-types bench/attribution.ts
 */
import { randomUUID } from 'node:crypto';
import { createOrganization } from '../core/admin.ts';
import { MODELS, queryAttribution, sqlAttributionReader } from '../core/attribution-query.ts';
import type { Queryable } from '../core/db/port.ts';
import * as models from '../scheduled/attribution/models.ts';
import { runAttribution } from '../scheduled/jobs/attribution.ts';
import { createBenchDatabase } from './bench-database.ts';

const USERS = Number(process.env.ATTRIBUTION_USERS ?? 2000);
const CREATIVES = Number(process.env.ATTRIBUTION_CREATIVES ?? 200);
const CAMPAIGNS = 20;
const DAY = 86_400_000;

// a seeded generator, so that runs compare
let seed = 12345;
const random = () => {
  seed = (seed * 1103515245 + 12345) % 2147483648;
  return seed / 2147483648;
};

async function main() {
  const bench = await createBenchDatabase('precise_bench_attribution', 4);
  try {
    const db = bench.db;
    const org = await createOrganization(db, { name: 'Attribution bench' });
    const campaigns: string[] = [];
    for (let i = 0; i < CAMPAIGNS; i += 1) {
      const { rows } = await db.query<{ id: string }>(`insert into campaigns (org_id, name) values ($1, $2) returning id`, [org.id, `c${i}`]);
      campaigns.push(rows[0]!.id);
    }
    const end = Math.floor(Date.now() / DAY) * DAY - DAY;
    const history = generate(org.id, campaigns, 0, USERS, end);
    const written = await write(db, history);
    console.log(`history: ${USERS} users, ${written.touches} touches, ${written.conversions} conversions`);

    const bare = await time(() =>
      db.query(`select count(*) from (select user_key, array_agg(campaign_id order by occurred_at, event_id) from events
                where org_id = $1 and type in ('impression', 'click') and user_key is not null group by user_key) p`, [org.id]),
    );
    console.log(`(a) bare SQL grouping into paths: ${bare.ms} ms`);
    const full = await time(() => runAttribution(db));
    console.log(`(b) full build: ${full.ms} ms ${JSON.stringify(full.result)}`);

    const more = generate(org.id, campaigns, USERS, Math.round(USERS / 10), end, true);
    const added = await write(db, more);
    const step = await time(() => runAttribution(db));
    console.log(`(c) incremental step, ${added.conversions} new conversions: ${step.ms} ms ${JSON.stringify(step.result)}`);

    const reader = sqlAttributionReader(db);
    for (const dimension of ['campaign', 'creative'] as const) {
      const query = { orgId: org.id, models: [...MODELS], dimension, from: new Date(end - 31 * DAY).toISOString(), to: new Date(end + DAY).toISOString() };
      const answer = await time(() => queryAttribution(reader, models, query));
      console.log(`(d) all seven models at ${dimension}: ${answer.ms} ms (${answer.result.data.length} rows, ${JSON.stringify(answer.result.meta.paths)})`);
      const withoutMarkov = await time(() => queryAttribution(reader, models, { ...query, models: MODELS.filter((model) => model !== 'markov') }));
      console.log(`    the same without markov: ${withoutMarkov.ms} ms`);
    }
  } finally {
    await bench.drop();
  }
}

interface Generated {
  events: object[];
  touches: number;
  conversions: number;
}

/** Users `first`…`first + count - 1`: every other one converts (all with `allConvert`). */
function generate(orgId: string, campaigns: string[], first: number, count: number, end: number, allConvert = false): Generated {
  const events: object[] = [];
  let touches = 0;
  let conversions = 0;
  for (let u = first; u < first + count; u += 1) {
    const converts = allConvert || u % 2 === 0;
    const convertedAt = end - Math.floor(random() * 23 * DAY);
    const n = 1 + Math.floor(random() * 7);
    for (let t = 0; t < n; t += 1) {
      const creative = Math.floor(random() * CREATIVES);
      const click = random() < 0.3;
      events.push({
        org_id: orgId, event_id: randomUUID(), id_source: 'edge', type: click ? 'click' : 'impression',
        occurred_at: new Date(convertedAt - Math.floor(random() * 7 * DAY)).toISOString(),
        campaign_id: campaigns[creative % campaigns.length], creative_id: `crv-${creative}`, user_key: `u${u}`,
        context: { bot: false }, properties: { channel: click ? 'search' : 'display' },
      });
      touches += 1;
    }
    if (converts) {
      events.push({
        org_id: orgId, event_id: `order-${u}`, id_source: 'edge', type: 'conversion', occurred_at: new Date(convertedAt).toISOString(),
        user_key: `u${u}`, value: Math.round(random() * 10_000) / 100, currency: random() < 0.8 ? 'EUR' : 'USD', context: {},
      });
      conversions += 1;
    }
  }
  return { events, touches, conversions };
}

async function write(db: Queryable, generated: Generated) {
  for (let i = 0; i < generated.events.length; i += 1000) {
    await db.query('select public.ingest_events($1::jsonb)', [JSON.stringify({ events: generated.events.slice(i, i + 1000) })]);
  }
  await settle(db);
  return generated;
}

/**
 * Waits until no transaction older than the writes runs on the server (xids are the cluster's:
 * a long transaction in another database holds every watermark back), so that the step timed
 * next finds the whole history below its watermark.
 */
async function settle(db: Queryable) {
  const { rows } = await db.query<{ last: string }>('select max(ingest_xid)::text as last from events');
  for (let waited = 0; ; waited += 1) {
    const { rows: now } = await db.query<{ passed: boolean }>('select pg_snapshot_xmin(pg_current_snapshot()) > $1::xid8 as passed', [rows[0]!.last]);
    if (now[0]!.passed) return;
    if (waited === 0) console.log('waiting for an older transaction on the server to end…');
    await new Promise((resolve) => setTimeout(resolve, 500));
  }
}

async function time<T>(fn: () => Promise<T>): Promise<{ ms: number; result: T }> {
  const started = performance.now();
  const result = await fn();
  return { ms: Math.round(performance.now() - started), result };
}

await main();
