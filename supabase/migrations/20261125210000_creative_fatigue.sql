-- Creative fatigue: the stores of the creative-fatigue job (scheduled/jobs/creative-fatigue.ts)
-- and the readers of GET /v1/fatigue. The statistics are TypeScript
-- (scheduled/fatigue/detector.ts); this file keeps what they need between runs.
--
-- Inputs. Daily impressions and clicks per creative are summed from the rollup's 15-minute
-- points (entity_type 'creative'), never from raw events. The rollup keeps creative series per
-- creative_id whatever the campaign, so which creatives belong to a campaign is learnt from the
-- events' (campaign_id, creative_id) pairs, kept in fatigue_creatives by a step that follows its
-- own arrival watermark (rollup_state 'creative_fatigue'), as attribution does. A creative shown
-- in two campaigns is judged in each on its counts over both (the metrics hold no split).
--
-- Incremental. fatigue_days keeps, per campaign and UTC day, the counts the day was scored on and
-- the detector's state after it. A run re-reads the counts, finds the first day whose counts
-- differ from the stored ones (late data) or that was never scored, and steps from the state of
-- the day before it; days before are never recomputed. New settings re-step the whole campaign.
--
-- Outputs (one transaction per campaign, private.fatigue_apply): the verdicts per creative and
-- day (fatigue_verdicts); metrics fatigue_score, ctr_baseline and ctr_recent per creative and day,
-- granularity 'day' at the day's UTC midnight, dimensions {"campaign_id"} (public.metric_buckets
-- sums the '15m' grain only, so these scores are never added into a sum); and the events
-- creative_fatigue_detected / creative_fatigue_cleared, with deterministic event ids (a rerun
-- adds nothing: ingestion's dedup on sender ids).

-- ---------------------------------------------------------------------------------------------
-- The stores
-- ---------------------------------------------------------------------------------------------

create table public.fatigue_creatives (
  org_id uuid not null,
  campaign_id uuid not null,
  creative_id text not null check (length(creative_id) between 1 and 128),
  first_seen_at timestamptz not null default now(),
  primary key (org_id, campaign_id, creative_id)
);
comment on table public.fatigue_creatives is 'The creatives each campaign''s events named, for the creative-fatigue job (backend writes, members read).';

create table public.fatigue_campaigns (
  org_id uuid not null,
  campaign_id uuid not null,
  -- the settings the stored days were scored with (the detector's FatigueSettings)
  settings jsonb,
  -- bad settings: {"message", "field"}; the campaign's stored days wait, unchanged, for a fix
  error jsonb,
  -- the last UTC day scored
  last_day date,
  updated_at timestamptz not null default now(),
  primary key (org_id, campaign_id)
);
comment on table public.fatigue_campaigns is 'Per campaign: the fatigue settings in use or what is wrong with them (backend writes, members read).';

create table public.fatigue_days (
  org_id uuid not null,
  campaign_id uuid not null,
  day date not null,
  -- the counts the day was scored on: {"creative_id": [impressions, clicks]}, creatives with counts only
  counts jsonb not null check (jsonb_typeof(counts) = 'object'),
  -- the detector's CampaignState after the day
  state jsonb not null check (jsonb_typeof(state) = 'object'),
  updated_at timestamptz not null default now(),
  primary key (org_id, campaign_id, day)
);
comment on table public.fatigue_days is 'The creative-fatigue detector''s state per campaign and UTC day, and the counts it was computed from (backend writes, members read).';

create table public.fatigue_verdicts (
  org_id uuid not null,
  campaign_id uuid not null,
  creative_id text not null,
  day date not null,
  status text not null check (status in ('healthy', 'watch', 'fatigued', 'market_shift', 'insufficient_data')),
  score double precision not null,
  -- first day of the current status
  since date,
  impressions bigint not null,
  clicks bigint not null,
  evidence jsonb not null check (jsonb_typeof(evidence) = 'object'),
  primary key (org_id, campaign_id, creative_id, day)
);
comment on table public.fatigue_verdicts is 'The creative-fatigue verdict per creative and UTC day, with its evidence (backend writes, members read).';

alter table public.fatigue_creatives enable row level security;
create policy "fatigue_creatives: members read" on public.fatigue_creatives
  for select to authenticated using (org_id in (select private.user_org_ids()));
alter table public.fatigue_campaigns enable row level security;
create policy "fatigue_campaigns: members read" on public.fatigue_campaigns
  for select to authenticated using (org_id in (select private.user_org_ids()));
alter table public.fatigue_days enable row level security;
create policy "fatigue_days: members read" on public.fatigue_days
  for select to authenticated using (org_id in (select private.user_org_ids()));
alter table public.fatigue_verdicts enable row level security;
create policy "fatigue_verdicts: members read" on public.fatigue_verdicts
  for select to authenticated using (org_id in (select private.user_org_ids()));
-- No insert, update or delete policy: members cannot write; the backend (service_role) does.
revoke all on table public.fatigue_creatives, public.fatigue_campaigns, public.fatigue_days, public.fatigue_verdicts
  from anon, authenticated;
grant select on table public.fatigue_creatives, public.fatigue_campaigns, public.fatigue_days, public.fatigue_verdicts
  to authenticated;
grant all on table public.fatigue_creatives, public.fatigue_campaigns, public.fatigue_days, public.fatigue_verdicts
  to service_role;

insert into public.rollup_state (name) values ('creative_fatigue');

-- ---------------------------------------------------------------------------------------------
-- The job's steps
-- ---------------------------------------------------------------------------------------------

-- The (campaign, creative) pairs of the impressions and clicks that arrived since the watermark,
-- atomically with it. Never two at once (a second caller returns skipped).
create function private.fatigue_map_step() returns jsonb
language plpgsql
set search_path = ''
as $$
declare
  v_started timestamptz := clock_timestamp();
  v_from xid8;
  v_to xid8 := pg_snapshot_xmin(pg_current_snapshot());
  v_added bigint;
begin
  if not pg_try_advisory_xact_lock(hashtext('precise.creative_fatigue')) then
    return jsonb_build_object('skipped', true, 'reason', 'another creative-fatigue run is under way');
  end if;
  select s.watermark into v_from from public.rollup_state s where s.name = 'creative_fatigue' for update;
  v_to := greatest(v_to, v_from);
  insert into public.fatigue_creatives (org_id, campaign_id, creative_id)
  select distinct e.org_id, e.campaign_id, e.creative_id
  from public.events e
  where e.ingest_xid >= v_from and e.ingest_xid < v_to
    and e.type in ('impression', 'click') and e.campaign_id is not null and nullif(e.creative_id, '') is not null
  on conflict do nothing;
  get diagnostics v_added = row_count;
  update public.rollup_state s
     set watermark = v_to, last_run_at = v_started,
         last_duration_ms = (extract(epoch from clock_timestamp() - v_started) * 1000)::integer,
         last_events = v_added, runs = s.runs + 1, updated_at = now()
   where s.name = 'creative_fatigue';
  return jsonb_build_object('skipped', false, 'new_creatives', v_added);
end
$$;

-- The campaigns to score: those with creatives, their properties and the stored settings.
create function private.fatigue_campaign_work()
returns table (org_id uuid, campaign_id uuid, properties jsonb, stored_settings jsonb)
language sql
stable
set search_path = ''
as $$
  select c.org_id, c.id, c.properties, f.settings
  from public.campaigns c
  left join public.fatigue_campaigns f on f.org_id = c.org_id and f.campaign_id = c.id
  where exists (select from public.fatigue_creatives m where m.org_id = c.org_id and m.campaign_id = c.id)
  order by c.org_id, c.id
$$;

-- A campaign's daily impressions and clicks per creative, summed per UTC day from the rollup's
-- 15-minute points (every dimension split: they are disjoint parts of the total), for the days
-- before p_before: [[creative_id, day, impressions, clicks], ...].
create function private.fatigue_daily_counts(p_org_id uuid, p_campaign_id uuid, p_before date) returns jsonb
language sql
stable
set search_path = ''
as $$
  select coalesce(jsonb_agg(jsonb_build_array(x.creative_id, x.day, x.impressions, x.clicks) order by x.day, x.creative_id), '[]')
  from (
    select s.entity_id as creative_id, (p.bucket_start at time zone 'UTC')::date as day,
           coalesce(sum(p.value) filter (where s.metric = 'impressions'), 0) as impressions,
           coalesce(sum(p.value) filter (where s.metric = 'clicks'), 0) as clicks
    from public.fatigue_creatives m
    join public.metric_series s
      on s.org_id = m.org_id and s.entity_type = 'creative' and s.entity_id = m.creative_id
     and s.granularity = '15m' and s.metric in ('impressions', 'clicks')
    join public.metric_points p on p.org_id = s.org_id and p.series_id = s.id
    where m.org_id = p_org_id and m.campaign_id = p_campaign_id
      and p.bucket_start < (p_before::timestamp at time zone 'UTC')
    group by 1, 2
  ) x
$$;

-- What was stored of a campaign's days: [[day, counts], ...].
create function private.fatigue_stored_days(p_org_id uuid, p_campaign_id uuid) returns jsonb
language sql
stable
set search_path = ''
as $$
  select coalesce(jsonb_agg(jsonb_build_array(d.day, d.counts) order by d.day), '[]')
  from public.fatigue_days d
  where d.org_id = p_org_id and d.campaign_id = p_campaign_id
$$;

-- The detector's state after a day (null when none is stored).
create function private.fatigue_state_after(p_org_id uuid, p_campaign_id uuid, p_day date) returns jsonb
language sql
stable
set search_path = ''
as $$
  select d.state from public.fatigue_days d
  where d.org_id = p_org_id and d.campaign_id = p_campaign_id and d.day = p_day
$$;

-- Bad settings: recorded, nothing else changes (the stored days wait for a fix).
create function private.fatigue_record_error(p_org_id uuid, p_campaign_id uuid, p_error jsonb) returns void
language sql
set search_path = ''
as $$
  insert into public.fatigue_campaigns (org_id, campaign_id, error)
  values (p_org_id, p_campaign_id, p_error)
  on conflict (org_id, campaign_id) do update set error = excluded.error, updated_at = now()
$$;

-- Writes a campaign's re-stepped days from p_from on, in one transaction: its days and states,
-- its verdicts, the fatigue metrics of those days, and the transition events.
--   p_days: [[day, counts, state], ...]
--   p_verdicts: [[creative_id, day, status, score, since, impressions, clicks, evidence,
--                 fatigue_score, ctr_baseline or null, ctr_recent or null], ...]
--   p_events: [[creative_id, day, "detected" | "cleared", evidence], ...]
create function private.fatigue_apply(
  p_org_id uuid, p_campaign_id uuid, p_from date, p_last_day date, p_settings jsonb,
  p_days jsonb, p_verdicts jsonb, p_events jsonb
) returns jsonb
language plpgsql
set search_path = ''
as $$
declare
  v_dims jsonb := jsonb_build_object('campaign_id', p_campaign_id);
  v_points bigint;
  v_events bigint;
begin
  perform pg_advisory_xact_lock(hashtext('precise.creative_fatigue.' || p_campaign_id::text));

  delete from public.fatigue_days d where d.org_id = p_org_id and d.campaign_id = p_campaign_id and d.day >= p_from;
  insert into public.fatigue_days (org_id, campaign_id, day, counts, state)
  select p_org_id, p_campaign_id, (x ->> 0)::date, x -> 1, x -> 2 from jsonb_array_elements(p_days) x;

  delete from public.fatigue_verdicts v where v.org_id = p_org_id and v.campaign_id = p_campaign_id and v.day >= p_from;
  insert into public.fatigue_verdicts (org_id, campaign_id, creative_id, day, status, score, since, impressions, clicks, evidence)
  select p_org_id, p_campaign_id, x ->> 0, (x ->> 1)::date, x ->> 2, (x ->> 3)::double precision, (x ->> 4)::date,
         (x ->> 5)::bigint, (x ->> 6)::bigint, x -> 7
  from jsonb_array_elements(p_verdicts) x;

  -- the metrics: absolute values of a day (not additive), so the days re-stepped are replaced
  insert into public.metric_series (org_id, metric, entity_type, entity_id, granularity, dimensions)
  select distinct p_org_id, m.metric, 'creative', x ->> 0, 'day', v_dims
  from jsonb_array_elements(p_verdicts) x
  cross join (values ('fatigue_score'), ('ctr_baseline'), ('ctr_recent')) as m(metric)
  on conflict (org_id, entity_type, entity_id, metric, granularity, dimensions) do nothing;
  delete from public.metric_points p
  using public.metric_series s
  where s.org_id = p_org_id and s.entity_type = 'creative' and s.granularity = 'day' and s.dimensions = v_dims
    and s.metric in ('fatigue_score', 'ctr_baseline', 'ctr_recent')
    and p.org_id = s.org_id and p.series_id = s.id and p.bucket_start >= (p_from::timestamp at time zone 'UTC');
  insert into public.metric_points (org_id, series_id, bucket_start, value)
  select p_org_id, s.id, ((x ->> 1)::date)::timestamp at time zone 'UTC', v.value
  from jsonb_array_elements(p_verdicts) x
  cross join lateral (values ('fatigue_score', (x ->> 8)::numeric), ('ctr_baseline', (x ->> 9)::numeric),
                             ('ctr_recent', (x ->> 10)::numeric)) as v(metric, value)
  join public.metric_series s
    on s.org_id = p_org_id and s.entity_type = 'creative' and s.entity_id = x ->> 0 and s.metric = v.metric
   and s.granularity = 'day' and s.dimensions = v_dims
  where v.value is not null;
  get diagnostics v_points = row_count;

  -- one event per transition; its id depends on the campaign, creative, day and kind only, so a
  -- rerun (or a re-step that finds the same transition) is a duplicate that ingestion drops
  select count(*) into v_events
  from private.insert_events((
    select coalesce(jsonb_agg(jsonb_build_object(
             'org_id', p_org_id,
             'event_id', 'creative_fatigue_' || (x ->> 2) || '_' || md5(p_campaign_id::text || '/' || (x ->> 0) || '/' || (x ->> 1)),
             'id_source', 'client',
             'type', 'creative_fatigue_' || (x ->> 2),
             -- the end of the day judged: when the verdict could first be known
             'occurred_at', ((x ->> 1)::date + 1)::timestamp at time zone 'UTC',
             'campaign_id', p_campaign_id,
             'creative_id', x ->> 0,
             'properties', x -> 3,
             'context', jsonb_build_object('system', 'creative-fatigue'))), '[]')
    from jsonb_array_elements(p_events) x));

  insert into public.fatigue_campaigns (org_id, campaign_id, settings, error, last_day)
  values (p_org_id, p_campaign_id, p_settings, null, p_last_day)
  on conflict (org_id, campaign_id) do update
     set settings = excluded.settings, error = null, last_day = excluded.last_day, updated_at = now();

  return jsonb_build_object('days', jsonb_array_length(p_days), 'verdicts', jsonb_array_length(p_verdicts),
                            'points', v_points, 'events', v_events);
end
$$;

revoke all on function
  private.fatigue_map_step(),
  private.fatigue_campaign_work(),
  private.fatigue_daily_counts(uuid, uuid, date),
  private.fatigue_stored_days(uuid, uuid),
  private.fatigue_state_after(uuid, uuid, date),
  private.fatigue_record_error(uuid, uuid, jsonb),
  private.fatigue_apply(uuid, uuid, date, date, jsonb, jsonb, jsonb, jsonb)
  from public;
grant execute on function
  private.fatigue_map_step(),
  private.fatigue_campaign_work(),
  private.fatigue_daily_counts(uuid, uuid, date),
  private.fatigue_stored_days(uuid, uuid),
  private.fatigue_state_after(uuid, uuid, date),
  private.fatigue_record_error(uuid, uuid, jsonb),
  private.fatigue_apply(uuid, uuid, date, date, jsonb, jsonb, jsonb, jsonb)
  to service_role;

-- ---------------------------------------------------------------------------------------------
-- Reading: GET /v1/fatigue and GET /v1/fatigue/:creative_id. One jsonb value per call, for SQL
-- and supabase-js rpc alike; {"refused": field} for what the API answers 404 or 400.
-- ---------------------------------------------------------------------------------------------

-- The verdict of every creative of a campaign on p_as_of (null: the last day scored), each its
-- latest verdict on or before that day; creatives not yet scored are insufficient_data.
-- {"refused": "campaign_id"} for a campaign not the organization's; {"settings_error": {...}}
-- when its settings are bad.
create function public.fatigue_campaign(p_org_id uuid, p_campaign_id uuid, p_as_of date) returns jsonb
language plpgsql
stable
set search_path = ''
as $$
declare
  v_campaign public.fatigue_campaigns;
  v_as_of date;
begin
  if not exists (select from public.campaigns c where c.id = p_campaign_id and c.org_id = p_org_id) then
    return jsonb_build_object('refused', 'campaign_id');
  end if;
  select * into v_campaign from public.fatigue_campaigns f where f.org_id = p_org_id and f.campaign_id = p_campaign_id;
  if v_campaign.error is not null then
    return jsonb_build_object('settings_error', v_campaign.error);
  end if;
  v_as_of := coalesce(p_as_of, v_campaign.last_day);
  return jsonb_build_object(
    'as_of', v_as_of,
    'last_day', v_campaign.last_day,
    'rows', coalesce((
      select jsonb_agg(jsonb_build_object('creative_id', m.creative_id, 'day', v.day,
                                          'status', coalesce(v.status, 'insufficient_data'), 'score', coalesce(v.score, 0),
                                          'since', v.since, 'evidence', v.evidence) order by m.creative_id)
      from public.fatigue_creatives m
      left join lateral (
        select v.* from public.fatigue_verdicts v
        where v.org_id = m.org_id and v.campaign_id = m.campaign_id and v.creative_id = m.creative_id and v.day <= v_as_of
        order by v.day desc limit 1
      ) v on true
      where m.org_id = p_org_id and m.campaign_id = p_campaign_id), '[]'));
end
$$;
comment on function public.fatigue_campaign(uuid, uuid, date) is
  'GET /v1/fatigue: each creative''s verdict on a day, or {"refused": field} (backend only).';

-- One creative's daily series in a campaign: [[day, impressions, clicks, baseline CTR, recent
-- CTR, statistic, status, score], ...]; {"refused": "campaign_id" | "creative_id"}.
create function public.fatigue_creative_series(p_org_id uuid, p_campaign_id uuid, p_creative_id text) returns jsonb
language sql
stable
set search_path = ''
as $$
  select case
    when not exists (select from public.campaigns c where c.id = p_campaign_id and c.org_id = p_org_id)
      then jsonb_build_object('refused', 'campaign_id')
    when not exists (select from public.fatigue_creatives m
                     where m.org_id = p_org_id and m.campaign_id = p_campaign_id and m.creative_id = p_creative_id)
      then jsonb_build_object('refused', 'creative_id')
    else jsonb_build_object(
      'settings_error', (select f.error from public.fatigue_campaigns f where f.org_id = p_org_id and f.campaign_id = p_campaign_id),
      'rows', coalesce((
        select jsonb_agg(jsonb_build_array(v.day, v.impressions, v.clicks,
                                           case when v.evidence -> 'test' <> 'null' then v.evidence -> 'baseline' -> 'ctr' end,
                                           v.evidence -> 'recent' -> 'ctr', v.evidence -> 'test' -> 'statistic',
                                           v.status, v.score) order by v.day)
        from public.fatigue_verdicts v
        where v.org_id = p_org_id and v.campaign_id = p_campaign_id and v.creative_id = p_creative_id), '[]'))
  end
$$;
comment on function public.fatigue_creative_series(uuid, uuid, text) is
  'GET /v1/fatigue/:creative_id: one creative''s daily series, or {"refused": field} (backend only).';

revoke all on function
  public.fatigue_campaign(uuid, uuid, date),
  public.fatigue_creative_series(uuid, uuid, text)
  from public, anon, authenticated;
grant execute on function
  public.fatigue_campaign(uuid, uuid, date),
  public.fatigue_creative_series(uuid, uuid, text)
  to service_role;
