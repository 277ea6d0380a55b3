/**
 * Webhook timing benchmark (not a test): does the answer's time tell an attacker which
 * integration ids exist? npm run bench:webhook-timing [-- --requests 3000]
 * In process (app.request, the embedded PGlite), sequential requests, each case interleaved:
 *   known id, bad signature  |  unknown id (the same one, repeated), bad signature
 *   unknown id, a new one each time (each costs a database lookup, as for a known id not cached)
 *   floor: GET /v1/nothing (404, the app's cheapest answer)
 * Prints median and p90 in µs; the first two should match (issue 10: 660 µs vs 1,357 µs before).
 */
import { randomUUID } from 'node:crypto';
import { parseArgs } from 'node:util';
import { createIntegration } from '../core/admin.ts';
import { createIngestHarness } from '../tests/helpers/ingest.ts';

const { values: args } = parseArgs({ options: { requests: { type: 'string', default: '3000' } } });
const REQUESTS = Number(args.requests);

async function main() {
  const h = await createIngestHarness();
  try {
    const known = (await createIntegration(h.test.db, { orgId: h.orgId, name: 'Timing DSP' })).id;
    const unknown = randomUUID();
    const body = JSON.stringify({ events: [{ type: 'impression' }] });
    const signature = `t=${Math.floor(Date.now() / 1000)},v1=${'0'.repeat(64)}`;
    const post = (id: string) =>
      h.app.request(`/v1/webhooks/${id}`, { method: 'POST', headers: { 'x-precise-signature': signature }, body });
    const cases: Record<string, () => Promise<Response> | Response> = {
      'known id, bad signature': () => post(known),
      'unknown id (repeated), bad signature': () => post(unknown),
      'unknown id (new each time), bad signature': () => post(randomUUID()),
      'floor: 404': () => h.app.request('/v1/nothing'),
    };
    const times = new Map<string, number[]>(Object.keys(cases).map((name) => [name, []]));
    // warm-up, then interleaved rounds so drift hits every case alike
    for (const send of Object.values(cases)) for (let i = 0; i < 1000; i += 1) await (await send()).text();
    const entries = Object.entries(cases);
    for (let i = 0; i < REQUESTS; i += 1) {
      // the order rotates, so no case is always the first after a turn of the event loop
      for (const [name, send] of [...entries.slice(i % entries.length), ...entries.slice(0, i % entries.length)]) {
        const started = process.hrtime.bigint();
        const response = await send();
        await response.text();
        times.get(name)!.push(Number(process.hrtime.bigint() - started) / 1000);
        if (name !== 'floor: 404' && response.status !== 401) throw new Error(`${name}: expected 401, got ${response.status}`);
      }
    }
    const quantile = (values: number[], q: number) => [...values].sort((a, b) => a - b)[Math.floor(q * (values.length - 1))]!;
    console.log(`${REQUESTS} requests per case, interleaved, in process (PGlite); Node ${process.versions.node}\n`);
    console.log('| case | median µs | p90 µs |\n|---|---:|---:|');
    for (const [name, values] of times) console.log(`| ${name} | ${quantile(values, 0.5).toFixed(0)} | ${quantile(values, 0.9).toFixed(0)} |`);
    const known50 = quantile(times.get('known id, bad signature')!, 0.5);
    const unknown50 = quantile(times.get('unknown id (repeated), bad signature')!, 0.5);
    console.log(`\nunknown (repeated) / known = ${(unknown50 / known50).toFixed(2)} (1.00 means the time tells nothing)`);
  } finally {
    await h.close();
  }
}

await main();
