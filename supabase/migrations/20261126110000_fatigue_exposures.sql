-- Creative fatigue: exposure counts per user, for the exposure-response curve (CTR at a user's
-- 1st, 2nd, … impression of a creative) and the frequency (impressions per user), kept by the
-- creative-fatigue job's watermark step; and the readers of GET /v1/fatigue and
-- GET /v1/fatigue/:creative_id, which now return them (and local days in a `tz`).
--
-- What is counted. Per (campaign, creative, user_key): the user's non-bot impressions with a
-- campaign, a creative and a user key, numbered by occurred_at; the k-th is exposure k, from the
-- 20th on the open cell "20+". A click is at the exposure of the user's latest impression of the
-- creative in the campaign at or before it (the number of that user's impressions at or before
-- it, capped at 20); a click before any impression of the user is at exposure 0.
--
-- Exact whatever the order of arrival. A cell's impressions depend only on how many impressions
-- each user has (a user with n gives one to each of cells 1 … min(n, 19) and n − 19 to "20+"),
-- not on their order. A click's cell needs the times of the user's impressions before it, but
-- only the earliest 20: past the 20th it is "20+" whatever arrives later (a late impression only
-- moves the 20th earlier). So a user's row keeps their impression count, their earliest 20
-- impression times, and the times of their clicks not yet known to be "20+". A step recomputes
-- each user it touches from that row and adds the difference to the cells: a late impression
-- before earlier-counted clicks moves them up a cell, a late click lands where it belongs.
-- Every event is folded once, in the transaction that moves the watermark (fatigue_map_step).
--
-- Counted from the events that arrived since this migration's watermark, plus, once, by this
-- migration, every event still in the log that arrived before it (the backfill below): events
-- retention dropped before this migration ran are not in the curve.

-- ---------------------------------------------------------------------------------------------
-- The stores
-- ---------------------------------------------------------------------------------------------

create table public.fatigue_exposure_users (
  org_id uuid not null,
  campaign_id uuid not null,
  creative_id text not null,
  user_key text not null,
  impressions bigint not null check (impressions >= 0),
  -- the user's earliest impression times, at most 20, ascending
  first_impressions timestamptz[] not null,
  -- the times of the user's clicks before their 20th impression (or with fewer than 20), ascending
  open_clicks timestamptz[] not null,
  -- clicks at or after the user's 20th impression: "20+" for good
  capped_clicks bigint not null check (capped_clicks >= 0),
  primary key (org_id, campaign_id, creative_id, user_key)
);
comment on table public.fatigue_exposure_users is 'Per campaign, creative and user: impressions so far and what numbers their clicks, for the exposure curve (backend writes, members read).';

create table public.fatigue_exposure_cells (
  org_id uuid not null,
  campaign_id uuid not null,
  creative_id text not null,
  -- 1 … 19: the k-th impression of a user; 20: the 20th and later; 0: clicks before any impression
  exposure smallint not null check (exposure between 0 and 20),
  impressions bigint not null,
  clicks bigint not null,
  primary key (org_id, campaign_id, creative_id, exposure)
);
comment on table public.fatigue_exposure_cells is 'The exposure curve''s cells per campaign and creative: impressions and clicks at a user''s k-th exposure (backend writes, members read).';

alter table public.fatigue_exposure_users enable row level security;
create policy "fatigue_exposure_users: members read" on public.fatigue_exposure_users
  for select to authenticated using (org_id in (select private.user_org_ids()));
alter table public.fatigue_exposure_cells enable row level security;
create policy "fatigue_exposure_cells: members read" on public.fatigue_exposure_cells
  for select to authenticated using (org_id in (select private.user_org_ids()));
-- No insert, update or delete policy: members cannot write; the backend (service_role) does.
revoke all on table public.fatigue_exposure_users, public.fatigue_exposure_cells from anon, authenticated;
grant select on table public.fatigue_exposure_users, public.fatigue_exposure_cells to authenticated;
grant all on table public.fatigue_exposure_users, public.fatigue_exposure_cells to service_role;

-- ---------------------------------------------------------------------------------------------
-- Folding events in
-- ---------------------------------------------------------------------------------------------

-- Folds the impressions and clicks that arrived in [p_from, p_to) into the users' rows and the
-- cells; the number of users touched. Called by fatigue_map_step, under its lock and watermark.
create function private.fatigue_fold_exposures(p_from xid8, p_to xid8) returns bigint
language sql
set search_path = ''
as $$
  with batch as (
    select e.org_id, e.campaign_id, e.creative_id, e.user_key,
           count(*) filter (where e.type = 'impression') as impressions,
           coalesce((array_agg(e.occurred_at order by e.occurred_at) filter (where e.type = 'impression'))[1:20], '{}') as first_impressions,
           coalesce(array_agg(e.occurred_at) filter (where e.type = 'click'), '{}') as clicks
    from public.events e
    where e.ingest_xid >= p_from and e.ingest_xid < p_to
      and e.type in ('impression', 'click') and e.campaign_id is not null and nullif(e.creative_id, '') is not null
      and nullif(e.user_key, '') is not null and not coalesce((e.context ->> 'bot')::boolean, false)
    group by 1, 2, 3, 4
  ),
  merged as (
    select b.org_id, b.campaign_id, b.creative_id, b.user_key,
           u.impressions as old_impressions, u.first_impressions as old_first, u.open_clicks as old_open, u.capped_clicks as old_capped,
           coalesce(u.impressions, 0) + b.impressions as impressions, f.first_impressions,
           coalesce(u.open_clicks, '{}') || b.clicks as clicks, coalesce(u.capped_clicks, 0) as capped_clicks
    from batch b
    left join public.fatigue_exposure_users u
      on u.org_id = b.org_id and u.campaign_id = b.campaign_id and u.creative_id = b.creative_id and u.user_key = b.user_key
    cross join lateral (
      select coalesce(array_agg(t order by t), '{}') as first_impressions
      from (select t from unnest(coalesce(u.first_impressions, '{}') || b.first_impressions) t order by t limit 20) s
    ) f
  ),
  next as (
    -- clicks at or after the 20th impression leave the open list for good
    select m.*, k.open_clicks, m.capped_clicks + k.newly_capped as new_capped
    from merged m
    cross join lateral (
      select coalesce(array_agg(c order by c) filter (where m.first_impressions[20] is null or c < m.first_impressions[20]), '{}') as open_clicks,
             count(*) filter (where c >= m.first_impressions[20]) as newly_capped
      from unnest(m.clicks) c
    ) k
  ),
  saved as (
    insert into public.fatigue_exposure_users (org_id, campaign_id, creative_id, user_key, impressions, first_impressions, open_clicks, capped_clicks)
    select n.org_id, n.campaign_id, n.creative_id, n.user_key, n.impressions, n.first_impressions, n.open_clicks, n.new_capped
    from next n
    on conflict (org_id, campaign_id, creative_id, user_key) do update
       set impressions = excluded.impressions, first_impressions = excluded.first_impressions,
           open_clicks = excluded.open_clicks, capped_clicks = excluded.capped_clicks
    returning 1
  ),
  delta as (
    -- what each user's new row adds to the cells minus what their old row added
    select n.org_id, n.campaign_id, n.creative_id, d.exposure, sum(d.impressions) as impressions, sum(d.clicks) as clicks
    from next n
    cross join lateral (
      -- impressions: one in each cell 1 … 19 the user's count newly reached, and the growth of "20+"
      select k as exposure, 1::bigint as impressions, 0::bigint as clicks
      from generate_series(least(coalesce(n.old_impressions, 0), 19)::integer + 1, least(n.impressions, 19)::integer) k
      union all
      select 20, greatest(n.impressions - 19, 0) - greatest(coalesce(n.old_impressions, 0) - 19, 0), 0
      where n.impressions > 19
      -- clicks: the old open ones leave the cells of the old times, the open ones enter those of the new
      union all
      select least(20, (select count(*) from unnest(n.old_first) i where i <= c))::integer, 0, -1
      from unnest(n.old_open) c
      union all
      select least(20, (select count(*) from unnest(n.first_impressions) i where i <= c))::integer, 0, 1
      from unnest(n.open_clicks) c
      union all
      select 20, 0, n.new_capped - coalesce(n.old_capped, 0)
      where n.new_capped > coalesce(n.old_capped, 0)
    ) d
    group by 1, 2, 3, 4
  ),
  cells as (
    insert into public.fatigue_exposure_cells (org_id, campaign_id, creative_id, exposure, impressions, clicks)
    select d.org_id, d.campaign_id, d.creative_id, d.exposure, d.impressions, d.clicks
    from delta d
    where d.impressions <> 0 or d.clicks <> 0
    on conflict (org_id, campaign_id, creative_id, exposure) do update
       set impressions = public.fatigue_exposure_cells.impressions + excluded.impressions,
           clicks = public.fatigue_exposure_cells.clicks + excluded.clicks
    returning 1
  )
  -- (cells, unread, runs all the same: a data-modifying WITH always runs to completion)
  select count(*) from saved
$$;

-- The step of 20261125210000_creative_fatigue.sql, now also folding the exposures of the same
-- events under the same lock and watermark, so each event is counted once.
create or replace function private.fatigue_map_step() returns jsonb
language plpgsql
set search_path = ''
as $$
declare
  v_started timestamptz := clock_timestamp();
  v_from xid8;
  v_to xid8 := pg_snapshot_xmin(pg_current_snapshot());
  v_added bigint;
  v_users bigint;
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
  v_users := private.fatigue_fold_exposures(v_from, v_to);
  update public.rollup_state s
     set watermark = v_to, last_run_at = v_started,
         last_duration_ms = (extract(epoch from clock_timestamp() - v_started) * 1000)::integer,
         last_events = v_added, runs = s.runs + 1, updated_at = now()
   where s.name = 'creative_fatigue';
  return jsonb_build_object('skipped', false, 'new_creatives', v_added, 'exposure_users', v_users);
end
$$;

revoke all on function private.fatigue_fold_exposures(xid8, xid8) from public;
grant execute on function private.fatigue_fold_exposures(xid8, xid8) to service_role;

-- The backfill: every event still in the log that arrived before the job's watermark (those
-- after it, the next step folds). Under the job's lock, so no step runs meanwhile.
select pg_advisory_xact_lock(hashtext('precise.creative_fatigue'));
select private.fatigue_fold_exposures('0', s.watermark) from public.rollup_state s where s.name = 'creative_fatigue';

-- ---------------------------------------------------------------------------------------------
-- Reading
-- ---------------------------------------------------------------------------------------------

-- The frequency of a creative in a campaign: users reached (each counts once at exposure 1) and
-- their impressions, over the creative's lifetime; null without user keys.
create function private.fatigue_frequency(p_org_id uuid, p_campaign_id uuid, p_creative_id text) returns jsonb
language sql
stable
set search_path = ''
as $$
  select case when sum(c.impressions) filter (where c.exposure = 1) > 0 then
    jsonb_build_object('users', sum(c.impressions) filter (where c.exposure = 1), 'impressions', sum(c.impressions)) end
  from public.fatigue_exposure_cells c
  where c.org_id = p_org_id and c.campaign_id = p_campaign_id and c.creative_id = p_creative_id
$$;

-- As in 20261125210000_creative_fatigue.sql, with each creative's frequency (lifetime, as of the
-- latest job run whatever p_as_of).
create or replace function public.fatigue_campaign(p_org_id uuid, p_campaign_id uuid, p_as_of date) returns jsonb
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
                                          'since', v.since, 'evidence', v.evidence,
                                          'frequency', private.fatigue_frequency(m.org_id, m.campaign_id, m.creative_id))
                       order by m.creative_id)
      from public.fatigue_creatives m
      left join lateral (
        select v.* from public.fatigue_verdicts v
        where v.org_id = m.org_id and v.campaign_id = m.campaign_id and v.creative_id = m.creative_id and v.day <= v_as_of
        order by v.day desc limit 1
      ) v on true
      where m.org_id = p_org_id and m.campaign_id = p_campaign_id), '[]'));
end
$$;

-- One creative's daily series in a campaign, by local day of p_time_zone, and its exposure
-- curve. Replaces the UTC-only fatigue_creative_series(uuid, uuid, text).
--   rows: [[day, impressions, clicks, scored_day, baseline CTR, recent CTR, statistic, status, score], ...]
--     one per local day that overlaps the days scored and has ended: impressions and clicks are
--     the sums of the rollup's 15-minute points in the local day (exact: every zone's offset is a
--     multiple of 15 minutes); the verdict is that of scored_day, the last UTC day that ended by
--     the local day's end (the verdict known then; null before the first).
--   exposure: [[exposure, impressions, clicks], ...], exposure 0 … 20 (20: "20 or more").
-- {"refused": "campaign_id" | "creative_id" | "tz"}.
drop function public.fatigue_creative_series(uuid, uuid, text);
create function public.fatigue_creative_series(p_org_id uuid, p_campaign_id uuid, p_creative_id text, p_time_zone text) returns jsonb
language plpgsql
stable
set search_path = ''
as $$
declare
  v_first date;
  v_last date;
begin
  if not exists (select from public.campaigns c where c.id = p_campaign_id and c.org_id = p_org_id) then
    return jsonb_build_object('refused', 'campaign_id');
  end if;
  if not exists (select from public.fatigue_creatives m
                 where m.org_id = p_org_id and m.campaign_id = p_campaign_id and m.creative_id = p_creative_id) then
    return jsonb_build_object('refused', 'creative_id');
  end if;
  if not private.time_zone_known(p_time_zone) then
    return jsonb_build_object('refused', 'tz');
  end if;
  select min(v.day), max(v.day) into v_first, v_last
  from public.fatigue_verdicts v
  where v.org_id = p_org_id and v.campaign_id = p_campaign_id and v.creative_id = p_creative_id;
  return jsonb_build_object(
    'settings_error', (select f.error from public.fatigue_campaigns f where f.org_id = p_org_id and f.campaign_id = p_campaign_id),
    'rows', coalesce((
      with days as (
        -- local days from the one holding the first scored UTC day's start to the one holding
        -- the last scored UTC day's end, those that have ended
        select d.day::date as day, d.day at time zone p_time_zone as starts, (d.day + interval '1 day') at time zone p_time_zone as ends
        from generate_series((v_first::timestamp at time zone 'UTC' at time zone p_time_zone)::date::timestamp,
                             (((v_last + 1)::timestamp at time zone 'UTC' - interval '1 microsecond') at time zone p_time_zone)::date::timestamp,
                             interval '1 day') d(day)
      ),
      counts as (
        select (p.bucket_start at time zone p_time_zone)::date as day,
               coalesce(sum(p.value) filter (where s.metric = 'impressions'), 0) as impressions,
               coalesce(sum(p.value) filter (where s.metric = 'clicks'), 0) as clicks
        from public.metric_series s
        join public.metric_points p on p.org_id = s.org_id and p.series_id = s.id
        where s.org_id = p_org_id and s.entity_type = 'creative' and s.entity_id = p_creative_id
          and s.granularity = '15m' and s.metric in ('impressions', 'clicks')
          and p.bucket_start >= (select min(d.starts) from days d) and p.bucket_start < (select max(d.ends) from days d)
        group by 1
      )
      select jsonb_agg(jsonb_build_array(d.day, coalesce(c.impressions, 0), coalesce(c.clicks, 0), (d.ends at time zone 'UTC')::date - 1,
                                         case when v.evidence -> 'test' <> 'null' then v.evidence -> 'baseline' -> 'ctr' end,
                                         v.evidence -> 'recent' -> 'ctr', v.evidence -> 'test' -> 'statistic',
                                         v.status, v.score) order by d.day)
      from days d
      left join counts c on c.day = d.day
      left join public.fatigue_verdicts v
        on v.org_id = p_org_id and v.campaign_id = p_campaign_id and v.creative_id = p_creative_id
       and v.day = (d.ends at time zone 'UTC')::date - 1
      where d.ends <= now() and (d.ends at time zone 'UTC')::date - 1 <= v_last), '[]'),
    'exposure', coalesce((
      select jsonb_agg(jsonb_build_array(c.exposure, c.impressions, c.clicks) order by c.exposure)
      from public.fatigue_exposure_cells c
      where c.org_id = p_org_id and c.campaign_id = p_campaign_id and c.creative_id = p_creative_id
        and (c.impressions <> 0 or c.clicks <> 0)), '[]'));
end
$$;
comment on function public.fatigue_creative_series(uuid, uuid, text, text) is
  'GET /v1/fatigue/:creative_id: one creative''s daily series in a time zone and its exposure curve, or {"refused": field} (backend only).';

revoke all on function
  private.fatigue_frequency(uuid, uuid, text),
  public.fatigue_creative_series(uuid, uuid, text, text)
  from public, anon, authenticated;
grant execute on function
  private.fatigue_frequency(uuid, uuid, text),
  public.fatigue_creative_series(uuid, uuid, text, text)
  to service_role;
