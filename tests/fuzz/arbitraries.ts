import fc from 'fast-check';

/**
 * Generators of hostile input for the public routes: strings that have broken parsers and
 * databases before (NUL, unpaired surrogates, prototype names, numbers beyond every range, unfilled
 * tracker macros, percent-encoding gone wrong), header values, query strings, JSON bodies (deep,
 * long, of every type) and content types. Everything a client could put on the wire; nothing the
 * Request constructor itself refuses (header values are Latin-1 without CR, LF or NUL).
 */

const UUID = '0d000000-0000-4000-8000-000000000001';

export const NASTY_STRINGS = [
  '\u0000', 'a\u0000b', '\ud800', '\udfff', 'x\ud83d', '\ud83d\ude00', '\u202e', 'e\u0301', 'İ', 'ß', '\ufeff', '\uffff',
  '__proto__', 'constructor', 'toString', 'prototype', 'hasOwnProperty', 'valueOf', '__defineGetter__',
  '8640000000000001', '-8640000000000001', '8640000000000000', '1e309', '-1e309', '1e-400', '-1', '-0', '0', '00', '0x10',
  'NaN', 'Infinity', '-Infinity', '9'.repeat(400), '1.7976931348623157e308', '9007199254740993', '1.', '.5', '1e3',
  '', ' ', '\t', '\r\n', '%00', '%', '%zz', '%E0%A4%A', '%C0%80', '%ED%A0%80', '+', '&', '=', '#', '?', ';', ',', ',,',
  '{clickid}', '${x}', '[CLICK_ID]', '%%CLICK_ID%%', '(click-ts)', '{click_id}',
  'null', 'true', 'false', '[]', '{}', '"', "'", '\\', '<script>alert(1)</script>', "'; drop table events; --",
  'javascript:alert(1)', 'data:text/html,x', 'http://', 'https://user:pw@shop.example.com/', 'https://shop.example.com/{click_id}',
  'https://shop.example.com/offer?clk={click_id}', 'https://evil.example.net/', '//evil.example.net', 'https://shop.example.com/%0d%0aSet-Cookie:x',
  '../../etc/passwd', 'USD', 'usd', 'EUR', 'XXX', 'XTS', 'approved', 'pending', 'rejected', 'lead', 'sale', 'chargeback',
  'impression', 'click', 'conversion', 'spend', 'data_usage', 'Impression', 'granted', 'denied', '1',
  UUID, UUID.toUpperCase(), `${UUID},${UUID}`, '2026-11-25T00:00:00Z', '2026-02-30T00:00:00Z', '9999-99-99', '0001-01-01',
  '+05:30', 'Asia/Kathmandu', 'EST5EDT', 'x'.repeat(129), 'x'.repeat(5000),
];

/** Any UTF-16 code unit: lone surrogates included (what a JSON "\ud800" escape gives). */
const codeUnit = fc.integer({ min: 0, max: 0xffff }).map((code) => String.fromCharCode(code));

/** The few that have broken things before, drawn often (alone or inside other text). */
export const DANGEROUS = ['\u0000', 'a\u0000b', '\ud800', 'x\udfff', '__proto__', 'constructor', 'toString', '8640000000000001', '1e309', '9'.repeat(400)];

export const nastyString: fc.Arbitrary<string> = fc.oneof(
  { weight: 3, arbitrary: fc.constantFrom(...DANGEROUS) },
  { weight: 1, arbitrary: fc.tuple(fc.string({ maxLength: 6 }), fc.constantFrom('\u0000', '\ud800', '\udc00'), fc.string({ maxLength: 6 })).map((parts) => parts.join('')) },
  { weight: 4, arbitrary: fc.constantFrom(...NASTY_STRINGS) },
  { weight: 3, arbitrary: fc.string({ maxLength: 24 }) },
  { weight: 2, arbitrary: fc.string({ unit: 'binary', maxLength: 16 }) },
  { weight: 1, arbitrary: fc.string({ unit: codeUnit, maxLength: 8 }) },
  { weight: 1, arbitrary: fc.oneof(fc.integer(), fc.double(), fc.bigInt()).map(String) },
);

/** One of the route's own names most of the time, something else besides. */
export const nameFrom = (names: readonly string[]) =>
  fc.oneof({ weight: 4, arbitrary: fc.constantFrom(...names) }, { weight: 1, arbitrary: nastyString });

/** A value: a plausible one for the route most of the time, a nasty one otherwise. */
export const valueFrom = (plausible: readonly string[]) =>
  fc.oneof({ weight: 2, arbitrary: fc.constantFrom(...plausible) }, { weight: 3, arbitrary: nastyString });

export type Pairs = Array<[string, string]>;

export const queryPairs = (names: readonly string[], plausible: readonly string[], maxLength = 8): fc.Arbitrary<Pairs> =>
  fc.array(fc.tuple(nameFrom(names), valueFrom(plausible)), { maxLength });

/**
 * Mostly one hostile parameter among valid ones, sometimes many: one bad value hides another (the
 * first refusal answers), so a value that only the database would choke on needs the others valid.
 */
export const fewPairs = (names: readonly string[], plausible: readonly string[]): fc.Arbitrary<Pairs> =>
  fc.oneof({ weight: 3, arbitrary: queryPairs(names, plausible, 1) }, { weight: 1, arbitrary: queryPairs(names, plausible, 8) });

/**
 * A query string: encoded as a browser would (unpaired surrogates become U+FFFD), or sent raw so
 * that malformed percent-encoding, '&' and '=' inside values reach the server's own decoder.
 */
export const encodeQuery = (pairs: Pairs, raw: boolean): string =>
  raw ? pairs.map(([name, value]) => `${name}=${value}`.replace(/[#\s]/g, encodeURIComponent)).join('&') : new URLSearchParams(pairs).toString();

// --- headers ------------------------------------------------------------------------------------

const latin1 = fc.integer({ min: 0x20, max: 0xff }).filter((code) => code !== 0x7f).map((code) => String.fromCharCode(code));

export const headerValue: fc.Arbitrary<string> = fc.oneof(
  fc.constantFrom('1', '0', 'true', '', ' ', '?1', 'Bearer', 'Bearer ', 'Basic YTpi', 't=1,v1=00', 't=,v1=', 'application/json', '::1', '256.256.256.256',
    '192.0.2.1, 10.0.0.1', '2001:db8::1', 'not an ip', 'de-DE,de;q=0.9', 'Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X)', 'Googlebot/2.1',
    'x'.repeat(8000), '%00', '\u00ff\u00fe', '\t'),
  fc.string({ unit: latin1, maxLength: 40 }),
);

export const HEADER_NAMES = [
  'user-agent', 'x-forwarded-for', 'x-real-ip', 'cf-connecting-ip', 'cf-ipcountry', 'sec-gpc', 'dnt', 'x-precise-anonymous',
  'accept-language', 'referer', 'origin', 'cookie', 'accept', 'x-request-id', 'content-type', 'authorization', 'x-precise-signature',
] as const;

export const fuzzHeaders: fc.Arbitrary<Record<string, string>> = fc.dictionary(fc.constantFrom(...HEADER_NAMES), headerValue, { maxKeys: 5 });

export const CONTENT_TYPES = [
  'application/json', 'application/json; charset=utf-8', 'text/plain', 'text/plain;charset=UTF-8', 'application/x-www-form-urlencoded',
  'multipart/form-data; boundary=xyz', 'application/octet-stream', 'application/json; charset=utf-16', 'text/html', '', '*/*', 'application/jsonx',
];

// --- JSON ---------------------------------------------------------------------------------------

/** JSON text of any shape: bodies are built as text, so that nesting can go deeper than JSON.stringify would. */
export const jsonValue: fc.Arbitrary<string> = fc.letrec<{ value: string }>((tie) => ({
  value: fc.oneof(
    { depthSize: 'small', withCrossShrink: true },
    nastyString.map((text) => JSON.stringify(text)),
    fc.constantFrom('8640000000000001', '-8640000000000001', '1e308', '1e309', '-0', '9007199254740993', '0.1', '1e-400', 'null', 'true', 'false', '{}', '[]'),
    fc.oneof(fc.integer(), fc.double({ noNaN: true, noDefaultInfinity: true })).map((n) => JSON.stringify(n)),
    fc.array(tie('value'), { maxLength: 4 }).map((items) => `[${items.join(',')}]`),
    fc.array(fc.tuple(nameFrom(['__proto__', 'constructor', 'type', 'events', 'value', 'properties']), tie('value')), { maxLength: 4 }).map(objectText),
  ),
})).value;

export function objectText(entries: Array<[string, string]>): string {
  return `{${entries.map(([name, value]) => `${JSON.stringify(name)}:${value}`).join(',')}}`;
}

/** A value nested n levels deep, as objects or arrays: a few levels past the limit, or thousands (FUZZ_MAX_DEPTH caps it). */
const MAX_DEPTH = Number(process.env.FUZZ_MAX_DEPTH) || 12_000;
export const deepJson = fc
  .tuple(
    fc.oneof({ weight: 3, arbitrary: fc.integer({ min: 1, max: Math.min(40, MAX_DEPTH) }) }, { weight: 1, arbitrary: fc.integer({ min: 1, max: MAX_DEPTH }) }),
    fc.boolean(),
  )
  .map(([depth, arrays]) => (arrays ? `${'['.repeat(depth)}1${']'.repeat(depth)}` : `${'{"a":'.repeat(depth)}1${'}'.repeat(depth)}`));

const EVENT_TYPES = ['impression', 'click', 'conversion', 'spend', 'data_usage', 'creative_view', 'win'];

const json = (text: string) => JSON.stringify(text);
const anyString = nastyString.map(json);
const extremeNumber = fc.constantFrom('8640000000000001', '8640000000000000', '-8640000000000001', '-1', '0', '1e21', '1e308', '-1e308', '1e-320', '9007199254740993', '0.1');

/** Per canonical field: values of the right JSON type that are hostile all the same. */
const FIELD_VALUES: Record<string, fc.Arbitrary<string>> = {
  event_id: anyString,
  type: fc.oneof(fc.constantFrom(...EVENT_TYPES).map(json), anyString),
  occurred_at: fc.oneof(extremeNumber, fc.constantFrom('"+275760-09-13T00:00:00Z"', '"2026-02-30T00:00:00Z"', '"2026-11-25T00:00:00+14:00"', json(new Date().toISOString())), anyString),
  campaign_id: fc.oneof(fc.constant(json(UUID)), anyString),
  creative_id: anyString,
  asset_ids: fc.array(fc.oneof(fc.constant(json(UUID)), anyString), { maxLength: 3 }).map((ids) => `[${ids.join(',')}]`),
  user_key: anyString,
  click_id: anyString,
  value: extremeNumber,
  currency: fc.oneof(fc.constantFrom('"USD"', '"EUR"', '"usd"', '"XTS"'), anyString),
  status: fc.oneof(fc.constantFrom('"approved"', '"pending"', '"rejected"'), anyString),
  properties: fc.oneof(fc.array(fc.tuple(nastyString, fc.oneof(anyString, extremeNumber, jsonValue)), { maxLength: 4 }).map(objectText), deepJson.map((deep) => `{"a":${deep}}`)),
  consent: fc.oneof(fc.constantFrom('"granted"', '"denied"'), anyString),
};

/** A valid impression but for one or two hostile fields (of the right type, so that they reach the database). */
export const nearlyValidEvent: fc.Arbitrary<string> = fc
  .tuple(fc.uuid(), fc.array(fc.constantFrom(...Object.keys(FIELD_VALUES)), { minLength: 1, maxLength: 2 }))
  .chain(([id, fields]) =>
    fc.tuple(...fields.map((field) => FIELD_VALUES[field]!.map((value): [string, string] => [field, value]))).map((entries) =>
      objectText([['event_id', json(`fz-${id}`)], ['type', '"impression"'], ...entries]),
    ),
  );

/** A canonical-looking event: nearly valid, every field plausible or hostile (unknown fields too), or anything. */
export const eventItem: fc.Arbitrary<string> = fc.oneof(
  { weight: 4, arbitrary: nearlyValidEvent },
  { weight: 2, arbitrary: fc
    .record({ ...FIELD_VALUES, event_id: fc.oneof(fc.uuid().map((id) => json(`fz-${id}`)), jsonValue), extra: jsonValue, proto: jsonValue }, { requiredKeys: [] })
    // a "__proto__" member, written as JSON text (an object literal would set the prototype)
    .map((record) => objectText(Object.entries(record).map(([name, value]) => [name === 'proto' ? '__proto__' : name, value]))) },
  { weight: 1, arbitrary: jsonValue },
  { weight: 1, arbitrary: deepJson },
);

/** A body that is not what the route expects: any JSON, deep JSON, form data, bytes that are not UTF-8. */
export const garbageBody: fc.Arbitrary<string | Uint8Array> = fc.oneof(
  jsonValue,
  deepJson,
  deepJson.map((deep) => `{"events":[{"type":"impression","properties":${deep}}]}`),
  nastyString,
  queryPairs(['click_id', 'value', 'events', 'type'], ['1']).map((pairs) => new URLSearchParams(pairs).toString()),
  fc.uint8Array({ maxLength: 64 }),
  fc.constantFrom('{', '[', '{"events":', '{"events":null}', '{"events":{}}', '{"events":[]}', `{"events":[${'1,'.repeat(1000)}1]}`, '\ufeff{"events":[]}'),
);
