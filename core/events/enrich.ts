import { createHmac } from 'node:crypto';
import Bowser from 'bowser';
import { isbot } from 'isbot';
import { LRUCache } from 'lru-cache';
import { ipv6Groups, parseIp } from '../ip.ts';
import { withoutIdentifiers, type EventContext, type UserContextInput } from './canonical.ts';

/**
 * Enrichment at the edge, once per request: geo from Cloudflare's request.cf, device from the
 * user agent (bowser), a bot flag from isbot's crawler list (flag, never drop), the IP never
 * kept raw (truncated to its network, and hashed with a salt that changes every UTC day so
 * hashes cannot be joined across days), consent from Sec-GPC, DNT and a `consent` parameter,
 * and an anonymous mode that drops identifiers.
 */
export interface RequestFacts {
  source: string;
  userAgent?: string | null;
  ip?: string | null;
  /** Cloudflare's request.cf, when running on Workers */
  cf?: { country?: unknown; region?: unknown; city?: unknown; colo?: unknown; asn?: unknown } | null;
  headers: { get(name: string): string | null };
  /** the request's `consent` parameter */
  consent?: string | null;
  /** the request's `anon` parameter (pixels cannot set headers) */
  anonymousParam?: string | null;
  keyId?: string;
  now: Date;
}

export function enrichRequest(facts: RequestFacts, ipHashSecret: string): EventContext {
  const param = facts.consent === 'granted' || facts.consent === 'denied' ? facts.consent : undefined;
  return enrich(
    {
      source: facts.source,
      keyId: facts.keyId,
      anonymous: isTruthy(facts.headers.get('x-precise-anonymous')) || isTruthy(facts.anonymousParam ?? null),
      gpc: facts.headers.get('sec-gpc')?.trim() === '1',
      dnt: facts.headers.get('dnt')?.trim() === '1',
      consent: param,
      userAgent: facts.userAgent ?? '',
      ip: facts.ip ?? undefined,
      geo: geoFromCf(facts.cf),
    },
    ipHashSecret,
    facts.now,
  );
}

/**
 * The context of a server-side request before any event's own: who sent it and the server's
 * instructions (anonymous mode), but nothing of the calling server as if it were the user.
 */
export function serverContext(facts: Pick<RequestFacts, 'source' | 'headers' | 'anonymousParam' | 'keyId'>): EventContext {
  const anonymous = isTruthy(facts.headers.get('x-precise-anonymous')) || isTruthy(facts.anonymousParam ?? null);
  return {
    source: facts.source,
    ...(anonymous ? { anonymous: true } : {}),
    ...(facts.keyId ? { key_id: facts.keyId } : {}),
  };
}

/** A server-side event's context from the end user's own (its input `context`), enriched as a pixel's request. */
export function enrichUserContext(given: UserContextInput, server: EventContext, ipHashSecret: string, now: Date): EventContext {
  const geo = { country: given.country?.toUpperCase(), region: given.region, city: given.city };
  return enrich(
    {
      source: server.source,
      keyId: server.key_id,
      anonymous: server.anonymous === true,
      gpc: false,
      dnt: false,
      consent: given.consent,
      userAgent: given.user_agent ?? '',
      ip: given.ip,
      geo: Object.values(geo).some((value) => value !== undefined) ? geo : undefined,
    },
    ipHashSecret,
    now,
  );
}

interface Signals {
  source: string;
  keyId?: string;
  anonymous: boolean;
  gpc: boolean;
  dnt: boolean;
  consent?: 'granted' | 'denied';
  userAgent: string;
  ip?: string;
  geo?: EventContext['geo'];
}

function enrich(signals: Signals, ipHashSecret: string, now: Date): EventContext {
  const { anonymous, gpc, dnt, consent: param, userAgent } = signals;
  const limited = gpc || dnt || param === 'denied';
  const bot = userAgent.length > 0 && isbot(userAgent);
  const context: EventContext = {
    source: signals.source,
    geo: signals.geo,
    device: describeDevice(userAgent, bot, anonymous),
    bot,
    consent: { gpc, dnt, ...(param ? { param } : {}), limited },
    ...(anonymous ? { anonymous: true } : {}),
    ...(signals.keyId ? { key_id: signals.keyId } : {}),
  };
  if (signals.ip && !limited && !anonymous) {
    context.ip = { truncated: truncateIp(signals.ip), hash: hashIp(signals.ip, ipHashSecret, now) };
  }
  return limited || anonymous ? withoutIdentifiers(context) : context;
}

function isTruthy(value: string | null): boolean {
  return value !== null && ['1', 'true', 'yes', 'on'].includes(value.trim().toLowerCase());
}

function geoFromCf(cf: RequestFacts['cf']): EventContext['geo'] {
  if (!cf) return undefined;
  const text = (value: unknown) => (typeof value === 'string' && value.length > 0 ? value : undefined);
  const geo = {
    country: text(cf.country),
    region: text(cf.region),
    city: text(cf.city),
    colo: text(cf.colo),
    asn: typeof cf.asn === 'number' ? cf.asn : undefined,
  };
  return Object.values(geo).some((value) => value !== undefined) ? geo : undefined;
}

// Real traffic repeats a few thousand user agents; parsing one costs ~10 µs, a lookup ~0.1.
const parsedAgents = new LRUCache<string, Bowser.Parser.ParsedResult>({ max: 2000, memoMethod: (userAgent) => Bowser.parse(userAgent) });

function parseAgent(userAgent: string): Bowser.Parser.ParsedResult {
  return parsedAgents.memo(userAgent);
}

function describeDevice(userAgent: string, bot: boolean, anonymous: boolean): NonNullable<EventContext['device']> {
  if (!userAgent) return { type: 'unknown' };
  if (bot) return { type: 'bot' };
  const parsed = parseAgent(userAgent);
  const type = parsed.platform.type || 'unknown';
  if (anonymous) return { type };
  return {
    type,
    ...(parsed.browser.name ? { browser: parsed.browser.name } : {}),
    ...(parsed.browser.version ? { browser_version: parsed.browser.version } : {}),
    ...(parsed.os.name ? { os: parsed.os.name } : {}),
    ...(parsed.os.version ? { os_version: parsed.os.version } : {}),
  };
}

/** IPv4 to its /24, IPv6 to its /48: enough for rough geo and abuse analysis, not a person. */
export function truncateIp(ip: string): string | undefined {
  const address = parseIp(ip);
  if (!address) return undefined;
  return 'octets' in address ? `${address.octets.slice(0, 3).join('.')}.0` : `${ipv6Groups(address, 3)}::`;
}

/** HMAC-SHA256 of the IP, keyed by the secret and the UTC day: stable within a day, unlinkable across days. */
export function hashIp(ip: string, secret: string, now: Date): string {
  const day = now.toISOString().slice(0, 10);
  // one address, one hash, however it was written (::ffff:a.b.c.d, leading zeros, upper case)
  const canonical = parseIp(ip)?.toString() ?? ip.trim().toLowerCase();
  return createHmac('sha256', `${secret}:${day}`).update(canonical).digest('hex').slice(0, 32);
}
