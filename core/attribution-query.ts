import type { Queryable } from './db/port.ts';
import { callRpc, type SupabaseClient } from './db/supabase.ts';
import { PreciseError } from './errors.ts';
import { quoted } from './metrics-query.ts';

/**
 * Reading attribution (GET /v1/attribution and its explain endpoint): the conversions of a period
 * and their stored paths (public.attribution_period), the rule models' credits stored as metrics
 * (public.attribution_stored_credits), one conversion's path (public.attribution_conversion).
 * The models' math is passed in (scheduled/attribution/models.ts, joined by the composition
 * roots): core imports nothing above it.
 */
export const RULE_MODELS = ['last_touch', 'first_touch', 'linear', 'position_based', 'time_decay'] as const;
export const DATA_DRIVEN_MODELS = ['markov', 'shapley'] as const;
export const MODELS = [...RULE_MODELS, ...DATA_DRIVEN_MODELS] as const;
export type RuleModel = (typeof RULE_MODELS)[number];
export type DataDrivenModel = (typeof DATA_DRIVEN_MODELS)[number];
export type Model = (typeof MODELS)[number];

/** The dimensions by name; besides them, property:<name>. */
export const DIMENSIONS = ['campaign', 'creative', 'data_asset'] as const;
export type Dimension = (typeof DIMENSIONS)[number] | 'property';
/** The dimensions whose rule-model credits the attribution job stores as metrics (the others are computed from the paths). */
export const STORED_DIMENSIONS: readonly Dimension[] = ['campaign', 'creative'];

/** The channel of a touch without a value at the dimension asked for. */
export const NO_CHANNEL = '(none)';

/** The shapes of scheduled/attribution/models.ts that the reader calls (the contract of issue 12). */
export interface MathTouch {
  at: number;
  kind: 'click' | 'view';
  channel: string;
}
export interface ChannelPath {
  channels: readonly string[];
  value?: number;
}
export interface AttributionMath {
  ruleCredits(model: RuleModel, touches: readonly MathTouch[], convertedAt: number, options?: { halfLifeDays?: number }): number[];
  markovCredits(converting: readonly ChannelPath[], nonConverting: readonly ChannelPath[]): Map<string, number>;
  shapleyCredits(converting: readonly ChannelPath[]): Map<string, number>;
  bootstrapIntervals(
    model: DataDrivenModel,
    converting: readonly ChannelPath[],
    nonConverting: readonly ChannelPath[],
    options: { level: number; samples?: number; seed?: number },
  ): Map<string, { low: number; high: number }>;
}

export interface AttributionSettings {
  click_window_days: number;
  view_window_days: number;
  click_beats_view: boolean;
  time_decay_half_life_days: number;
}
/** The settings, or what is wrong with them (the job waits for them to be fixed). */
type StoredSettings = AttributionSettings | { error: string; field: string };

export const DEFAULT_SETTINGS: AttributionSettings = { click_window_days: 7, view_window_days: 1, click_beats_view: false, time_decay_half_life_days: 7 };

export interface AttributionQuery {
  orgId: string;
  models: Model[];
  dimension: Dimension;
  /** the property name of a property:<name> dimension */
  property?: string;
  /** UTC instants (ISO); a conversion counts when its 15-minute bucket starts in [from, to) */
  from: string;
  to: string;
  campaignId?: string;
  /** a central level in (0, 1): bootstrap low/high for markov and shapley */
  interval?: number;
}

type Currency = string | null;

/** What public.attribution_period answers (see the migration). */
export type PeriodAnswer =
  | {
      refused?: undefined;
      settings: StoredSettings;
      conversions: number;
      attributed: number;
      pending: number;
      non_converting: number;
      currencies: Array<[Currency, number, number, string | number]>;
      grouped: Array<[number, Currency, string | number | null, string[]]> | null;
      detailed: Array<[number, Currency, string | number | null, Array<[number, 'c' | 'v', string]>]> | null;
      non_converting_paths: Array<[number, string[]]> | null;
    }
  | { refused: 'campaign_id' };

/** [model, channel, currency, conversions, value] summed from the stored metrics. */
export type StoredCredit = [string, string, Currency, string | number, string | number];

/** A stored touch (private.attribution_touch_json). */
export interface StoredTouch {
  id: string;
  at: number;
  k: 'c' | 'v';
  cmp?: string;
  crv?: string;
  ast?: string;
  p?: Record<string, string | number | boolean>;
}

export type ConversionAnswer =
  | {
      refused?: undefined;
      settings: StoredSettings;
      event_id: string;
      converted_at: string;
      status: string;
      value: number | null;
      currency: string | null;
      campaign_id: string | null;
      click_id: string | null;
      user_key: string | null;
      touches: StoredTouch[] | null;
      touches_dropped: number;
      pending: boolean;
    }
  | { refused: 'event_id' };

/** Where attribution is read from: SQL (Postgres, PGlite, Hyperdrive) or supabase-js rpc. */
export interface AttributionReader {
  period(query: AttributionQuery, want: { grouped: boolean; detailed: boolean }): Promise<PeriodAnswer>;
  storedCredits(query: AttributionQuery, models: RuleModel[]): Promise<StoredCredit[]>;
  conversion(orgId: string, eventId: string): Promise<ConversionAnswer>;
}

export function sqlAttributionReader(db: Queryable): AttributionReader {
  const one = async <T>(text: string, params: unknown[]) => (await db.query<{ result: T }>(text, params)).rows[0]!.result;
  return {
    period: (query, want) =>
      one<PeriodAnswer>('select public.attribution_period($1, $2, $3, $4::timestamptz, $5::timestamptz, $6, $7, $8) as result', [
        query.orgId, query.dimension, query.property ?? null, query.from, query.to, query.campaignId ?? null, want.grouped, want.detailed,
      ]),
    storedCredits: (query, models) =>
      one<StoredCredit[]>('select public.attribution_stored_credits($1, $2, $3::text[], $4::timestamptz, $5::timestamptz) as result', [
        query.orgId, query.dimension, models, query.from, query.to,
      ]),
    conversion: (orgId, eventId) => one<ConversionAnswer>('select public.attribution_conversion($1, $2) as result', [orgId, eventId]),
  };
}

export function supabaseAttributionReader(client: SupabaseClient): AttributionReader {
  return {
    period: (query, want) =>
      callRpc<PeriodAnswer>(client, 'attribution_period', {
        p_org_id: query.orgId,
        p_dimension: query.dimension,
        p_property: query.property ?? null,
        p_from: query.from,
        p_to: query.to,
        p_campaign_id: query.campaignId ?? null,
        p_grouped: want.grouped,
        p_detailed: want.detailed,
      }),
    storedCredits: (query, models) =>
      callRpc<StoredCredit[]>(client, 'attribution_stored_credits', {
        p_org_id: query.orgId,
        p_dimension: query.dimension,
        p_models: models,
        p_from: query.from,
        p_to: query.to,
      }),
    conversion: (orgId, eventId) => callRpc<ConversionAnswer>(client, 'attribution_conversion', { p_org_id: orgId, p_event_id: eventId }),
  };
}

// ---------------------------------------------------------------------------------------------
// Parameters
// ---------------------------------------------------------------------------------------------

export function parseModels(values: string[]): Model[] {
  const names = [...new Set(values.flatMap((value) => value.split(',')).map((name) => name.trim()).filter(Boolean))];
  if (names.length === 0) throw new PreciseError('validation_failed', `model is required (one or several of ${MODELS.join(', ')})`, { field: 'model' });
  return names.map((name) => {
    const model = MODELS.find((known) => known === name);
    if (!model) throw new PreciseError('validation_failed', `unknown model ${quoted(name)} (known: ${MODELS.join(', ')})`, { field: 'model' });
    return model;
  });
}

// control characters and unpaired surrogates: never in a property name Postgres stored
const NOT_IN_NAMES = /[\u0000-\u001f\u007f-\u009f]|[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;

export function parseDimension(value: string): { dimension: Dimension; property?: string } {
  const known = DIMENSIONS.find((name) => name === value);
  if (known) return { dimension: known };
  if (value.startsWith('property:')) {
    const property = value.slice('property:'.length);
    if (property.length >= 1 && property.length <= 64 && !NOT_IN_NAMES.test(property)) return { dimension: 'property', property };
  }
  throw new PreciseError('validation_failed', `dimension must be campaign, creative, data_asset or property:<name> (a name of 1 to 64 characters), not ${quoted(value)}`, {
    field: 'dimension',
  });
}

export function parseInterval(value: string | undefined): number | undefined {
  if (value === undefined || value === '') return undefined;
  const level = /^0?\.\d{1,6}$/.test(value) ? Number(value) : NaN;
  if (!(level > 0 && level < 1)) throw new PreciseError('validation_failed', 'interval must be a level between 0 and 1, e.g. 0.9', { field: 'interval' });
  return level;
}

// ---------------------------------------------------------------------------------------------
// GET /v1/attribution
// ---------------------------------------------------------------------------------------------

export interface AttributionRow {
  model: Model;
  key: string;
  conversions: number;
  value: number;
  currency: Currency;
  low?: { conversions: number; value: number };
  high?: { conversions: number; value: number };
}

/** Credit per (model, channel, currency), summed. */
class Ledger {
  readonly rows = new Map<string, AttributionRow>();

  add(model: Model, channel: string, currency: Currency, conversions: number, value: number, dimension: Dimension) {
    // a set of data assets shares its credit equally
    const keys = dimension === 'data_asset' && channel !== NO_CHANNEL ? channel.split(',') : [channel];
    for (const key of keys) {
      const id = JSON.stringify([model, key, currency]);
      const row = this.rows.get(id) ?? { model, key, conversions: 0, value: 0, currency };
      row.conversions += conversions / keys.length;
      row.value += value / keys.length;
      this.rows.set(id, row);
    }
  }

  bound(model: Model, channel: string, currency: Currency, side: 'low' | 'high', conversions: number, value: number, dimension: Dimension) {
    const keys = dimension === 'data_asset' && channel !== NO_CHANNEL ? channel.split(',') : [channel];
    for (const key of keys) {
      const row = this.rows.get(JSON.stringify([model, key, currency]));
      if (!row) continue;
      const bound = (row[side] ??= { conversions: 0, value: 0 });
      bound.conversions += conversions / keys.length;
      bound.value += value / keys.length;
    }
  }
}

export async function queryAttribution(reader: AttributionReader, math: AttributionMath, query: AttributionQuery) {
  const rules = query.models.filter((model): model is RuleModel => (RULE_MODELS as readonly string[]).includes(model));
  const driven = query.models.filter((model): model is DataDrivenModel => (DATA_DRIVEN_MODELS as readonly string[]).includes(model));
  // the rule models' credits are stored for campaigns and creatives; the others, or a campaign filter, are computed now
  const fromMetrics = rules.length > 0 && STORED_DIMENSIONS.includes(query.dimension) && query.campaignId === undefined;
  const [period, stored] = await Promise.all([
    reader.period(query, { grouped: driven.length > 0, detailed: rules.length > 0 && !fromMetrics }),
    fromMetrics ? reader.storedCredits(query, rules) : Promise.resolve([] as StoredCredit[]),
  ]);
  if (period.refused) throw new PreciseError('not_found', `no campaign ${quoted(query.campaignId ?? '')} for this organization`, { field: 'campaign_id' });
  const settings = 'error' in period.settings ? DEFAULT_SETTINGS : period.settings;

  const ledger = new Ledger();
  if (fromMetrics) {
    for (const [model, channel, currency, conversions, value] of stored) {
      ledger.add(model as Model, channel, currency, Number(conversions), Number(value), query.dimension);
    }
  } else {
    ruleModelCredits(ledger, math, rules, period.detailed ?? [], settings.time_decay_half_life_days, query.dimension);
  }
  if (driven.length > 0) dataDrivenCredits(ledger, math, driven, period, query);

  const order = new Map(query.models.map((model, i) => [model, i]));
  const data = [...ledger.rows.values()]
    .filter((row) => row.conversions !== 0 || row.value !== 0)
    .sort((a, b) => order.get(a.model)! - order.get(b.model)! || b.conversions - a.conversions || compare(a.key, b.key) || compare(a.currency ?? '', b.currency ?? ''));
  return {
    data,
    meta: {
      models: query.models,
      dimension: query.dimension === 'property' ? `property:${query.property}` : query.dimension,
      from: query.from,
      to: query.to,
      ...(query.campaignId ? { campaign_id: query.campaignId } : {}),
      conversions: period.conversions,
      attributed: period.attributed,
      unattributed: period.conversions - period.attributed,
      // conversions whose paths the job has not built yet (counted as they are now)
      pending: period.pending,
      paths: { converting: period.attributed, non_converting: period.non_converting },
      windows: settings,
      ...('error' in period.settings ? { settings_error: period.settings } : {}),
    },
  };
}

const compare = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);

/** Each conversion's credits by the rule models, from its detailed path. */
function ruleModelCredits(
  ledger: Ledger,
  math: AttributionMath,
  models: RuleModel[],
  conversions: NonNullable<Extract<PeriodAnswer, { refused?: undefined }>['detailed']>,
  halfLifeDays: number,
  dimension: Dimension,
) {
  for (const [convertedAt, currency, amount, path] of conversions) {
    const touches: MathTouch[] = path.map(([at, kind, channel]) => ({ at, kind: kind === 'c' ? 'click' : 'view', channel }));
    for (const model of models) {
      const credits = math.ruleCredits(model, touches, convertedAt, { halfLifeDays });
      touches.forEach((touch, i) => ledger.add(model, touch.channel, currency, credits[i]!, credits[i]! * Number(amount ?? 0), dimension));
    }
  }
}

/**
 * What one request may make the Markov chain cost. Its solve grows with the cube of the channels
 * (1,000 channels: 0.6 s; 2,000: 5 s) and runs on the request's thread, where it would hold up
 * every other request; a bootstrap interval repeats it 200 times (100 channels: a few ms a solve).
 */
export const MARKOV_MAX_CHANNELS = 1_200;
export const MARKOV_INTERVAL_MAX_CHANNELS = 100;

export function assertMarkovAffordable(channels: number, interval: boolean): void {
  if (channels > MARKOV_MAX_CHANNELS) {
    throw new PreciseError(
      'validation_failed',
      `markov is computed for at most ${MARKOV_MAX_CHANNELS} channels; this period has ${channels} at this dimension: ask a coarser dimension, a shorter range or a campaign_id`,
      { field: 'dimension' },
    );
  }
  if (interval && channels > MARKOV_INTERVAL_MAX_CHANNELS) {
    throw new PreciseError(
      'validation_failed',
      `markov intervals are computed for at most ${MARKOV_INTERVAL_MAX_CHANNELS} channels; this period has ${channels} at this dimension: drop interval, or ask a coarser dimension`,
      { field: 'interval' },
    );
  }
}

function distinctChannelCount(converting: ReadonlyArray<readonly string[]>, nonConverting: ReadonlyArray<readonly [number, readonly string[]]>): number {
  const seen = new Set<string>();
  for (const channels of converting) for (const channel of channels) seen.add(channel);
  for (const [, channels] of nonConverting) for (const channel of channels) seen.add(channel);
  return seen.size;
}

/**
 * Markov: one chain over every path of the period (conversions as the total), each channel's
 * share then applied to each currency's attributed conversions and value (credit = total ×
 * removal effect / sum of effects, linear in the total). Shapley: per currency, exactly.
 * Intervals: Markov's is the bootstrap interval of the channel's share, scaled the same way;
 * Shapley's are bootstrapped per currency.
 */
function dataDrivenCredits(ledger: Ledger, math: AttributionMath, models: DataDrivenModel[], period: Extract<PeriodAnswer, { refused?: undefined }>, query: AttributionQuery) {
  const groups = period.grouped ?? [];
  const totals = new Map<Currency, { conversions: number; value: number }>(
    period.currencies.map(([currency, , attributed, value]) => [currency, { conversions: attributed, value: Number(value) }]),
  );
  const expand = <T>(count: number, item: T) => Array.from({ length: count }, () => item);
  const nonConverting = (period.non_converting_paths ?? []).flatMap(([count, channels]) => expand(count, { channels }));

  if (models.includes('markov')) {
    assertMarkovAffordable(distinctChannelCount(groups.map(([, , , channels]) => channels), period.non_converting_paths ?? []), query.interval !== undefined);
    // one path per conversion (the chain counts each path's transitions), each worth one conversion
    const converting = groups.flatMap(([count, , , channels]) => expand(count, { channels, value: 1 }));
    const total = converting.length;
    if (total > 0) {
      const credits = math.markovCredits(converting, nonConverting);
      for (const [channel, credit] of credits) {
        for (const [currency, t] of totals) {
          if (t.conversions > 0) ledger.add('markov', channel, currency, (credit / total) * t.conversions, (credit / total) * t.value, query.dimension);
        }
      }
      if (query.interval !== undefined) {
        const intervals = math.bootstrapIntervals('markov', converting, nonConverting, { level: query.interval, seed: 1 });
        for (const [channel, { low, high }] of intervals) {
          for (const [currency, t] of totals) {
            ledger.bound('markov', channel, currency, 'low', (low / total) * t.conversions, (low / total) * t.value, query.dimension);
            ledger.bound('markov', channel, currency, 'high', (high / total) * t.conversions, (high / total) * t.value, query.dimension);
          }
        }
      }
    }
  }

  if (models.includes('shapley')) {
    for (const currency of totals.keys()) {
      const mine = groups.filter(([, c]) => c === currency);
      const counted = math.shapleyCredits(mine.map(([count, , , channels]) => ({ channels, value: count })));
      const valued = math.shapleyCredits(mine.map(([count, , amount, channels]) => ({ channels, value: count * Number(amount ?? 0) })));
      for (const [channel, credit] of counted) ledger.add('shapley', channel, currency, credit, valued.get(channel) ?? 0, query.dimension);
      if (query.interval !== undefined && mine.length > 0) {
        const paths = mine.flatMap(([count, , amount, channels]) => expand(count, { channels, amount: Number(amount ?? 0) }));
        const options = { level: query.interval, seed: 1 };
        const byCount = math.bootstrapIntervals('shapley', paths.map(({ channels }) => ({ channels, value: 1 })), [], options);
        const byValue = math.bootstrapIntervals('shapley', paths.map(({ channels, amount }) => ({ channels, value: amount })), [], options);
        for (const [channel, { low, high }] of byCount) {
          const value = byValue.get(channel) ?? { low: 0, high: 0 };
          ledger.bound('shapley', channel, currency, 'low', low, value.low, query.dimension);
          ledger.bound('shapley', channel, currency, 'high', high, value.high, query.dimension);
        }
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// GET /v1/attribution/conversions/:event_id
// ---------------------------------------------------------------------------------------------

export async function explainConversion(reader: AttributionReader, math: AttributionMath, orgId: string, eventId: string) {
  const found = await reader.conversion(orgId, eventId);
  if (found.refused) throw new PreciseError('not_found', `no conversion with an event ${quoted(eventId)} for this organization`, { field: 'event_id' });
  const settings = 'error' in found.settings ? DEFAULT_SETTINGS : found.settings;
  const stored = found.touches ?? [];
  const convertedAt = Date.parse(found.converted_at);
  const touches: MathTouch[] = stored.map((touch) => ({ at: touch.at, kind: touch.k === 'c' ? 'click' : 'view', channel: '' }));
  const credits = Object.fromEntries(
    RULE_MODELS.map((model) => [model, math.ruleCredits(model, touches, convertedAt, { halfLifeDays: settings.time_decay_half_life_days })]),
  );
  return {
    data: {
      event_id: found.event_id,
      converted_at: new Date(convertedAt).toISOString(),
      status: found.status,
      value: found.value,
      currency: found.currency,
      campaign_id: found.campaign_id,
      click_id: found.click_id,
      user_key: found.user_key,
      // counted (credited) only while approved, with a touch in its windows
      attributed: found.status === 'approved' && stored.length > 0,
      pending: found.pending,
      touches_dropped: found.touches_dropped,
      touches: stored.map((touch, i) => ({
        event_id: touch.id,
        at: new Date(touch.at).toISOString(),
        kind: touch.k === 'c' ? 'click' : 'view',
        channels: {
          campaign: touch.cmp ?? NO_CHANNEL,
          creative: touch.crv ?? NO_CHANNEL,
          data_asset: touch.ast ? touch.ast.split(',') : [],
          properties: touch.p ?? {},
        },
        credits: Object.fromEntries(RULE_MODELS.map((model) => [model, credits[model]![i]!])),
      })),
    },
    meta: { windows: settings, ...('error' in found.settings ? { settings_error: found.settings } : {}) },
  };
}
