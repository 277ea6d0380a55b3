import type { Queryable } from './db/port.ts';
import { callRpc, type SupabaseClient } from './db/supabase.ts';
import { PreciseError } from './errors.ts';
import { quoted } from './metrics-query.ts';

/**
 * Reading creative fatigue (GET /v1/fatigue and GET /v1/fatigue/:creative_id): the verdicts the
 * creative-fatigue job stored (public.fatigue_campaign, public.fatigue_creative_series). Days are
 * UTC days, the days the job scores.
 */
export const FATIGUE_STATUSES = ['healthy', 'watch', 'fatigued', 'market_shift', 'insufficient_data'] as const;
export type FatigueStatus = (typeof FATIGUE_STATUSES)[number];

interface SettingsError {
  field: string;
  message: string;
}

export type CampaignAnswer =
  | { refused: 'campaign_id' }
  | { refused?: undefined; settings_error: SettingsError }
  | {
      refused?: undefined;
      settings_error?: undefined;
      as_of: string | null;
      last_day: string | null;
      rows: Array<{ creative_id: string; day: string | null; status: FatigueStatus; score: number; since: string | null; evidence: object | null }>;
    };

export type SeriesAnswer =
  | { refused: 'campaign_id' | 'creative_id' }
  | {
      refused?: undefined;
      settings_error: SettingsError | null;
      /** [day, impressions, clicks, baseline CTR, recent CTR, statistic, status, score] */
      rows: Array<[string, number, number, number | null, number | null, number | null, FatigueStatus, number]>;
    };

/** Where the verdicts are read from: SQL (Postgres, PGlite, Hyperdrive) or supabase-js rpc. */
export interface FatigueReader {
  campaign(orgId: string, campaignId: string, asOf: string | null): Promise<CampaignAnswer>;
  series(orgId: string, campaignId: string, creativeId: string): Promise<SeriesAnswer>;
}

export function sqlFatigueReader(db: Queryable): FatigueReader {
  const one = async <T>(text: string, params: unknown[]) => (await db.query<{ result: T }>(text, params)).rows[0]!.result;
  return {
    campaign: (orgId, campaignId, asOf) =>
      one<CampaignAnswer>('select public.fatigue_campaign($1, $2, $3::date) as result', [orgId, campaignId, asOf]),
    series: (orgId, campaignId, creativeId) =>
      one<SeriesAnswer>('select public.fatigue_creative_series($1, $2, $3) as result', [orgId, campaignId, creativeId]),
  };
}

export function supabaseFatigueReader(client: SupabaseClient): FatigueReader {
  return {
    campaign: (orgId, campaignId, asOf) =>
      callRpc<CampaignAnswer>(client, 'fatigue_campaign', { p_org_id: orgId, p_campaign_id: campaignId, p_as_of: asOf }),
    series: (orgId, campaignId, creativeId) =>
      callRpc<SeriesAnswer>(client, 'fatigue_creative_series', { p_org_id: orgId, p_campaign_id: campaignId, p_creative_id: creativeId }),
  };
}

/** One row per creative of the campaign: its verdict on `asOf` (default: the last day scored). */
export async function fatigueVerdicts(reader: FatigueReader, orgId: string, campaignId: string, asOf: string | null) {
  const answer = await reader.campaign(orgId, campaignId, asOf);
  if (answer.refused) throw notFound(answer.refused, campaignId);
  if (answer.settings_error) throw badSettings(answer.settings_error);
  return {
    data: answer.rows.map(({ creative_id, status, score, since, evidence }) => ({ creative_id, status, score, since, evidence })),
    meta: { campaign_id: campaignId, as_of: answer.as_of, last_scored_day: answer.last_day },
  };
}

/** One creative's daily series: counts, CTR, baseline, the detector's statistic and status per UTC day. */
export async function fatigueSeries(reader: FatigueReader, orgId: string, campaignId: string, creativeId: string) {
  const answer = await reader.series(orgId, campaignId, creativeId);
  if (answer.refused) throw notFound(answer.refused, answer.refused === 'campaign_id' ? campaignId : creativeId);
  if (answer.settings_error) throw badSettings(answer.settings_error);
  return {
    data: answer.rows.map(([day, impressions, clicks, baseline, recent, statistic, status, score]) => ({
      day,
      impressions: Number(impressions),
      clicks: Number(clicks),
      ctr: Number(impressions) > 0 ? Number(clicks) / Number(impressions) : null,
      baseline,
      recent,
      statistic,
      status,
      score,
    })),
    meta: { campaign_id: campaignId, creative_id: creativeId, tz: 'UTC' },
  };
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
