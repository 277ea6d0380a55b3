import { randomUUID } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createApiKey, createCampaign, createIntegration } from '../../core/admin.ts';
import { signClick } from '../../core/click.ts';
import { deriveSecret } from '../../core/secrets.ts';
import { signWebhook, webhookSecret } from '../../core/webhooks/delivery.ts';
import { BACKEND } from '../helpers/database.ts';
import { createIngestHarness, SERVER_SECRET, type IngestHarness } from '../helpers/ingest.ts';
import {
  CONTENT_TYPES,
  encodeQuery,
  eventItem,
  fewPairs,
  fuzzHeaders,
  garbageBody,
  jsonValue,
  nastyString,
  objectText,
  queryPairs,
  valueFrom,
  type Pairs,
} from './arbitraries.ts';

// No input gets a 5xx. Every public route, through app.request() on a real database, with
// hostile query strings, headers and bodies; the property: the answer is below 500, and a valid
// event sent beside the hostile ones (batch, beacon, webhook) or right after (single-event routes)
// is stored. Every 5xx and every lost sibling is recorded, grouped by cause, and the test fails
// listing each class once with its shortest request. FUZZ_RUNS (runs per route, default 120) and
// FUZZ_SEED (printed) reproduce or lengthen a run; FUZZ_REPORT=path writes every finding as JSON.
const RUNS = Number(process.env.FUZZ_RUNS) || 120;
const SEED = Number(process.env.FUZZ_SEED) || Math.floor(Math.random() * 2 ** 31);

interface Attempt {
  route: string;
  method: 'GET' | 'POST';
  path: string;
  headers: Record<string, string>;
  body?: string | Uint8Array;
}

interface Finding {
  route: string;
  kind: '5xx' | 'sibling lost';
  status: number;
  cause: string;
  request: string;
  /** the top of the stack the app logged, for the report */
  stack?: string;
}

type AuthMode = 'valid' | 'none' | 'garbage' | 'other kind' | 'as fuzzed';
const authMode = fc.constantFrom<AuthMode>('valid', 'valid', 'valid', 'valid', 'valid', 'none', 'garbage', 'other kind', 'as fuzzed');

const METRICS_NAMES = ['metric', 'entity_type', 'entity_id', 'from', 'to', 'granularity', 'tz', 'currency'];
const ATTRIBUTION_NAMES = ['model', 'dimension', 'from', 'to', 'tz', 'campaign_id', 'interval'];
const FATIGUE_NAMES = ['campaign_id', 'as_of', 'tz'];
const PIXEL_NAMES = ['ev', 'cmp', 'crv', 'ast', 'uid', 'eid', 'ts', 'v', 'cur', 'consent', 'anon', 'p.placement', 'p.__proto__', 'p.', 'key'];
const POSTBACK_NAMES = ['click_id', 'clickid', 'subid', 'cid', 'cnv_id', 'event', 'value', 'payout', 'sum', 'revenue', 'currency', 'txid', 'tid',
  'transaction_id', 'status', 'cnv_status', 'aff_click', 'amt', 'Click_ID', 'CLICKID'];
const PLAUSIBLE = ['1', '2.5', 'USD', 'EUR', 'impression', 'click', 'approved', 'pending', 'rejected', 'lead', 'sale', 'granted', 'denied',
  '0d000000-0000-4000-8000-000000000001', String(Date.now()), 'crv-1', 'device-1'];

/** Base parameters, then the fuzzed ones: replacing the base's of the same name, or added after them. */
function merge(base: Pairs, fuzzed: Pairs, replace: boolean): Pairs {
  const names = new Set(fuzzed.map(([name]) => name));
  return [...(replace ? base.filter(([name]) => !names.has(name)) : base), ...fuzzed];
}

/** Text as JSON escapes it (control characters, unpaired surrogates), cut to a length. */
const printable = (text: string, length: number) => JSON.stringify(text.slice(0, length)).slice(1, -1);

const describeRequest = (a: Attempt) => {
  const body = a.body === undefined ? '' : ` body="${typeof a.body === 'string' ? printable(a.body, 400) : `<${a.body.length} bytes>`}"`;
  const headers = Object.keys(a.headers).length ? ` headers=${JSON.stringify(a.headers).slice(0, 300)}` : '';
  return `${a.method} ${printable(a.path, 400)}${headers}${body}`;
};

/** An error as logged: its stack, and the SQL it came from (a database error's stack holds only the driver's frames). */
function loggable(arg: unknown): string {
  if (!(arg instanceof Error)) return String(arg);
  const query = (arg as { query?: unknown }).query;
  const [first, ...frames] = (arg.stack ?? String(arg)).split('\n');
  return [typeof query === 'string' ? `${first} (in: ${query.slice(0, 100)})` : first, ...frames].join('\n');
}

// a longer run (FUZZ_RUNS) gets the time it needs: some 30 ms a run on a busy machine, ten times that allowed
describe(`no 5xx on any input: every public route, fuzzed (${BACKEND})`, { timeout: 60_000 + RUNS * 300 }, () => {
  let h: IngestHarness;
  let readKey: string;
  let publishableKeyId: string;
  let campaignId: string;
  const tokens: string[] = [];
  const integrations = { canonical: '', mapped: '' };
  const tried = new Map<string, number>();
  const findings: Finding[] = [];
  const logged: string[] = [];
  const consoleError = console.error;
  /** the last delivery a webhook accepted: sent again as it was, a replay */
  let delivered: Attempt | undefined;

  beforeAll(async () => {
    h = await createIngestHarness();
    readKey = (await createApiKey(h.test.db, { orgId: h.orgId, kind: 'secret', scopes: ['read'] })).key;
    publishableKeyId = (await h.services.keys.resolve(h.publishableKey))!.id;
    campaignId = (
      await createCampaign(h.test.db, {
        orgId: h.orgId,
        name: 'Fuzzed',
        status: 'active',
        properties: { click_allow_list: ['shop.example.com', '.example.org'], dsp_settings: { external_campaign_id: 'dsp-1' } },
      })
    ).id;
    for (const properties of [{ param_map: { aff_click: 'click_id', amt: 'value' }, status_map: { lead: 'pending', sale: 'approved', rejected: 'rejected' } }, {}]) {
      tokens.push((await createApiKey(h.test.db, { orgId: h.orgId, kind: 'postback', properties })).key);
    }
    integrations.canonical = (await createIntegration(h.test.db, { orgId: h.orgId, name: 'canonical' })).id;
    integrations.mapped = (
      await createIntegration(h.test.db, {
        orgId: h.orgId,
        name: 'mapped',
        mapping: {
          events_path: 'data.events',
          fields: {
            type: { path: 'kind', map: { imp: 'impression', clk: 'click' } },
            event_id: 'id',
            occurred_at: { path: 'ts', transform: 'unix_ms' },
            value: { path: 'price', transform: 'micros' },
            currency: { path: 'cur', transform: 'uppercase' },
            campaign_id: { path: 'line', lookup: 'external_campaign_id' },
            creative_id: 'creative.id',
            user_key: { path: 'user', transform: 'string' },
            'properties.note': 'note',
          },
        },
      })
    ).id;
    // what the app logs about a failure (the stack of a 500) goes with the request that caused it
    console.error = (...args: unknown[]) => logged.push(args.map(loggable).join(' '));
    console.log(`fuzz: ${RUNS} runs per route, FUZZ_SEED=${SEED}`);
  });

  afterAll(async () => {
    console.error = consoleError;
    console.log(`fuzz (${BACKEND}, seed ${SEED}): requests tried per route ${JSON.stringify(Object.fromEntries(tried))}; findings ${findings.length}`);
    if (process.env.FUZZ_REPORT) writeFileSync(process.env.FUZZ_REPORT, JSON.stringify({ backend: BACKEND, seed: SEED, runs: RUNS, tried: Object.fromEntries(tried), findings }, null, 2));
    await h?.close();
  });

  // --- sending and recording ----------------------------------------------------------------

  async function send(attempt: Attempt): Promise<{ status: number; text: string; headers: Headers }> {
    logged.length = 0;
    tried.set(attempt.route, (tried.get(attempt.route) ?? 0) + 1);
    const response = await h.app.request(attempt.path, { method: attempt.method, headers: attempt.headers, body: attempt.body });
    const text = await response.text();
    if (response.status >= 500) record(attempt, '5xx', response.status, causeOf(text));
    return { status: response.status, text, headers: response.headers };
  }

  /** The first line of what the app logged, and the first frame in the project's code; else the answer's code. */
  function causeOf(text: string): string {
    const stack = logged.join('\n');
    if (stack) {
      const lines = stack.split('\n');
      const frame = lines.find((line) => /\/(core|functions)\//.test(line) && !line.includes('node_modules'));
      return `${lines[0]!.replace(/^\[[^\]]*\]\s*/, '').slice(0, 160)}${frame ? ` @ ${frame.trim().replace(/^at\s+/, '').replace(/.*\/(core|functions)\//, '$1/')}` : ''}`;
    }
    try {
      const { error } = JSON.parse(text) as { error: { code: string; message: string } };
      return `${error.code}: ${error.message}`.slice(0, 160);
    } catch {
      return text.slice(0, 160) || '(no body)';
    }
  }

  function record(attempt: Attempt, kind: Finding['kind'], status: number, cause: string) {
    const stack = logged.join('\n').split('\n').slice(0, 12).join('\n') || undefined;
    findings.push({ route: attempt.route, kind, status, cause, request: describeRequest(attempt), stack });
  }

  const storedBy = async (column: 'event_id' | 'click_id', value: string) =>
    (await h.test.db.query(`select 1 from events where org_id = $1 and ${column} = $2`, [h.orgId, value])).rows.length === 1;

  /** The sibling, a valid event, must be stored; otherwise a finding (with the answer it got). */
  async function expectSibling(attempt: Attempt, status: number, column: 'event_id' | 'click_id', value: string | undefined) {
    if (value && (await storedBy(column, value))) return;
    record(attempt, 'sibling lost', status, `the valid event beside or after it (${column} ${value ?? 'none'}) is not stored`.replace(/sib-[0-9a-f-]+|[0-9a-f-]{36}/, '…'));
  }

  /** Each class once (route, kind, status, cause), with its shortest request. */
  function classes(route: string): string[] {
    const byClass = new Map<string, Finding>();
    for (const finding of findings.filter((f) => f.route === route)) {
      const key = `${finding.kind} ${finding.status} ${finding.cause}`;
      const known = byClass.get(key);
      if (!known || finding.request.length < known.request.length) byClass.set(key, finding);
    }
    return [...byClass].map(([key, finding]) => `${route}: ${key}\n    e.g. ${finding.request}`);
  }

  /** Runs the known hostile examples (regressions: each once a 5xx), then RUNS generated inputs. */
  async function fuzz<T>(route: string, arbitrary: fc.Arbitrary<T>, examples: T[], run: (input: T) => Promise<void>) {
    await fc.assert(fc.asyncProperty(arbitrary, run), { numRuns: RUNS, seed: SEED, endOnFailure: true, examples: examples.map((example): [T] => [example]) });
    expect(tried.get(route) ?? 0).toBeGreaterThanOrEqual(RUNS);
    expect(classes(route)).toEqual([]);
  }

  // --- credentials, as sent or spoiled ---------------------------------------------------------

  const bearer = (mode: AuthMode, key: string): Record<string, string> =>
    ({ valid: { authorization: `Bearer ${key}` }, none: {}, garbage: { authorization: 'Bearer sk_garbage' }, 'other kind': { authorization: `Bearer ${h.publishableKey}` }, 'as fuzzed': {} })[mode];
  const withBearer = (headers: Record<string, string>, mode: AuthMode, key: string) => {
    const { authorization, ...rest } = headers;
    return { ...rest, ...(mode === 'as fuzzed' && authorization !== undefined ? { authorization } : {}), ...bearer(mode, key) };
  };
  const keyParam = (mode: AuthMode): Pairs =>
    ({ valid: [['key', h.publishableKey]], none: [], garbage: [['key', 'pk_garbage']], 'other kind': [['key', h.ingestKey]], 'as fuzzed': [] }) [mode] as Pairs;

  const DEEP = `{"a":${'['.repeat(12_000)}1${']'.repeat(12_000)}}`;
  const sibling = () => `sib-${randomUUID()}`;
  const pixelQuery = fc.record({ pairs: fewPairs(PIXEL_NAMES, PLAUSIBLE), replace: fc.boolean(), raw: fc.boolean(), auth: authMode, headers: fuzzHeaders });

  // --- the routes -------------------------------------------------------------------------------

  it('GET /v1/px', async () => {
    const pixel = (pairs: Pairs) => ({ pairs, replace: false, raw: false, auth: 'valid' as const, headers: {} });
    const examples = [pixel([['crv', '\u0000']]), pixel([['p.note', 'a\u0000b']]), pixel([['ts', '8640000000000001']]), pixel([['p.__proto__', 'x'], ['uid', 'constructor']])];
    await fuzz('GET /v1/px', pixelQuery, examples, async ({ pairs, replace, raw, auth, headers }) => {
      const attempt: Attempt = { route: 'GET /v1/px', method: 'GET', path: `/v1/px?${encodeQuery(merge(keyParam(auth), pairs, replace), raw)}`, headers };
      await send(attempt);
      const id = sibling();
      const after = await send({ ...attempt, path: `/v1/px?key=${h.publishableKey}&eid=${id}` });
      await expectSibling(attempt, after.status, 'event_id', id);
    });
  });

  /** A JSON array of hostile events with a valid one among them, or a body that is no array at all. */
  const beaconBody = fc.oneof(
    fc.record({ items: fc.array(eventItem, { maxLength: 5 }), at: fc.nat() }).map(({ items, at }) => ({ items, at, garbage: undefined })),
    garbageBody.map((garbage) => ({ items: [] as string[], at: 0, garbage })),
  );
  const withSibling = (items: string[], at: number, event: string) => {
    const all = [...items];
    all.splice(at % (all.length + 1), 0, event);
    return `[${all.join(',')}]`;
  };

  it('POST /v1/px (beacon)', async () => {
    const arbitrary = fc.record({ body: beaconBody, type: fc.constantFrom(...CONTENT_TYPES), auth: authMode, headers: fuzzHeaders, query: queryPairs(['key', 'anon'], ['1'], 2) });
    const beacon = (item: string) => ({ body: { items: [item], at: 0, garbage: undefined }, type: 'text/plain', auth: 'valid' as const, headers: {}, query: [] });
    const examples = [beacon('{"creative_id":"\\ud800"}'), beacon('{"user_key":"\\u0000"}'), beacon('{"occurred_at":8640000000000001}'), beacon(`{"properties":${DEEP}}`), beacon(DEEP)];
    await fuzz('POST /v1/px', arbitrary, examples, async ({ body, type, auth, headers, query }) => {
      const id = sibling();
      const path = `/v1/px?${encodeQuery([...keyParam(auth), ...query], false)}`;
      const attempt: Attempt = {
        route: 'POST /v1/px',
        method: 'POST',
        path,
        headers: { ...headers, 'content-type': type },
        body: body.garbage ?? withSibling(body.items, body.at, JSON.stringify({ event_id: id })),
      };
      const answer = await send(attempt);
      if (body.garbage !== undefined || auth !== 'valid' || query.length > 0) {
        const after = await send({ ...attempt, path: `/v1/px?key=${h.publishableKey}`, body: JSON.stringify({ event_id: id }) });
        return expectSibling(attempt, after.status, 'event_id', id);
      }
      await expectSibling(attempt, answer.status, 'event_id', id);
    });
  });

  it('POST /v1/events', async () => {
    const arbitrary = fc.record({ body: beaconBody, type: fc.constantFrom(...CONTENT_TYPES), auth: authMode, headers: fuzzHeaders });
    const batch = (item: string) => ({ body: { items: [item], at: 1, garbage: undefined }, type: 'application/json', auth: 'valid' as const, headers: {} });
    const examples = [batch('{"type":"impression","properties":{"k":"\\ud800"}}'), batch('{"type":"impression","click_id":"a\\u0000b"}'), batch('{"type":"impression","occurred_at":8640000000000001}'), batch(`{"type":"impression","properties":${DEEP}}`)];
    await fuzz('POST /v1/events', arbitrary, examples, async ({ body, type, auth, headers }) => {
      const id = sibling();
      const valid = JSON.stringify({ event_id: id, type: 'impression' });
      const attempt: Attempt = {
        route: 'POST /v1/events',
        method: 'POST',
        path: '/v1/events',
        headers: withBearer({ ...headers, 'content-type': type }, auth, h.ingestKey),
        body: body.garbage ?? `{"events":${withSibling(body.items, body.at, valid)}}`,
      };
      const answer = await send(attempt);
      if (body.garbage !== undefined || auth !== 'valid') {
        const after = await send({ ...attempt, headers: withBearer(attempt.headers, 'valid', h.ingestKey), body: `{"events":[${valid}]}` });
        return expectSibling(attempt, after.status, 'event_id', id);
      }
      await expectSibling(attempt, answer.status, 'event_id', id);
    });
  });

  it('GET /v1/click', async () => {
    const urls = ['https://shop.example.com/offer?clk={click_id}', 'https://a.example.org/x', 'https://evil.example.net/', 'http://shop.example.com'];
    const arbitrary = fc.record({
      url: valueFrom(urls),
      cmp: fc.option(valueFrom(['', '0d000000-0000-4000-8000-000000000001', 'CAMPAIGN'])),
      crv: fc.option(nastyString),
      sig: fc.constantFrom('valid', 'valid', 'none', 'garbage'),
      pairs: fewPairs(PIXEL_NAMES, PLAUSIBLE),
      raw: fc.boolean(),
      auth: authMode,
      headers: fuzzHeaders,
    });
    const secret = () => deriveSecret(SERVER_SECRET, 'click-signing', publishableKeyId);
    const click = (crv: string) => ({ url: 'https://shop.example.com/offer?clk={click_id}', cmp: null, crv, sig: 'valid' as const, pairs: [], raw: false, auth: 'valid' as const, headers: {} });
    await fuzz('GET /v1/click', arbitrary, [click('\u0000'), click('x\u0000y')], async ({ url, cmp, crv, sig, pairs, raw, auth, headers }) => {
      const campaign = cmp === 'CAMPAIGN' ? campaignId : cmp;
      const signature = sig === 'valid' ? signClick(secret(), url, campaign, crv) : sig === 'garbage' ? 'ab'.repeat(32) : undefined;
      const base: Pairs = [...keyParam(auth), ['url', url], ...(campaign !== null ? [['cmp', campaign] as [string, string]] : []), ...(crv !== null ? [['crv', crv] as [string, string]] : []), ...(signature ? [['sig', signature] as [string, string]] : [])];
      const attempt: Attempt = { route: 'GET /v1/click', method: 'GET', path: `/v1/click?${encodeQuery([...base, ...pairs], raw)}`, headers };
      await send(attempt);
      const good = 'https://shop.example.com/offer?clk={click_id}';
      const after = await send({ ...attempt, path: `/v1/click?${new URLSearchParams({ key: h.publishableKey, url: good, sig: signClick(secret(), good) })}` });
      const clickId = /clk=([^&]+)/.exec(after.headers.get('location') ?? '')?.[1];
      await expectSibling(attempt, after.status, 'click_id', clickId && decodeURIComponent(clickId));
    });
  });

  it('GET and POST /v1/postback/:token', async () => {
    const arbitrary = fc.record({
      method: fc.constantFrom<'GET' | 'POST'>('GET', 'POST'),
      token: fc.oneof({ weight: 6, arbitrary: fc.constantFrom(0, 1) }, { weight: 1, arbitrary: nastyString }),
      pairs: fewPairs(POSTBACK_NAMES, PLAUSIBLE),
      replace: fc.boolean(),
      raw: fc.boolean(),
      body: fc.oneof(
        fewPairs(POSTBACK_NAMES, PLAUSIBLE).map((pairs) => new URLSearchParams(pairs).toString()),
        fc.array(fc.tuple(valueFrom(POSTBACK_NAMES), jsonValue), { maxLength: 5 }).map(objectText),
        garbageBody,
      ),
      type: fc.constantFrom(...CONTENT_TYPES),
      headers: fuzzHeaders,
    });
    const postback = (pairs: Pairs, method: 'GET' | 'POST' = 'GET', body = '') => ({ method, token: 0 as const, pairs, replace: false, raw: false, body, type: 'application/json', headers: {} });
    const examples = [postback([['status', 'constructor']]), postback([['status', '__proto__']]), postback([['tid', 'a\u0000b']]), postback([['note', '\u0000']]), postback([], 'POST', '{"txid":"\\ud800"}')];
    await fuzz('GET|POST /v1/postback', arbitrary, examples, async ({ method, token, pairs, replace, raw, body, type, headers }) => {
      const path = typeof token === 'number' ? tokens[token]! : encodeURIComponent(token.replace(/[\ud800-\udfff]/g, '')) || 'x';
      const base: Pairs = [['click_id', `fz-${randomUUID()}`]];
      const attempt: Attempt = {
        route: 'GET|POST /v1/postback',
        method,
        path: `/v1/postback/${path}?${encodeQuery(merge(base, pairs, replace), raw)}`,
        headers: method === 'POST' ? { ...headers, 'content-type': type } : headers,
        body: method === 'POST' ? body : undefined,
      };
      await send(attempt);
      const id = sibling();
      const after = await send({ route: attempt.route, method: 'GET', path: `/v1/postback/${tokens[0]}?click_id=${id}&txid=${id}`, headers });
      const eventId = after.status === 200 ? (JSON.parse(after.text) as { event_id: string }).event_id : undefined;
      await expectSibling(attempt, after.status, 'event_id', eventId);
    });
  });

  const MAPPED_FIELDS: Record<string, fc.Arbitrary<string>> = {
    kind: valueFrom(['imp', 'clk', 'win', 'constructor', 'toString']).map((k) => JSON.stringify(k)),
    id: fc.oneof(fc.uuid().map((id) => JSON.stringify(`fz-${id}`)), jsonValue),
    ts: fc.oneof(fc.constantFrom(String(Date.now()), '8640000000000001', '1e21', '"1732500000000"', '-1e308'), jsonValue),
    price: fc.oneof(fc.constantFrom('1500000', '1e308', '"1e309"'), jsonValue),
    cur: jsonValue,
    line: fc.oneof(fc.constantFrom('"dsp-1"', '"dsp-unknown"'), nastyString.map((text) => JSON.stringify(text)), jsonValue),
    creative: fc.oneof(jsonValue, nastyString.map((text) => `{"id":${JSON.stringify(text)}}`)),
    user: jsonValue,
    note: fc.oneof(jsonValue, fc.constant('null')),
  };
  /** A DSP item for the mapping: an impression with one or two hostile fields, or every field fuzzed. */
  const mappedItem = fc.oneof(
    fc
      .tuple(fc.uuid(), fc.array(fc.constantFrom(...Object.keys(MAPPED_FIELDS)), { minLength: 1, maxLength: 2 }))
      .chain(([id, fields]) =>
        fc.tuple(...fields.map((field) => MAPPED_FIELDS[field]!.map((value): [string, string] => [field, value]))).map((entries) =>
          objectText([['kind', '"imp"'], ['id', JSON.stringify(`fz-${id}`)], ...entries]),
        ),
      ),
    fc.record(MAPPED_FIELDS, { requiredKeys: [] }).map((record) => objectText(Object.entries(record) as Array<[string, string]>)),
  );

  it('POST /v1/webhooks/:integration', async () => {
    const arbitrary = fc.record({
      mapped: fc.boolean(),
      body: fc.oneof(
        fc.record({ items: fc.array(fc.oneof(eventItem, mappedItem), { maxLength: 5 }), at: fc.nat() }).map(({ items, at }) => ({ items, at, garbage: undefined })),
        garbageBody.map((garbage) => ({ items: [] as string[], at: 0, garbage })),
      ),
      signature: fc.constantFrom('valid', 'valid', 'valid', 'valid', 'replayed', 'stale', 'fuzzed', 'none'),
      integration: fc.oneof({ weight: 8, arbitrary: fc.constant(undefined) }, { weight: 1, arbitrary: nastyString }),
      type: fc.constantFrom(...CONTENT_TYPES),
      headers: fuzzHeaders,
    });
    const delivery = (mapped: boolean, item: string) => ({ mapped, body: { items: [item], at: 0, garbage: undefined }, signature: 'valid' as const, integration: undefined, type: 'application/json', headers: {} });
    const examples = [
      delivery(true, '{"kind":"imp","id":"fz-to-string","user":{"toString":1,"valueOf":1}}'),
      delivery(true, '{"kind":"imp","id":"fz-line-nul","line":"a\\u0000b"}'),
      delivery(true, `{"kind":"imp","id":"fz-deep","note":${DEEP}}`),
      delivery(false, '{"type":"impression","creative_id":"\\ud800"}'),
      delivery(false, '{"type":"impression","user_key":"\\u0000"}'),
      delivery(false, `{"type":"impression","properties":${DEEP}}`),
    ];
    await fuzz('POST /v1/webhooks', arbitrary, examples, async ({ mapped, body, signature, integration, type, headers }) => {
      const id = integration === undefined ? (mapped ? integrations.mapped : integrations.canonical) : encodeURIComponent(integration.replace(/[\ud800-\udfff]/g, '')) || 'x';
      const secret = webhookSecret(SERVER_SECRET, id);
      const sib = sibling();
      const valid = mapped ? JSON.stringify({ kind: 'imp', id: sib }) : JSON.stringify({ event_id: sib, type: 'impression' });
      const envelope = (items: string) => (mapped ? `{"data":{"events":${items}}}` : `{"events":${items}}`);
      const text = body.garbage ?? envelope(withSibling(body.items, body.at, valid));
      const now = Math.floor(Date.now() / 1000);
      const header = {
        valid: signWebhook(secret, now, typeof text === 'string' ? text : Buffer.from(text).toString()),
        replayed: delivered?.headers['x-precise-signature'] ?? 't=1,v1=00',
        stale: signWebhook(secret, now - 3600, typeof text === 'string' ? text : ''),
        fuzzed: headers['x-precise-signature'] ?? 't=,v1=',
        none: undefined,
      }[signature];
      const attempt: Attempt =
        signature === 'replayed' && delivered
          ? delivered
          : {
              route: 'POST /v1/webhooks',
              method: 'POST',
              path: `/v1/webhooks/${id}`,
              headers: { ...headers, 'content-type': type, ...(header === undefined ? {} : { 'x-precise-signature': header }) },
              body: text,
            };
      if (header === undefined) delete attempt.headers['x-precise-signature'];
      const answer = await send(attempt);
      if (signature === 'valid' && answer.status < 300) delivered = attempt;
      if (body.garbage !== undefined || signature !== 'valid' || integration !== undefined) {
        const alone = envelope(`[${valid}]`);
        const target = mapped ? integrations.mapped : integrations.canonical;
        const after = await send({ ...attempt, path: `/v1/webhooks/${target}`, headers: { ...attempt.headers, 'x-precise-signature': signWebhook(webhookSecret(SERVER_SECRET, target), now, alone) }, body: alone });
        return expectSibling(attempt, after.status, 'event_id', sib);
      }
      await expectSibling(attempt, answer.status, 'event_id', sib);
    });
  });

  it('GET /v1/metrics', async () => {
    const plausible = ['impressions', 'clicks,ctr', 'roas', 'spend', 'campaign', 'creative', 'data_asset', 'organization', '2026-11-01', '2026-11-26',
      '2026-11-25T00:00:00Z', '2026-11-25T00:00:00+05:45', 'hour', 'day', 'week', 'month', 'UTC', 'Asia/Kathmandu', 'America/New_York', 'USD', 'none',
      campaignId, h.orgId, 'crv-1'];
    const arbitrary = fc.record({ pairs: fewPairs(METRICS_NAMES, plausible), replace: fc.boolean(), raw: fc.boolean(), auth: authMode, headers: fuzzHeaders });
    const base: Pairs = [['metric', 'impressions,ctr'], ['from', '2026-11-20'], ['to', '2026-11-27'], ['granularity', 'day']];
    const query = (pairs: Pairs) => ({ pairs, replace: true, raw: false, auth: 'valid' as const, headers: {} });
    const examples = [query([['metric', '__proto__']]), query([['metric', 'constructor']]), query([['from', '9999-99-99']]), query([['from', '0001-01-01']]), query([['entity_id', '\u0000']]), query([['tz', '+05:30']]), query([['entity_type', 'foo']])];
    await fuzz('GET /v1/metrics', arbitrary, examples, async ({ pairs, replace, raw, auth, headers }) => {
      const query = merge(base, pairs, replace);
      const attempt: Attempt = { route: 'GET /v1/metrics', method: 'GET', path: `/v1/metrics?${encodeQuery(query, raw)}`, headers: withBearer(headers, auth, readKey) };
      await send(attempt);
      const after = await send({ ...attempt, path: `/v1/metrics?${new URLSearchParams(base)}`, headers: withBearer(headers, 'valid', readKey) });
      if (after.status !== 200) record(attempt, 'sibling lost', after.status, `a valid query after it answered ${after.status}`);
    });
  });

  it('GET /v1/attribution', async () => {
    const plausible = ['linear', 'markov,shapley', 'last_touch,first_touch,position_based,time_decay', 'campaign', 'creative', 'data_asset', 'property:channel',
      'property:__proto__', '2026-11-01', '2026-11-26', '2026-11-25T00:00:00+05:45', 'UTC', 'Asia/Kathmandu', '0.9', '0.5', campaignId, randomUUID()];
    const arbitrary = fc.record({ pairs: fewPairs(ATTRIBUTION_NAMES, plausible), replace: fc.boolean(), raw: fc.boolean(), auth: authMode, headers: fuzzHeaders });
    const base: Pairs = [['model', 'linear,markov,shapley'], ['from', '2026-11-20'], ['to', '2026-11-27'], ['interval', '0.9']];
    const query = (pairs: Pairs) => ({ pairs, replace: true, raw: false, auth: 'valid' as const, headers: {} });
    const examples = [query([['model', '__proto__']]), query([['dimension', 'property:\u0000']]), query([['dimension', 'property:\ud800']]), query([['campaign_id', '\u0000']]),
      query([['interval', '1e-400']]), query([['from', '2000-01-01'], ['to', '2100-12-31']]), query([['dimension', `property:${'x'.repeat(64)}`]])];
    await fuzz('GET /v1/attribution', arbitrary, examples, async ({ pairs, replace, raw, auth, headers }) => {
      const attempt: Attempt = { route: 'GET /v1/attribution', method: 'GET', path: `/v1/attribution?${encodeQuery(merge(base, pairs, replace), raw)}`, headers: withBearer(headers, auth, readKey) };
      await send(attempt);
      const after = await send({ ...attempt, path: `/v1/attribution?${new URLSearchParams(base)}`, headers: withBearer(headers, 'valid', readKey) });
      if (after.status !== 200) record(attempt, 'sibling lost', after.status, `a valid query after it answered ${after.status}`);
    });
  });

  it('GET /v1/attribution/conversions/:event_id', async () => {
    const arbitrary = fc.record({ id: nastyString, raw: fc.boolean(), auth: authMode, headers: fuzzHeaders });
    const examples = [{ id: '%E0%A4%A', raw: true, auth: 'valid' as const, headers: {} }, { id: '..', raw: true, auth: 'valid' as const, headers: {} }];
    await fuzz('GET /v1/attribution/conversions/:event_id', arbitrary, examples, async ({ id, raw, auth, headers }) => {
      const attempt: Attempt = { route: 'GET /v1/attribution/conversions/:event_id', method: 'GET', path: `/v1/attribution/conversions/${raw ? id : encodeURIComponent(id.replace(/[\ud800-\udfff]/g, '\ufffd'))}`, headers: withBearer(headers, auth, readKey) };
      const answer = await send(attempt);
      if (auth === 'valid' && ![400, 404].includes(answer.status)) record(attempt, 'sibling lost', answer.status, `an unknown conversion answered ${answer.status}`);
    });
  });

  it('GET /v1/fatigue', async () => {
    const plausible = [campaignId, randomUUID(), h.orgId, '2026-11-20', '2026-11-25T00:00:00Z', '9999-99-99', 'UTC', 'crv-1', '__proto__'];
    const arbitrary = fc.record({ pairs: fewPairs(FATIGUE_NAMES, plausible), replace: fc.boolean(), raw: fc.boolean(), auth: authMode, headers: fuzzHeaders });
    const base: Pairs = [['campaign_id', campaignId]];
    const query = (pairs: Pairs) => ({ pairs, replace: true, raw: false, auth: 'valid' as const, headers: {} });
    const examples = [query([['campaign_id', '\u0000']]), query([['as_of', '0001-01-01']]), query([['campaign_id', '__proto__']])];
    await fuzz('GET /v1/fatigue', arbitrary, examples, async ({ pairs, replace, raw, auth, headers }) => {
      const attempt: Attempt = { route: 'GET /v1/fatigue', method: 'GET', path: `/v1/fatigue?${encodeQuery(merge(base, pairs, replace), raw)}`, headers: withBearer(headers, auth, readKey) };
      await send(attempt);
      const after = await send({ ...attempt, path: `/v1/fatigue?${new URLSearchParams(base)}`, headers: withBearer(headers, 'valid', readKey) });
      if (after.status !== 200) record(attempt, 'sibling lost', after.status, `a valid query after it answered ${after.status}`);
    });
  });

  it('GET /v1/fatigue/:creative_id', async () => {
    const arbitrary = fc.record({ id: nastyString, raw: fc.boolean(), auth: authMode, headers: fuzzHeaders, tz: fc.constantFrom('UTC', 'Asia/Kathmandu', 'America/Argentina/Salta', 'Etc/GMT-14', 'Nowhere/Land', '+05:30', '\u0000', '') });
    const examples = [{ id: '%E0%A4%A', raw: true, auth: 'valid' as const, headers: {}, tz: 'UTC' as const }, { id: '..', raw: true, auth: 'valid' as const, headers: {}, tz: 'UTC' as const }];
    await fuzz('GET /v1/fatigue/:creative_id', arbitrary, examples, async ({ id, raw, auth, headers, tz }) => {
      const creative = raw ? id : encodeURIComponent(id.replace(/[\ud800-\udfff]/g, '\ufffd'));
      const attempt: Attempt = { route: 'GET /v1/fatigue/:creative_id', method: 'GET', path: `/v1/fatigue/${creative}?campaign_id=${campaignId}&tz=${encodeURIComponent(tz)}`, headers: withBearer(headers, auth, readKey) };
      const answer = await send(attempt);
      if (auth === 'valid' && answer.status >= 500) record(attempt, 'sibling lost', answer.status, `a creative answered ${answer.status}`);
    });
  });

  it('GET /healthz', async () => {
    const arbitrary = fc.record({ pairs: queryPairs(['verbose', 'key'], ['1']), raw: fc.boolean(), headers: fuzzHeaders });
    await fuzz('GET /healthz', arbitrary, [{ pairs: [['__proto__', '\u0000']], raw: true, headers: {} }], async ({ pairs, raw, headers }) => {
      const attempt: Attempt = { route: 'GET /healthz', method: 'GET', path: `/healthz?${encodeQuery(pairs, raw)}`, headers };
      const answer = await send(attempt);
      if (answer.status !== 200) record(attempt, 'sibling lost', answer.status, `health answered ${answer.status} with the database up`);
    });
  });
});
