import type { Queryable } from '../../core/db/port.ts';
import { PreciseError } from '../../core/errors.ts';
import {
  emptyCampaignState,
  parseFatigueSettings,
  stepCampaign,
  type CampaignState,
  type CreativeVerdict,
  type DayCounts,
  type FatigueSettings,
} from '../fatigue/detector.ts';
import type { JobDefinition } from '../job.ts';

/**
 * Creative fatigue, kept incrementally (supabase/migrations/20261125210000_creative_fatigue.sql):
 * learns each campaign's creatives from the events that arrived, and folds those events into the
 * per-user exposure counts of the exposure curve (20261126110000_fatigue_exposures.sql: the same
 * watermark step, so each is counted once), reads their daily impressions
 * and clicks from the rollup's metrics, and steps the detector (scheduled/fatigue/detector.ts)
 * from the first UTC day whose counts changed (or that was never scored) up to the last complete
 * UTC day, from the stored state of the day before. Writes verdicts, the metrics fatigue_score,
 * ctr_baseline and ctr_recent, and an event when a creative turns fatigued or stops being so.
 * A campaign whose settings are bad is held back and reported; the others go on.
 */
export interface CreativeFatigueInput {
  /** the last day to score (YYYY-MM-DD); default the last complete UTC day */
  through?: string;
  /** refused: the job re-steps what changed by itself (a range recompute is the rollup's) */
  from?: string;
  to?: string;
}

interface CampaignWork {
  org_id: string;
  campaign_id: string;
  properties: Record<string, unknown> | null;
  stored_settings: FatigueSettings | null;
  /** the creatives its events named */
  creatives: number;
}

/** {creative_id: [impressions, clicks]} of one day */
type Counts = Record<string, [number, number]>;
/** [creative_id, day, impressions, clicks] as the SQL readers give them */
type CountRow = [string, string, number | string, number | string];

const DAY_MS = 86_400_000;
/**
 * An organization whose campaigns name at most this many creatives (a creative counted once per
 * campaign) has its counts read in one statement, all held at once (some 150 bytes a creative
 * and day: 45 MB for 10,000 creatives over 30 days); a larger one is read a campaign at a time,
 * which costs 1.7 to 2 × as much.
 */
const ORG_READ_CREATIVES = 20_000;
const dayOf = (ms: number) => new Date(ms).toISOString().slice(0, 10);
const DAY = /^\d{4}-\d{2}-\d{2}$/;

/** `orgReadCreatives`: see ORG_READ_CREATIVES (tests lower it to take the per-campaign path). */
export async function runCreativeFatigue(db: Queryable, input: CreativeFatigueInput = {}, { orgReadCreatives = ORG_READ_CREATIVES } = {}) {
  if (input.from || input.to) {
    throw new PreciseError('invalid_argument', 'creative-fatigue takes no --from/--to: it re-steps every day whose counts changed', {
      field: input.from ? 'from' : 'to',
    });
  }
  const through = input.through ?? dayOf(Date.now() - DAY_MS);
  if (!DAY.test(through) || dayOf(Date.parse(`${through}T00:00:00Z`)) !== through) {
    throw new PreciseError('invalid_argument', 'through must be a day, YYYY-MM-DD', { field: 'through' });
  }
  const { rows } = await db.query<{ result: { skipped: boolean } & Record<string, unknown> }>('select private.fatigue_map_step() as result');
  const mapped = rows[0]!.result;
  if (mapped.skipped) return mapped;

  const { rows: campaigns } = await db.query<CampaignWork>('select * from private.fatigue_campaign_work()');
  const summary = { ...mapped, through, campaigns: campaigns.length, unchanged: 0, days_stepped: 0, points: 0, events: 0 };
  const restepped: Array<{ campaign_id: string; from: string }> = [];
  const settingsErrors: Array<{ org_id: string; campaign_id: string; field: string; message: string }> = [];
  const before = dayOf(Date.parse(`${through}T00:00:00Z`) + DAY_MS);
  let org: { id: string; counts: Map<string, CountRow[]> | null } | undefined;
  // one campaign's write at a time, while the next one is read and stepped (TypeScript and the
  // database work at once); awaited before the next write and at the end
  let writing: Promise<void> = Promise.resolve();
  for (const campaign of campaigns) {
    // campaigns come ordered by organization: its counts are read at its first campaign
    if (org?.id !== campaign.org_id) org = { id: campaign.org_id, counts: await readOrgCounts(db, campaign.org_id, campaigns, before, orgReadCreatives) };
    let settings: FatigueSettings;
    try {
      settings = parseFatigueSettings(campaign.properties);
    } catch (error) {
      if (!(error instanceof PreciseError)) throw error;
      const field = String(error.details?.field ?? 'properties');
      settingsErrors.push({ org_id: campaign.org_id, campaign_id: campaign.campaign_id, field, message: error.message });
      await db.query('select private.fatigue_record_error($1, $2, $3::jsonb)', [
        campaign.org_id, campaign.campaign_id, JSON.stringify({ field, message: error.message }),
      ]);
      continue;
    }
    const rows = org.counts ? (org.counts.get(campaign.campaign_id) ?? []) : await readCampaignCounts(db, campaign, before);
    const prepared = await prepareCampaign(db, campaign, settings, through, byDay(rows));
    if (!prepared) {
      summary.unchanged += 1;
      continue;
    }
    await writing;
    writing = writeCampaign(db, prepared).then((result) => {
      restepped.push({ campaign_id: campaign.campaign_id, from: prepared.from });
      summary.days_stepped += result.days;
      summary.points += result.points;
      summary.events += result.events;
    });
    // not unhandled while the next campaign is prepared: its failure fails the run when awaited
    writing.catch(() => {});
  }
  await writing;
  return { ...summary, restepped, ...(settingsErrors.length > 0 ? { settings_errors: settingsErrors } : {}) };
}

/**
 * Re-steps one campaign from its first changed day (`fresh`: its counts now): what
 * private.fatigue_apply is to write; undefined when nothing changed.
 */
async function prepareCampaign(db: Queryable, campaign: CampaignWork, settings: FatigueSettings, through: string, fresh: Map<string, Counts>) {
  const { org_id: orgId, campaign_id: campaignId } = campaign;
  const { rows: storedRows } = await db.query<{ result: Array<[string, Counts]> }>('select private.fatigue_stored_days($1, $2) as result', [
    orgId,
    campaignId,
  ]);
  const stored = new Map(storedRows[0]!.result.map(([day, counts]) => [day, canonical(counts)]));
  const firstDays = [...fresh.keys(), ...stored.keys()].sort();
  if (firstDays.length === 0 || firstDays[0]! > through) return undefined;
  const first = firstDays[0]!;

  const sameSettings = campaign.stored_settings !== null && sameEntries(campaign.stored_settings, settings);
  let from: string | undefined;
  for (let ms = Date.parse(`${first}T00:00:00Z`); dayOf(ms) <= through; ms += DAY_MS) {
    const day = dayOf(ms);
    if (!sameSettings || stored.get(day) !== canonical(fresh.get(day) ?? {})) {
      from = day;
      break;
    }
  }
  if (from === undefined) return undefined;

  let state: CampaignState = emptyCampaignState();
  if (from > first) {
    const { rows } = await db.query<{ state: CampaignState }>('select private.fatigue_state_after($1, $2, $3) as state', [
      orgId,
      campaignId,
      dayOf(Date.parse(`${from}T00:00:00Z`) - DAY_MS),
    ]);
    state = rows[0]!.state;
  }

  const days: unknown[] = [];
  const verdicts: unknown[] = [];
  const events: unknown[] = [];
  for (let ms = Date.parse(`${from}T00:00:00Z`); dayOf(ms) <= through; ms += DAY_MS) {
    const day = dayOf(ms);
    const counts = fresh.get(day) ?? {};
    const step = stepCampaign(state, day, toDayCounts(counts), settings);
    for (const verdict of step.verdicts) {
      const previous = state.creatives[verdict.creativeId]?.status;
      verdicts.push(verdictRow(verdict, counts[verdict.creativeId]));
      if (verdict.status === 'fatigued' && previous !== 'fatigued') events.push([verdict.creativeId, day, 'detected', verdict.evidence]);
      if (previous === 'fatigued' && verdict.status !== 'fatigued') events.push([verdict.creativeId, day, 'cleared', verdict.evidence]);
    }
    state = step.state;
    days.push([day, counts, state]);
  }
  return { from, params: [orgId, campaignId, from, through, JSON.stringify(settings), JSON.stringify(days), JSON.stringify(verdicts), JSON.stringify(events)] };
}

/** Writes a campaign's re-stepped days in one transaction (private.fatigue_apply). */
async function writeCampaign(db: Queryable, prepared: { params: unknown[] }) {
  const { rows } = await db.query<{ result: { days: number; points: number | string; events: number | string } }>(
    'select private.fatigue_apply($1, $2, $3, $4, $5::jsonb, $6::jsonb, $7::jsonb, $8::jsonb) as result',
    prepared.params,
  );
  const { days, points, events } = rows[0]!.result;
  return { days, points: Number(points), events: Number(events) };
}

/**
 * Every campaign's counts of an organization per UTC day before `before`, summed from the
 * rollup's metrics in one statement; null when its campaigns name too many creatives to hold.
 */
async function readOrgCounts(db: Queryable, orgId: string, campaigns: CampaignWork[], before: string, limit: number) {
  const creatives = campaigns.reduce((sum, c) => sum + (c.org_id === orgId ? c.creatives : 0), 0);
  if (creatives > limit) return null;
  const { rows } = await db.query<{ campaign_id: string; creative_id: string; day: string; impressions: string; clicks: string }>(
    'select campaign_id, creative_id, day, impressions, clicks from private.fatigue_org_daily_counts($1, $2)',
    [orgId, before],
  );
  const byCampaign = new Map<string, CountRow[]>();
  for (const row of rows) {
    const counts = byCampaign.get(row.campaign_id) ?? [];
    counts.push([row.creative_id, row.day, row.impressions, row.clicks]);
    byCampaign.set(row.campaign_id, counts);
  }
  return byCampaign;
}

/** One campaign's counts per UTC day before `before` (an organization too large to read at once). */
async function readCampaignCounts(db: Queryable, campaign: CampaignWork, before: string): Promise<CountRow[]> {
  const { rows } = await db.query<{ result: CountRow[] }>('select private.fatigue_daily_counts($1, $2, $3) as result', [
    campaign.org_id,
    campaign.campaign_id,
    before,
  ]);
  return rows[0]!.result;
}

function byDay(rows: CountRow[]): Map<string, Counts> {
  const days = new Map<string, Counts>();
  for (const [creativeId, day, impressions, clicks] of rows) {
    const counts = days.get(day) ?? {};
    counts[creativeId] = [Number(impressions), Number(clicks)];
    days.set(day, counts);
  }
  return days;
}

/** A day's counts in one spelling whatever the key order (jsonb reorders keys). */
function canonical(counts: Counts): string {
  return JSON.stringify(Object.entries(counts).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
}

/** Settings as stored (jsonb, keys reordered) against settings as parsed. */
function sameEntries(stored: object, parsed: object): boolean {
  const sorted = (value: object) => JSON.stringify(Object.entries(value).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
  return sorted(stored) === sorted(parsed);
}

function toDayCounts(counts: Counts): Map<string, DayCounts> {
  return new Map(Object.entries(counts).map(([creativeId, [impressions, clicks]]) => [creativeId, { impressions, clicks }]));
}

const finite = (value: number | null | undefined) => (typeof value === 'number' && Number.isFinite(value) ? value : null);

/** A verdict as private.fatigue_apply takes it, with its three metric values. */
function verdictRow(verdict: CreativeVerdict, counts: [number, number] | undefined) {
  const { evidence } = verdict;
  return [
    verdict.creativeId,
    verdict.day,
    verdict.status,
    finite(verdict.score) ?? 0,
    verdict.since,
    counts?.[0] ?? 0,
    counts?.[1] ?? 0,
    evidence,
    finite(verdict.score) ?? 0,
    evidence.test ? finite(evidence.baseline.ctr) : null,
    finite(evidence.recent.ctr),
  ];
}

export const creativeFatigueJob: JobDefinition<CreativeFatigueInput> = {
  name: 'creative-fatigue',
  cron: '11 * * * *',
  run: (db, input) => runCreativeFatigue(db, input),
};
