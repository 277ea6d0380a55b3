import type { Queryable } from './db/port.ts';
import { callRpc, type SupabaseClient } from './db/supabase.ts';
import { PreciseError } from './errors.ts';
import { quoted, validateTimeZone } from './metrics-query.ts';

/**
 * Reading creative fatigue (GET /v1/fatigue and GET /v1/fatigue/:creative_id): the verdicts the
 * creative-fatigue job stored (public.fatigue_campaign, public.fatigue_creative_series), and the
 * exposure counts its watermark step keeps (fatigue_exposure_cells), fitted here by the detector's
 * exposureCurve (scheduled/fatigue/detector.ts, passed in by the composition root). The job scores
 * UTC days; the daily series sums local days of any time zone from the rollup's 15-minute points.
 */
export const FATIGUE_STATUSES = ['healthy', 'watch', 'fatigued', 'market_shift', 'insufficient_data'] as const;
export type FatigueStatus = (typeof FATIGUE_STATUSES)[number];

interface SettingsError {
  field: string;
  message: string;
}

/** A creative's users reached and their impressions (events with a user key, bots apart, lifetime). */
interface FrequencyCounts {
  users: number | string;
  impressions: number | string;
}

export type CampaignAnswer =
  | { refused: 'campaign_id' }
  | { refused?: undefined; settings_error: SettingsError }
  | {
      refused?: undefined;
      settings_error?: undefined;
      as_of: string | null;
      last_day: string | null;
      rows: Array<{
        creative_id: string;
        day: string | null;
        status: FatigueStatus;
        score: number;
        since: string | null;
        evidence: object | null;
        frequency: FrequencyCounts | null;
      }>;
    };

export type SeriesAnswer =
  | { refused: 'campaign_id' | 'creative_id' | 'tz' }
  | {
      refused?: undefined;
      settings_error: SettingsError | null;
      /** [local day, impressions, clicks, UTC day of the verdict, baseline CTR, recent CTR, statistic, status, score] */
      rows: Array<[string, number | string, number | string, string, number | null, number | null, number | null, FatigueStatus | null, number | null]>;
      /** [exposure, impressions, clicks]: 1 … 19 the k-th impression of a user, 20 the 20th and later, 0 clicks before any */
      exposure: Array<[number, number | string, number | string]>;
    };

/** The detector's exposureCurve (scheduled/fatigue/detector.ts): the shapes the reader relies on. */
export interface ExposureCountRow {
  exposure: number;
  impressions: number;
  clicks: number;
}
export interface FatigueMath {
  exposureCurve(
    counts: readonly ExposureCountRow[],
    options: { openLast?: boolean },
  ): { points: readonly object[]; fit: object | null; halfLifeExposure: number | null; reason: string | null };
}

/** The last exposure cell, "20 or more" (public.fatigue_exposure_cells). */
export const EXPOSURE_CAP = 20;

/** Where the verdicts are read from: SQL (Postgres, PGlite, Hyperdrive) or supabase-js rpc. */
export interface FatigueReader {
  campaign(orgId: string, campaignId: string, asOf: string | null): Promise<CampaignAnswer>;
  series(orgId: string, campaignId: string, creativeId: string, timeZone: string): Promise<SeriesAnswer>;
}

export function sqlFatigueReader(db: Queryable): FatigueReader {
  const one = async <T>(text: string, params: unknown[]) => (await db.query<{ result: T }>(text, params)).rows[0]!.result;
  return {
    campaign: (orgId, campaignId, asOf) =>
      one<CampaignAnswer>('select public.fatigue_campaign($1, $2, $3::date) as result', [orgId, campaignId, asOf]),
    series: (orgId, campaignId, creativeId, timeZone) =>
      one<SeriesAnswer>('select public.fatigue_creative_series($1, $2, $3, $4) as result', [orgId, campaignId, creativeId, timeZone]),
  };
}

export function supabaseFatigueReader(client: SupabaseClient): FatigueReader {
  return {
    campaign: (orgId, campaignId, asOf) =>
      callRpc<CampaignAnswer>(client, 'fatigue_campaign', { p_org_id: orgId, p_campaign_id: campaignId, p_as_of: asOf }),
    series: (orgId, campaignId, creativeId, timeZone) =>
      callRpc<SeriesAnswer>(client, 'fatigue_creative_series', {
        p_org_id: orgId,
        p_campaign_id: campaignId,
        p_creative_id: creativeId,
        p_time_zone: timeZone,
      }),
  };
}

/**
 * One row per creative of the campaign: its verdict on `asOf` (default: the last day scored), its
 * evidence with the creative's frequency (lifetime, as of the job's latest run) where users have keys.
 */
export async function fatigueVerdicts(reader: FatigueReader, orgId: string, campaignId: string, asOf: string | null) {
  const answer = await reader.campaign(orgId, campaignId, asOf);
  if (answer.refused) throw notFound(answer.refused, campaignId);
  if (answer.settings_error) throw badSettings(answer.settings_error);
  return {
    data: answer.rows.map(({ creative_id, status, score, since, evidence, frequency }) => ({
      creative_id,
      status,
      score,
      since,
      evidence: evidence && { ...evidence, frequency: frequencyOf(frequency) },
    })),
    meta: { campaign_id: campaignId, as_of: answer.as_of, last_scored_day: answer.last_day },
  };
}

export interface SeriesQuery {
  orgId: string;
  campaignId: string;
  creativeId: string;
  /** an IANA time zone (validated here); the days of the series are its local days */
  timeZone: string;
}

/**
 * One creative's daily series in the time zone asked for (counts, CTR, and the verdict known at
 * the local day's end: baseline, the detector's statistic, status), and its exposure curve.
 */
export async function fatigueSeries(reader: FatigueReader, math: FatigueMath, query: SeriesQuery) {
  validateTimeZone(query.timeZone);
  const { orgId, campaignId, creativeId, timeZone } = query;
  const answer = await reader.series(orgId, campaignId, creativeId, timeZone);
  if (answer.refused === 'tz') {
    throw new PreciseError('validation_failed', `unknown time zone ${quoted(timeZone)} (the database does not know it)`, { field: 'tz' });
  }
  if (answer.refused) throw notFound(answer.refused, answer.refused === 'campaign_id' ? campaignId : creativeId);
  if (answer.settings_error) throw badSettings(answer.settings_error);
  return {
    data: answer.rows.map(([day, impressions, clicks, scoredDay, baseline, recent, statistic, status, score]) => ({
      day,
      impressions: Number(impressions),
      clicks: Number(clicks),
      ctr: Number(impressions) > 0 ? Number(clicks) / Number(impressions) : null,
      scored_day: scoredDay,
      baseline,
      recent,
      statistic,
      status,
      score,
    })),
    exposure: exposureOf(math, answer.exposure),
    meta: { campaign_id: campaignId, creative_id: creativeId, tz: timeZone },
  };
}

/** The curve of the cells (the last one open: "20 or more"), its fit, the clicks before any impression, the frequency. */
function exposureOf(math: FatigueMath, cells: Array<[number, number | string, number | string]>) {
  const rows = cells.map(([exposure, impressions, clicks]) => ({ exposure, impressions: Number(impressions), clicks: Number(clicks) }));
  const numbered = rows.filter((row) => row.exposure >= 1);
  const curve = math.exposureCurve(numbered, { openLast: numbered.some((row) => row.exposure === EXPOSURE_CAP) });
  const users = numbered.find((row) => row.exposure === 1)?.impressions ?? 0;
  const impressions = numbered.reduce((sum, row) => sum + row.impressions, 0);
  return {
    ...curve,
    clicksBeforeFirstImpression: rows.find((row) => row.exposure === 0)?.clicks ?? 0,
    frequency: frequencyOf(users > 0 ? { users, impressions } : null),
  };
}

/** Impressions per user reached, over the creative's life; null without user keys. */
function frequencyOf(counts: FrequencyCounts | null) {
  if (!counts || !(Number(counts.users) > 0)) return null;
  const users = Number(counts.users);
  const impressions = Number(counts.impressions);
  return { users, impressions, perUser: impressions / users, over: 'lifetime' as const };
}

/** A date parameter (YYYY-MM-DD, a real day). */
export function dayParam(value: string | undefined, field: string): string | null {
  if (value === undefined || value === '') return null;
  const match = /^(\d{4})-(\d{2})-(\d{2})$/.exec(value);
  const ms = match ? Date.UTC(Number(match[1]), Number(match[2]) - 1, Number(match[3])) : NaN;
  if (!match || Number.isNaN(ms) || new Date(ms).toISOString().slice(0, 10) !== value || Number(match[1]) < 2000 || Number(match[1]) > 2100) {
    throw new PreciseError('validation_failed', `${field} ${quoted(value)} must be a day, YYYY-MM-DD`, { field });
  }
  return value;
}

function notFound(field: 'campaign_id' | 'creative_id', id: string): PreciseError {
  const what = field === 'campaign_id' ? 'campaign' : 'creative of this campaign';
  return new PreciseError('not_found', `no ${what} ${quoted(id)} for this organization`, { field });
}

function badSettings(error: SettingsError): PreciseError {
  return new PreciseError('validation_failed', `the campaign's fatigue settings are invalid, so it is not scored: ${error.message}`, {
    field: error.field,
  });
}
