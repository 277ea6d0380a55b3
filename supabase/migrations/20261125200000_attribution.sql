-- Attribution: the ledger of every conversion's path, kept incrementally, and the readers of
-- GET /v1/attribution.
--
-- Touches are the organization's non-bot impressions (views) and clicks; a touch belongs to a
-- user through user_key. attribution_touches keeps them compactly, indexed by user, so that a
-- conversion's path and the non-converting paths of a period (Markov) are read from here, never
-- from the raw log at query time. attribution_paths holds one row per conversion, keyed as the
-- rollup keys it (click_id, txid and type; or the event id of a conversion without a click id),
-- with its folded state (first event, latest status, latest amount) and its path: the user's
-- touches before it and after the user's previous conversion, inside the windows of the
-- organization's properties.attribution.
--
-- The build follows the rollup's arrival watermark (events.ingest_xid, its own row 'attribution'
-- in rollup_state). A step adds the window's touches and conversions, and marks the paths to
-- (re)build: new conversions, the conversions whose windows a late touch falls in, the
-- conversions a late click names, the next conversions of a user whose conversion moved. The
-- paths are then built in chunks (path_pending), and the rule models' credits are written as
-- metrics by the job in TypeScript (credit_pending): each conversion's credit is added once,
-- and a change (a status, an amount, a new path) takes away what it had added (kept in
-- `credited` until the job has written the difference), so reruns change nothing.

-- ---------------------------------------------------------------------------------------------
-- Settings: organizations.properties.attribution
-- ---------------------------------------------------------------------------------------------

-- The organization's attribution settings, defaults filled in, or {"error", "field"} naming the
-- first bad one: click_window_days (integer 1-90, default 7), view_window_days (integer 0-30,
-- default 1), click_beats_view (boolean, default false), time_decay_half_life_days (above 0, at
-- most 365, default 7). Unknown keys are refused, so that a typo is not silently ignored.
create function private.attribution_settings(p_org_properties jsonb) returns jsonb
language plpgsql
stable
set search_path = ''
as $$
declare
  v_given jsonb := p_org_properties -> 'attribution';
  v_settings jsonb := '{"click_window_days": 7, "view_window_days": 1, "click_beats_view": false, "time_decay_half_life_days": 7}'::jsonb;
  v_key text;
  v_value jsonb;
  v_number numeric;
  v_expected text;
begin
  if v_given is null or v_given = 'null'::jsonb then
    return v_settings;
  end if;
  if jsonb_typeof(v_given) <> 'object' then
    return jsonb_build_object('error', 'properties.attribution must be an object', 'field', 'properties.attribution');
  end if;
  for v_key, v_value in select e.key, e.value from jsonb_each(v_given) e order by e.key loop
    if not v_settings ? v_key then
      return jsonb_build_object(
        'error', format('properties.attribution.%s is not a setting (known: click_window_days, view_window_days, click_beats_view, time_decay_half_life_days)', left(v_key, 64)),
        'field', 'properties.attribution.' || left(v_key, 64));
    end if;
    v_number := case when jsonb_typeof(v_value) = 'number' then (v_value #>> '{}')::numeric end;
    v_expected := case v_key
      when 'click_window_days' then
        case when v_number is null or v_number % 1 <> 0 or v_number not between 1 and 90 then 'an integer from 1 to 90' end
      when 'view_window_days' then
        case when v_number is null or v_number % 1 <> 0 or v_number not between 0 and 30 then 'an integer from 0 to 30' end
      when 'click_beats_view' then
        case when jsonb_typeof(v_value) <> 'boolean' then 'true or false' end
      when 'time_decay_half_life_days' then
        case when v_number is null or v_number <= 0 or v_number > 365 then 'a number of days above 0 and at most 365' end
    end;
    if v_expected is not null then
      return jsonb_build_object(
        'error', format('properties.attribution.%s must be %s (got %s)', v_key, v_expected, left(v_value::text, 64)),
        'field', 'properties.attribution.' || v_key);
    end if;
    v_settings := v_settings || jsonb_build_object(v_key, case when v_number is null then v_value else to_jsonb(trim_scale(v_number)) end);
  end loop;
  return v_settings;
end
$$;

-- How far after a touch a conversion may take it into its path: the longer window (90 days, the
-- longest allowed, while the settings are bad: reopening too much is harmless, too little is not).
create function private.attribution_reach(p_settings jsonb, p_click boolean) returns interval
language sql
immutable
set search_path = ''
as $$
  select make_interval(days => case
    when p_settings ? 'error' then 90
    when p_click is null then greatest((p_settings ->> 'click_window_days')::integer, (p_settings ->> 'view_window_days')::integer)
    when p_click then (p_settings ->> 'click_window_days')::integer
    else (p_settings ->> 'view_window_days')::integer
  end)
$$;

-- Refuses bad settings as they are written, with the message the job would give.
create function private.check_attribution_settings() returns trigger
language plpgsql
set search_path = ''
as $$
declare
  v_checked jsonb;
begin
  if tg_op = 'UPDATE' and (new.properties -> 'attribution') is not distinct from (old.properties -> 'attribution') then
    return new;
  end if;
  v_checked := private.attribution_settings(new.properties);
  if v_checked ? 'error' then
    raise exception '%', v_checked ->> 'error' using errcode = 'check_violation';
  end if;
  return new;
end
$$;
create trigger check_attribution_settings before insert or update of properties on public.organizations
  for each row execute function private.check_attribution_settings();

-- ---------------------------------------------------------------------------------------------
-- The stores
-- ---------------------------------------------------------------------------------------------

-- Every touch a path may take: the non-bot impressions and clicks with a user key, and the
-- clicks with a click id (a conversion naming one takes it even without a user key).
create table public.attribution_touches (
  org_id uuid not null,
  -- '' for a click kept only for its click id
  user_key text not null,
  at timestamptz not null,
  event_id text not null,
  is_click boolean not null,
  click_id text,
  campaign_id uuid,
  creative_id text,
  -- sorted and distinct; null when none
  asset_ids uuid[],
  -- the touch's top-level scalar properties (at most 16, strings cut to 128 characters), for
  -- the property:<name> dimensions; null when none
  properties jsonb,
  primary key (org_id, user_key, at, event_id)
);
comment on table public.attribution_touches is 'Touches (non-bot impressions and clicks) by user, for attribution paths (backend writes, members read).';
create index attribution_touches_click_idx on public.attribution_touches (org_id, click_id) where click_id is not null;
create index attribution_touches_at_brin on public.attribution_touches using brin (at);

create table public.attribution_paths (
  org_id uuid not null,
  -- as rollup_conversions.conversion_key: ["click_id", "txid", "type"], or ["event_id"]
  conversion_key text not null,
  -- the first event (by occurred_at, received_at, event_id): the conversion's time and identity
  event_id text not null,
  converted_at timestamptz not null,
  first_received_at timestamptz not null,
  click_id text,
  -- the first event's own user key, and whether it may be linked to its click's user (not where
  -- consent is limited or the event anonymous)
  own_user_key text,
  links_user boolean not null,
  -- the conversion's user: its own user key, else its click's (set as its path is built)
  user_key text,
  campaign_id uuid,
  -- the latest status (none meaning approved) and the latest amount, as the rollup folds them
  status text not null,
  status_event_id text not null,
  status_received_at timestamptz not null,
  amount numeric,
  currency text,
  amount_event_id text,
  amount_received_at timestamptz,
  -- the path, oldest touch first: [{"id", "at" (epoch ms), "k" ("c" click, "v" view), "cmp",
  -- "crv", "ast", "p"}]; null until built; at most its 50 latest touches (touches_dropped more)
  touches jsonb,
  touches_dropped integer not null default 0,
  -- the path is to be (re)built
  path_pending boolean not null default true,
  -- the metrics do not hold this state's credit yet; they hold `credited` (null: nothing)
  credit_pending boolean not null default true,
  credited jsonb,
  -- the time-decay half-life the credit in the metrics was computed with
  credit_half_life numeric,
  -- counts the changes of what the credit is computed from: the job writes a credit only for
  -- the version it read
  version bigint not null default 0,
  updated_at timestamptz not null default now(),
  primary key (org_id, conversion_key)
);
comment on table public.attribution_paths is 'One row per conversion: its state and its attribution path (backend writes, members read).';
create index attribution_paths_time_idx on public.attribution_paths (org_id, converted_at);
create index attribution_paths_user_idx on public.attribution_paths (org_id, user_key, converted_at) where user_key is not null;
create index attribution_paths_click_idx on public.attribution_paths (org_id, click_id) where click_id is not null;
create index attribution_paths_event_idx on public.attribution_paths (org_id, event_id);
create index attribution_paths_path_pending_idx on public.attribution_paths (org_id, conversion_key) where path_pending;
-- in time order: the conversions of a chunk of credits share buckets
create index attribution_paths_credit_pending_idx on public.attribution_paths (org_id, converted_at, conversion_key) where credit_pending;

alter table public.attribution_touches enable row level security;
create policy "attribution_touches: members read" on public.attribution_touches
  for select to authenticated using (org_id in (select private.user_org_ids()));
alter table public.attribution_paths enable row level security;
create policy "attribution_paths: members read" on public.attribution_paths
  for select to authenticated using (org_id in (select private.user_org_ids()));
revoke all on table public.attribution_touches, public.attribution_paths from anon, authenticated;
grant select on table public.attribution_touches, public.attribution_paths to authenticated;
grant all on table public.attribution_touches, public.attribution_paths to service_role;

insert into public.rollup_state (name) values ('attribution');

-- ---------------------------------------------------------------------------------------------
-- Small typed helpers
-- ---------------------------------------------------------------------------------------------

-- The properties a touch keeps: top-level strings, numbers and booleans, the first 16 by name,
-- strings cut to 128 characters; null when none.
create function private.attribution_touch_properties(p_properties jsonb) returns jsonb
language sql
immutable
set search_path = ''
as $$
  select jsonb_object_agg(x.key, x.value)
  from (select e.key,
               case when jsonb_typeof(e.value) = 'string' then to_jsonb(left(e.value #>> '{}', 128)) else e.value end as value
        from jsonb_each(p_properties) e
        where jsonb_typeof(e.value) in ('string', 'number', 'boolean')
        order by e.key
        limit 16) x
$$;

-- A touch as a path stores it: {"id", "at" (epoch ms), "k" ("c" click, "v" view), "cmp", "crv",
-- "ast" (its data assets, sorted and comma-joined), "p" (its kept properties)}, absent keys for none.
create function private.attribution_touch_json(
  p_event_id text, p_at timestamptz, p_is_click boolean, p_campaign_id uuid, p_creative_id text, p_asset_ids uuid[], p_properties jsonb
) returns jsonb
language sql
stable
set search_path = ''
as $$
  select jsonb_strip_nulls(jsonb_build_object(
    'id', p_event_id, 'at', floor(extract(epoch from p_at) * 1000)::bigint, 'k', case when p_is_click then 'c' else 'v' end,
    'cmp', p_campaign_id, 'crv', p_creative_id, 'ast', array_to_string(p_asset_ids, ','), 'p', p_properties))
$$;

-- A touch's channel at a dimension: campaign, creative, data_asset (its set of assets, sorted and
-- comma-joined: the credit of a set is split equally among its assets when reported) or property
-- (p_property's value); '(none)' where the touch has no value there. A touch's assets are stored
-- sorted and distinct, so that this is one expression. No search_path setting: the planner
-- inlines it into the scans that call it (a SET clause would prevent that).
create function private.attribution_channel(
  p_dimension text, p_property text, p_campaign_id uuid, p_creative_id text, p_asset_ids uuid[], p_properties jsonb
) returns text
language sql
stable
as $$
  select coalesce(nullif(case p_dimension
    when 'campaign' then p_campaign_id::text
    when 'creative' then p_creative_id
    when 'data_asset' then array_to_string(p_asset_ids, ',')
    when 'property' then p_properties ->> p_property
  end, ''), '(none)')
$$;

-- The same for a touch of a stored path (private.attribution_touch_json).
create function private.attribution_path_channel(p_touch jsonb, p_dimension text, p_property text) returns text
language sql
immutable
as $$
  select coalesce(nullif(case p_dimension
    when 'campaign' then p_touch ->> 'cmp'
    when 'creative' then p_touch ->> 'crv'
    when 'data_asset' then p_touch ->> 'ast'
    when 'property' then p_touch -> 'p' ->> p_property
  end, ''), '(none)')
$$;

-- What the metrics hold for a conversion in this state (the job computes the credit from it).
create function private.attribution_credited(
  p_converted_at timestamptz, p_status text, p_amount numeric, p_currency text, p_touches jsonb, p_half_life numeric
) returns jsonb
language sql
immutable
set search_path = ''
as $$
  select jsonb_build_object('at', p_converted_at, 'status', p_status, 'amount', p_amount, 'currency', p_currency,
                            'touches', p_touches, 'half_life', p_half_life)
$$;

-- The first 15-minute boundary at or after a time: a conversion is in a range when its
-- 15-minute bucket starts inside it, as its credit in the metrics is.
create function private.attribution_bucket_ceiling(p_at timestamptz) returns timestamptz
language sql
immutable
set search_path = ''
as $$
  select case when p_at in ('-infinity', 'infinity') then p_at
    else date_bin('15 minutes', p_at + interval '15 minutes' - interval '1 microsecond', timestamptz '2000-01-01 00:00:00+00') end
$$;

-- ---------------------------------------------------------------------------------------------
-- The build
-- ---------------------------------------------------------------------------------------------

-- The touches of the selected events into attribution_touches (a rerun adds nothing), and the
-- conversions whose paths they change marked to be rebuilt: those of the touch's user whose
-- windows reach back to it, and those naming a click that arrived after them.
create function private.attribution_add_touches(
  p_xid_from xid8, p_xid_to xid8, p_from timestamptz, p_to timestamptz, out added bigint, out reopened bigint
)
language plpgsql
set search_path = ''
as $$
begin
  with added_touches as (
    insert into public.attribution_touches as t
      (org_id, user_key, at, event_id, is_click, click_id, campaign_id, creative_id, asset_ids, properties)
    select e.org_id, coalesce(e.user_key, ''), e.occurred_at, e.event_id, e.type = 'click',
           case when e.type = 'click' then e.click_id end, e.campaign_id, nullif(e.creative_id, ''),
           nullif(array(select distinct a from unnest(e.asset_ids) as a order by a), '{}'),
           private.attribution_touch_properties(e.properties)
    from public.events e
    where e.ingest_xid >= p_xid_from and e.ingest_xid < p_xid_to
      and e.occurred_at >= p_from and e.occurred_at < p_to
      and e.type in ('impression', 'click')
      and not coalesce((e.context ->> 'bot')::boolean, false)
      and (e.user_key is not null or (e.type = 'click' and e.click_id is not null))
    on conflict do nothing
    returning t.org_id, t.user_key, t.at, t.is_click, t.click_id
  ),
  -- per user and kind, the span of the new touches: a conversion after the first and within
  -- the kind's window of the last may take one of them
  spans as (
    select a.org_id, a.user_key, a.is_click, min(a.at) as first_at, max(a.at) as last_at
    from added_touches a
    where a.user_key <> ''
    group by a.org_id, a.user_key, a.is_click
  ),
  settings as (
    select o.id as org_id, private.attribution_settings(o.properties) as s
    from public.organizations o
    where o.id in (select distinct a.org_id from added_touches a)
  ),
  targets as (
    select p.org_id, p.conversion_key
    from spans r
    join settings s on s.org_id = r.org_id
    join public.attribution_paths p
      on p.org_id = r.org_id and p.user_key = r.user_key
     and p.converted_at > r.first_at and p.converted_at <= r.last_at + private.attribution_reach(s.s, r.is_click)
    union
    select p.org_id, p.conversion_key
    from added_touches a
    join public.attribution_paths p on p.org_id = a.org_id and p.click_id = a.click_id
    where a.click_id is not null
  ),
  marked as (
    update public.attribution_paths p
       set path_pending = true
      from targets t
     where p.org_id = t.org_id and p.conversion_key = t.conversion_key and not p.path_pending
    returning 1
  )
  select (select count(*) from added_touches), (select count(*) from marked) into added, reopened;
end
$$;

-- Marks for rebuilding the conversions of each (org, user) that follow a time within the reach of
-- its organization's windows: a conversion there bounds their paths.
create function private.attribution_reopen_after(p_orgs uuid[], p_users text[], p_times timestamptz[]) returns bigint
language plpgsql
set search_path = ''
as $$
declare
  v_marked bigint;
begin
  update public.attribution_paths p
     set path_pending = true
    from (select u.org_id, u.user_key, u.at, u.at + private.attribution_reach(private.attribution_settings(o.properties), null) as reach
          from unnest(p_orgs, p_users, p_times) as u(org_id, user_key, at)
          join public.organizations o on o.id = u.org_id
          where u.user_key is not null) r
   where p.org_id = r.org_id and p.user_key = r.user_key and p.converted_at > r.at and p.converted_at <= r.reach
     and not p.path_pending;
  get diagnostics v_marked = row_count;
  return v_marked;
end
$$;

-- One conversion event, keyed as the rollup keys it (private.conversion_events), with what a
-- path needs besides: the user key and whether the event may be linked to its click's user.
create type private.attribution_conversion_event as (
  org_id uuid,
  conversion_key text,
  click_id text,
  event_id text,
  occurred_at timestamptz,
  received_at timestamptz,
  status text,
  value numeric,
  currency text,
  campaign_id uuid,
  user_key text,
  links_user boolean
);

create function private.attribution_conversion_events(p_xid_from xid8, p_xid_to xid8)
returns setof private.attribution_conversion_event
language sql
stable
as $$
  select e.org_id,
         -- the rollup's conversion key (private.conversion_events): keep the two the same
         case when e.click_id is null then jsonb_build_array(e.event_id)::text
              else jsonb_build_array(e.click_id, coalesce(e.properties ->> 'txid', ''), e.type)::text end,
         e.click_id, e.event_id, e.occurred_at, e.received_at, e.status, e.value, e.currency, e.campaign_id, e.user_key,
         not (coalesce((e.context -> 'consent' ->> 'limited')::boolean, false) or e.context ? 'anonymous')
  from public.events e
  where e.ingest_xid >= p_xid_from and e.ingest_xid < p_xid_to
    and private.counts_as_conversion(e.type, e.context)
$$;

-- Folds the selected conversion events into attribution_paths, as the rollup folds them into
-- rollup_conversions: the first event by (occurred_at, received_at, event_id), the latest status
-- by (received_at, event_id), the latest amount likewise. A new first event marks the path to be
-- rebuilt (and the user's next conversions: this one now bounds them); a change of time, status
-- or amount marks the credit, keeping what the metrics hold in `credited`.
create function private.attribution_fold_conversions(p_xid_from xid8, p_xid_to xid8) returns bigint
language plpgsql
set search_path = ''
as $$
declare
  v_count bigint;
  v_orgs uuid[];
  v_users text[];
  v_times timestamptz[];
begin
  with named as (
    select * from private.attribution_conversion_events(p_xid_from, p_xid_to)
  ),
  stored as (
    select s.*
    from public.attribution_paths s
    where (s.org_id, s.conversion_key) in (select n.org_id, n.conversion_key from named n)
  ),
  parts as (
    select n.org_id, n.conversion_key, 'event' as role, n.event_id, n.occurred_at, n.received_at, n.status,
           n.value, n.currency, n.click_id, n.campaign_id, n.user_key, n.links_user
    from named n
    union all
    select s.org_id, s.conversion_key, 'first', s.event_id, s.converted_at, s.first_received_at, null,
           null, null, s.click_id, s.campaign_id, s.own_user_key, s.links_user
    from stored s
    union all
    select s.org_id, s.conversion_key, 'status', s.status_event_id, null, s.status_received_at, s.status,
           null, null, null, null, null, null
    from stored s
    union all
    select s.org_id, s.conversion_key, 'amount', s.amount_event_id, null, s.amount_received_at, null,
           s.amount, s.currency, null, null, null, null
    from stored s
    where s.amount is not null
  ),
  firsts as (
    select distinct on (p.org_id, p.conversion_key) p.*
    from parts p
    where p.role in ('event', 'first')
    order by p.org_id, p.conversion_key, p.occurred_at, p.received_at, p.event_id
  ),
  latest as (
    select distinct on (p.org_id, p.conversion_key) p.org_id, p.conversion_key,
           coalesce(p.status, 'approved') as status, p.event_id, p.received_at
    from parts p
    where p.role in ('event', 'status')
    order by p.org_id, p.conversion_key, p.received_at desc, p.event_id desc
  ),
  amounts as (
    select distinct on (p.org_id, p.conversion_key) p.org_id, p.conversion_key, p.value, p.currency, p.event_id, p.received_at
    from parts p
    where p.role in ('event', 'amount') and p.value is not null
    order by p.org_id, p.conversion_key, p.received_at desc, p.event_id desc
  ),
  upserted as (
    insert into public.attribution_paths as p
      (org_id, conversion_key, event_id, converted_at, first_received_at, click_id, own_user_key, links_user, campaign_id,
       status, status_event_id, status_received_at, amount, currency, amount_event_id, amount_received_at)
    select f.org_id, f.conversion_key, f.event_id, f.occurred_at, f.received_at, f.click_id, f.user_key, f.links_user, f.campaign_id,
           l.status, l.event_id, l.received_at, a.value, a.currency, a.event_id, a.received_at
    from firsts f
    join latest l on l.org_id = f.org_id and l.conversion_key = f.conversion_key
    left join amounts a on a.org_id = f.org_id and a.conversion_key = f.conversion_key
    on conflict (org_id, conversion_key) do update
       set event_id = excluded.event_id, converted_at = excluded.converted_at, first_received_at = excluded.first_received_at,
           click_id = excluded.click_id, own_user_key = excluded.own_user_key, links_user = excluded.links_user,
           campaign_id = excluded.campaign_id, status = excluded.status, status_event_id = excluded.status_event_id,
           status_received_at = excluded.status_received_at, amount = excluded.amount, currency = excluded.currency,
           amount_event_id = excluded.amount_event_id, amount_received_at = excluded.amount_received_at,
           path_pending = p.path_pending or p.event_id is distinct from excluded.event_id,
           -- SET reads the row as it was: what the metrics hold, unless they hold an older state already
           credited = case when p.credit_pending
                             or (p.converted_at, p.status, p.amount, p.currency)
                                is not distinct from (excluded.converted_at, excluded.status, excluded.amount, excluded.currency)
                           then p.credited
                           else private.attribution_credited(p.converted_at, p.status, p.amount, p.currency, p.touches, p.credit_half_life) end,
           credit_pending = p.credit_pending
                            or (p.converted_at, p.status, p.amount, p.currency)
                               is distinct from (excluded.converted_at, excluded.status, excluded.amount, excluded.currency),
           version = p.version + 1,
           updated_at = now()
    returning p.org_id, p.user_key, p.converted_at, p.path_pending
  )
  select count(*),
         array_agg(u.org_id) filter (where u.path_pending and u.user_key is not null),
         array_agg(u.user_key) filter (where u.path_pending and u.user_key is not null),
         array_agg(u.converted_at) filter (where u.path_pending and u.user_key is not null)
    into v_count, v_orgs, v_users, v_times
    from upserted u;
  if v_orgs is not null then
    perform private.attribution_reopen_after(v_orgs, v_users, v_times);
  end if;
  return v_count;
end
$$;

-- Builds the paths of up to p_limit conversions marked path_pending (of organizations whose
-- settings are valid; the others wait for their settings to be fixed). A path: the user's
-- touches before the conversion and at or after the user's previous conversion, clicks within
-- click_window_days and views within view_window_days, with the click the conversion's click_id
-- names even without a user key; with click_beats_view a path holding a click keeps only its
-- clicks; its 50 latest touches at most. A changed path marks the credit. A conversion whose user
-- changes (a late click gave it one) marks the next conversions of both users.
create function private.attribution_build(p_limit integer, out built integer, out changed integer)
language plpgsql
set search_path = ''
set jit = off
as $$
declare
  v_orgs uuid[];
  v_users text[];
  v_times timestamptz[];
begin
  with orgs as (
    select o.id, private.attribution_settings(o.properties) as s
    from public.organizations o
    where exists (select from public.attribution_paths p where p.org_id = o.id and p.path_pending)
  ),
  chosen as materialized (
    select p.org_id, p.conversion_key, p.converted_at, p.click_id, p.own_user_key, p.links_user,
           p.user_key as old_user_key, p.touches as old_touches,
           (o.s ->> 'click_window_days')::integer as click_days, (o.s ->> 'view_window_days')::integer as view_days,
           (o.s ->> 'click_beats_view')::boolean as click_beats_view
    from public.attribution_paths p
    join orgs o on o.id = p.org_id and not o.s ? 'error'
    where p.path_pending
    order by p.org_id, p.conversion_key
    limit p_limit
    for update of p skip locked
  ),
  -- the click a conversion's click_id names (the first with that id, as ingestion takes it), and
  -- the conversion's user: its own, else its click's
  users as (
    select c.*, n.click_at, n.click_event_id, n.click_campaign_id, n.click_creative_id, n.click_asset_ids, n.click_properties,
           coalesce(c.own_user_key, case when c.links_user then nullif(n.click_user_key, '') end) as user_key
    from chosen c
    left join lateral (
      select t.user_key as click_user_key, t.at as click_at, t.event_id as click_event_id, t.campaign_id as click_campaign_id,
             t.creative_id as click_creative_id, t.asset_ids as click_asset_ids, t.properties as click_properties
      from public.attribution_touches t
      where c.click_id is not null and t.org_id = c.org_id and t.click_id = c.click_id and t.is_click
      order by t.at, t.event_id
      limit 1
    ) n on true
  ),
  -- the earliest a touch may be: the longer window, and the user's previous conversion
  bounded as (
    select u.*,
           greatest(u.converted_at - make_interval(days => greatest(u.click_days, u.view_days)),
                    (select max(q.converted_at) from public.attribution_paths q
                     where q.org_id = u.org_id and q.user_key = u.user_key
                       and (q.converted_at, q.conversion_key) < (u.converted_at, u.conversion_key))) as since
    from users u
  ),
  -- each path on its own (laterals, so that the work follows the conversions, whatever the
  -- planner guesses of the chunk's size)
  paths as (
    select b.org_id, b.conversion_key, b.user_key, b.old_user_key, b.old_touches, b.converted_at,
           coalesce(x.touches, '[]') as touches, coalesce(x.dropped, 0) as dropped
    from bounded b
    cross join lateral (
      select jsonb_agg(private.attribution_touch_json(k.event_id, k.at, k.is_click, k.campaign_id, k.creative_id,
                                                      k.asset_ids, k.properties) order by k.at, k.event_id)
               filter (where k.recency <= 50) as touches,
             (count(*) filter (where k.recency > 50))::integer as dropped
      from (
        select c.*, row_number() over (order by c.at desc, c.event_id desc) as recency
        from (
          select c.*, bool_or(c.is_click) over () as has_click
          from (
            select t.event_id, t.at, t.is_click, t.campaign_id, t.creative_id, t.asset_ids, t.properties
            from public.attribution_touches t
            where b.user_key is not null and t.org_id = b.org_id and t.user_key = b.user_key
              and t.at >= b.since and t.at < b.converted_at
              and case when t.is_click then t.at >= b.converted_at - make_interval(days => b.click_days)
                       else b.view_days > 0 and t.at >= b.converted_at - make_interval(days => b.view_days) end
            union
            select b.click_event_id, b.click_at, true, b.click_campaign_id, b.click_creative_id, b.click_asset_ids, b.click_properties
            where b.click_event_id is not null and b.click_at < b.converted_at
              and b.click_at >= b.converted_at - make_interval(days => b.click_days)
          ) c
        ) c
        -- with click_beats_view, a path holding a click keeps only its clicks
        where not (b.click_beats_view and c.has_click and not c.is_click)
      ) k
    ) x
  ),
  updated as (
    update public.attribution_paths p
       set touches = n.touches, user_key = n.user_key, touches_dropped = n.dropped, path_pending = false,
           credited = case when p.credit_pending or p.touches is not distinct from n.touches then p.credited
                           else private.attribution_credited(p.converted_at, p.status, p.amount, p.currency, p.touches, p.credit_half_life) end,
           credit_pending = p.credit_pending or p.touches is distinct from n.touches,
           version = p.version + 1,
           updated_at = now()
      from paths n
     where p.org_id = n.org_id and p.conversion_key = n.conversion_key
    returning p.org_id, n.user_key, n.old_user_key, n.converted_at, n.touches is distinct from n.old_touches as path_changed
  ),
  moved as (
    select u.org_id, x.user_key, u.converted_at
    from updated u
    cross join lateral (values (u.user_key), (u.old_user_key)) as x(user_key)
    where u.user_key is distinct from u.old_user_key and x.user_key is not null
  )
  select (select count(*) from updated), (select count(*) from updated where path_changed),
         (select array_agg(m.org_id) from moved m), (select array_agg(m.user_key) from moved m),
         (select array_agg(m.converted_at) from moved m)
    into built, changed, v_orgs, v_users, v_times;
  if v_orgs is not null then
    perform private.attribution_reopen_after(v_orgs, v_users, v_times);
  end if;
end
$$;

-- The organizations whose settings are bad and that have paths waiting for them.
create function private.attribution_waiting() returns jsonb
language sql
stable
set search_path = ''
as $$
  select coalesce(jsonb_agg(jsonb_build_object('org_id', w.org_id, 'error', w.s ->> 'error', 'field', w.s ->> 'field',
                                               'waiting', w.waiting) order by w.org_id), '[]')
  from (select o.id as org_id, private.attribution_settings(o.properties) as s,
               (select count(*) from public.attribution_paths p where p.org_id = o.id and (p.path_pending or p.credit_pending)) as waiting
        from public.organizations o
        where exists (select from public.attribution_paths p where p.org_id = o.id and (p.path_pending or p.credit_pending))) w
  where w.s ? 'error'
$$;

-- One incremental step: the touches and conversions of the transactions between the watermark
-- and the oldest one still running, folded in and the paths they change marked, atomically with
-- the watermark. Never two at once (a second caller returns skipped). The paths are then built
-- (private.attribution_build) and credited by the job, in chunks.
create function private.attribution_step() returns jsonb
language plpgsql
set search_path = ''
set jit = off
as $$
declare
  v_started timestamptz := clock_timestamp();
  v_from xid8;
  v_to xid8 := pg_snapshot_xmin(pg_current_snapshot());
  v_touches record;
  v_conversions bigint;
begin
  if not pg_try_advisory_xact_lock(hashtext('precise.attribution')) then
    return jsonb_build_object('skipped', true, 'reason', 'another attribution run is under way');
  end if;
  select s.watermark into v_from from public.rollup_state s where s.name = 'attribution' for update;
  v_to := greatest(v_to, v_from);
  select * into v_touches from private.attribution_add_touches(v_from, v_to, '-infinity', 'infinity');
  v_conversions := private.attribution_fold_conversions(v_from, v_to);
  update public.rollup_state s
     set watermark = v_to, last_run_at = v_started,
         last_duration_ms = (extract(epoch from clock_timestamp() - v_started) * 1000)::integer,
         last_events = v_touches.added + v_conversions, runs = s.runs + 1, updated_at = now()
   where s.name = 'attribution';
  return jsonb_build_object('skipped', false, 'touches', v_touches.added, 'conversions', v_conversions,
                            'reopened', v_touches.reopened, 'watermark', v_to::text);
end
$$;

-- A range rebuild (a repair, or new settings applied to past conversions): the touches of the
-- range's events below the watermark added where missing, the range's attribution points removed,
-- and its conversions' paths and credits marked to be built again (the job then builds and
-- credits them). Whole 15-minute buckets, as the rollup's range recompute.
create function private.attribution_rebuild_between(p_from timestamptz, p_to timestamptz) returns jsonb
language plpgsql
set search_path = ''
set jit = off
as $$
declare
  v_below xid8;
  v_log_starts timestamptz;
  v_from timestamptz := date_bin('15 minutes', p_from, timestamptz '2000-01-01 00:00:00+00');
  v_to timestamptz := private.attribution_bucket_ceiling(p_to);
  v_touches record;
  v_points bigint;
  v_marked bigint;
begin
  perform pg_advisory_xact_lock(hashtext('precise.attribution'));
  select s.watermark into v_below from public.rollup_state s where s.name = 'attribution';
  select (s.properties ->> 'log_starts_at')::timestamptz into v_log_starts from public.rollup_state s where s.name = 'metrics_15m';
  if v_log_starts is not null and v_from < v_log_starts then
    raise exception 'the raw events before % are dropped (retention): a range from % cannot be rebuilt from the log', v_log_starts, p_from
      using errcode = 'invalid_parameter_value';
  end if;
  select * into v_touches from private.attribution_add_touches('0', v_below, v_from, v_to);

  delete from public.metric_points p
  using public.metric_series s
  where s.metric in ('attributed_conversions', 'attributed_value') and s.granularity = '15m'
    and p.org_id = s.org_id and p.series_id = s.id and p.bucket_start >= v_from and p.bucket_start < v_to;
  get diagnostics v_points = row_count;
  -- what the metrics held for these buckets is gone: nothing is credited for it any more
  update public.attribution_paths p
     set credited = null, version = p.version + 1
   where p.credit_pending and p.credited is not null
     and date_bin('15 minutes', (p.credited ->> 'at')::timestamptz, timestamptz '2000-01-01 00:00:00+00') >= v_from
     and date_bin('15 minutes', (p.credited ->> 'at')::timestamptz, timestamptz '2000-01-01 00:00:00+00') < v_to;
  update public.attribution_paths p
     set credited = null, credit_pending = true, version = p.version + 1
   where not p.credit_pending and p.converted_at >= v_from and p.converted_at < v_to;
  update public.attribution_paths p
     set path_pending = true
   where p.converted_at >= v_from and p.converted_at < v_to and not p.path_pending;
  get diagnostics v_marked = row_count;
  return jsonb_build_object('touches', v_touches.added, 'points_removed', v_points, 'paths', v_marked, 'from', v_from, 'to', v_to);
end
$$;

-- ---------------------------------------------------------------------------------------------
-- Credits: the job reads the conversions whose credit is pending, computes the rule models'
-- credits (scheduled/attribution/models.ts) and writes them back here.
-- ---------------------------------------------------------------------------------------------

-- Up to p_limit conversions whose credit is pending and path built (organizations with valid
-- settings): the state to credit now and what the metrics hold (`credited`, null for nothing),
-- each as {at (text, exact), ms (epoch ms), status, amount, currency, touches, half_life}, and the
-- version they were read at. Nothing is locked: the write takes only the versions still current.
create function private.attribution_credit_work(p_limit integer)
returns table (org_id uuid, conversion_key text, version bigint, half_life numeric, current_state jsonb, credited_state jsonb)
language sql
stable
set search_path = ''
as $$
  with orgs as (
    select o.id, private.attribution_settings(o.properties) as s
    from public.organizations o
    where exists (select from public.attribution_paths p where p.org_id = o.id and p.credit_pending)
  )
  select p.org_id, p.conversion_key, p.version, (o.s ->> 'time_decay_half_life_days')::numeric,
         private.attribution_credited(p.converted_at, p.status, p.amount, p.currency, p.touches, null)
           || jsonb_build_object('ms', floor(extract(epoch from p.converted_at) * 1000)::bigint),
         case when p.credited is not null then p.credited
           || jsonb_build_object('ms', floor(extract(epoch from (p.credited ->> 'at')::timestamptz) * 1000)::bigint) end
  from orgs o
  -- in time order, so that a chunk's conversions share buckets (attribution_apply_credits sums
  -- them); per organization by its index, so that a chunk reads no more than it takes
  cross join lateral (
    select p.*
    from public.attribution_paths p
    where p.org_id = o.id and p.credit_pending and not p.path_pending
    order by p.converted_at, p.conversion_key
    limit p_limit
  ) p
  where not o.s ? 'error'
  order by p.org_id, p.converted_at, p.conversion_key
  limit p_limit
$$;

-- Writes the credits the job computed, for the conversions still at the version it read (a
-- conversion changed since, or credited by another run, is left for the next chunk), and marks
-- them credited, in one call (one transaction), so a credit is written exactly once.
--   the conversions read, one element each: p_orgs, p_keys, p_versions, p_half_lives;
--   their credits, one element per (state, dimension, channel, model): p_conversions (the
--   conversion's position in the first arrays, from 1), p_at (the time of the state credited),
--   p_currencies (null for none), p_amounts (null for none), p_entity_types (the dimension),
--   p_entity_ids (the channel), p_models, p_credits (negative: taking away what was added before).
-- Many conversions share a bucket and a channel: the credits are summed per series and 15-minute
-- bucket (exactly, in numeric) and each sum is added to its point by one INSERT ... ON CONFLICT,
-- as attributed_conversions (the credit) and attributed_value (the credit times the amount), in
-- series of entity_type the dimension, entity_id the channel, dimensions {"model", "currency"}.
-- New series are named in the same statement, as the rollup names them. Points that net to zero
-- are removed. Returns the conversions credited and the points written.
create function private.attribution_apply_credits(
  p_orgs uuid[], p_keys text[], p_versions bigint[], p_half_lives numeric[],
  p_conversions integer[], p_at timestamptz[], p_currencies text[], p_amounts numeric[],
  p_entity_types text[], p_entity_ids text[], p_models text[], p_credits numeric[],
  out credited bigint, out points bigint
)
language plpgsql
set search_path = ''
set jit = off
-- planned for each chunk's arrays (their lengths known): a generic plan guesses 100 rows per
-- array and, from the sixth chunk on, was ten times slower
set plan_cache_mode = force_custom_plan
as $$
declare
  v_zero_orgs uuid[];
  v_zero_series bigint[];
  v_zero_buckets timestamptz[];
begin
  -- One credit writer at a time: no other run names one of the series named below meanwhile (its
  -- unique violation would fail this chunk, to be retried by the next run, rather than lose points).
  perform pg_advisory_xact_lock(hashtext('precise.attribution.credits'));
  with fresh as (
    update public.attribution_paths p
       set credit_pending = false, credited = null, credit_half_life = d.half_life,
           version = p.version + 1, updated_at = now()
      from unnest(p_orgs, p_keys, p_versions, p_half_lives) with ordinality as d(org_id, conversion_key, version, half_life, i)
     -- the version read implies credit_pending (every change counts one); no condition on it,
     -- so that the rows are found by the primary key, not by a scan of the pending index as
     -- stale statistics once made the planner choose (quadratic in a large build)
     where p.org_id = d.org_id and p.conversion_key = d.conversion_key and p.version = d.version
    returning d.i, p.org_id
  ),
  sums as materialized (
    select f.org_id, c.entity_type, c.entity_id, c.model, nullif(c.currency, '') as currency,
           date_bin('15 minutes', c.at, timestamptz '2000-01-01 00:00:00+00') as bucket,
           sum(c.credit) as conversions, sum(c.credit * c.amount) as value
    from unnest(p_conversions, p_at, p_currencies, p_amounts, p_entity_types, p_entity_ids, p_models, p_credits)
           as c(i, at, currency, amount, entity_type, entity_id, model, credit)
    join fresh f on f.i = c.i
    group by 1, 2, 3, 4, 5, 6
  ),
  deltas as materialized (
    select s.org_id, m.metric, s.entity_type, s.entity_id,
           jsonb_strip_nulls(jsonb_build_object('model', s.model, 'currency', s.currency)) as dimensions,
           s.bucket, m.value
    from sums s
    cross join lateral (values ('attributed_conversions', s.conversions), ('attributed_value', s.value)) as m(metric, value)
    -- no amount, no value point; a sum of nothing is no point
    where m.value <> 0
  ),
  keys as (
    select distinct d.org_id, d.metric, d.entity_type, d.entity_id, d.dimensions from deltas d
  ),
  known as (
    select k.*, s.id as series_id
    from keys k
    join public.metric_series s
      on s.org_id = k.org_id and s.entity_type = k.entity_type and s.entity_id = k.entity_id
     and s.metric = k.metric and s.granularity = '15m' and s.dimensions = k.dimensions
  ),
  named as (
    insert into public.metric_series (org_id, metric, entity_type, entity_id, granularity, dimensions)
    select k.org_id, k.metric, k.entity_type, k.entity_id, '15m', k.dimensions
    from keys k
    where not exists (select from known n
                      where n.org_id = k.org_id and n.metric = k.metric and n.entity_type = k.entity_type
                        and n.entity_id = k.entity_id and n.dimensions = k.dimensions)
    returning id as series_id, org_id, metric, entity_type, entity_id, dimensions
  ),
  series as (
    select n.org_id, n.metric, n.entity_type, n.entity_id, n.dimensions, n.series_id from known n
    union all
    select n.org_id, n.metric, n.entity_type, n.entity_id, n.dimensions, n.series_id from named n
  ),
  added as (
    insert into public.metric_points as p (org_id, series_id, bucket_start, value)
    select d.org_id, k.series_id, d.bucket, trim_scale(d.value)
    from deltas d
    join series k
      on k.org_id = d.org_id and k.metric = d.metric and k.entity_type = d.entity_type and k.entity_id = d.entity_id
     and k.dimensions = d.dimensions
    on conflict (org_id, series_id, bucket_start) do update set value = trim_scale(p.value + excluded.value)
    returning p.org_id, p.series_id, p.bucket_start, p.value
  )
  select (select count(*) from fresh), count(*), array_agg(a.org_id) filter (where a.value = 0),
         array_agg(a.series_id) filter (where a.value = 0), array_agg(a.bucket_start) filter (where a.value = 0)
    into credited, points, v_zero_orgs, v_zero_series, v_zero_buckets
    from added a;
  -- a point that nets to zero (a conversion rejected, a path moved) is no point
  if v_zero_orgs is not null then
    delete from public.metric_points p
    using unnest(v_zero_orgs, v_zero_series, v_zero_buckets) as z(org_id, series_id, bucket_start)
    where p.org_id = z.org_id and p.series_id = z.series_id and p.bucket_start = z.bucket_start and p.value = 0;
  end if;
end
$$;

revoke all on function
  private.attribution_settings(jsonb),
  private.attribution_reach(jsonb, boolean),
  private.check_attribution_settings(),
  private.attribution_touch_properties(jsonb),
  private.attribution_touch_json(text, timestamptz, boolean, uuid, text, uuid[], jsonb),
  private.attribution_channel(text, text, uuid, text, uuid[], jsonb),
  private.attribution_path_channel(jsonb, text, text),
  private.attribution_credited(timestamptz, text, numeric, text, jsonb, numeric),
  private.attribution_bucket_ceiling(timestamptz),
  private.attribution_add_touches(xid8, xid8, timestamptz, timestamptz),
  private.attribution_reopen_after(uuid[], text[], timestamptz[]),
  private.attribution_conversion_events(xid8, xid8),
  private.attribution_fold_conversions(xid8, xid8),
  private.attribution_build(integer),
  private.attribution_waiting(),
  private.attribution_step(),
  private.attribution_rebuild_between(timestamptz, timestamptz),
  private.attribution_credit_work(integer),
  private.attribution_apply_credits(uuid[], text[], bigint[], numeric[], integer[], timestamptz[], text[], numeric[], text[], text[], text[], numeric[])
  from public;
grant execute on function
  private.attribution_settings(jsonb),
  private.attribution_reach(jsonb, boolean),
  private.attribution_touch_properties(jsonb),
  private.attribution_touch_json(text, timestamptz, boolean, uuid, text, uuid[], jsonb),
  private.attribution_channel(text, text, uuid, text, uuid[], jsonb),
  private.attribution_path_channel(jsonb, text, text),
  private.attribution_credited(timestamptz, text, numeric, text, jsonb, numeric),
  private.attribution_bucket_ceiling(timestamptz),
  private.attribution_add_touches(xid8, xid8, timestamptz, timestamptz),
  private.attribution_reopen_after(uuid[], text[], timestamptz[]),
  private.attribution_conversion_events(xid8, xid8),
  private.attribution_fold_conversions(xid8, xid8),
  private.attribution_build(integer),
  private.attribution_waiting(),
  private.attribution_step(),
  private.attribution_rebuild_between(timestamptz, timestamptz),
  private.attribution_credit_work(integer),
  private.attribution_apply_credits(uuid[], text[], bigint[], numeric[], integer[], timestamptz[], text[], numeric[], text[], text[], text[], numeric[])
  to service_role;

-- ---------------------------------------------------------------------------------------------
-- Reading: GET /v1/attribution and GET /v1/attribution/conversions/:event_id. One jsonb value
-- per call (PostgREST cuts sets at its max_rows), for SQL and supabase-js rpc alike.
-- ---------------------------------------------------------------------------------------------

-- The conversions of a period (approved, their 15-minute bucket in [p_from, p_to)) and, on
-- request, their paths at a dimension and the period's non-converting paths. With p_campaign_id,
-- the conversions of that campaign or whose path touches it, and the non-converting paths that
-- touch it ({"refused": "campaign_id"} for a campaign not the organization's). Answers:
--   settings: the organization's settings (or {error, field}),
--   conversions, attributed (a path with a touch), pending (a path not built yet), non_converting,
--   currencies: [[currency or null, conversions, attributed, attributed value]],
--   grouped (p_grouped): [[paths, currency, amount, [channel, ...]]], identical paths (and amounts) counted once,
--   detailed (p_detailed): [[conversion time (ms), currency, amount, [[touch time (ms), "c"|"v", channel], ...]]],
--   non_converting_paths (p_grouped): [[paths, [channel, ...]]].
create function public.attribution_period(
  p_org_id uuid,
  p_dimension text,
  p_property text,
  p_from timestamptz,
  p_to timestamptz,
  p_campaign_id uuid,
  p_grouped boolean,
  p_detailed boolean
)
returns jsonb
language plpgsql
stable
set search_path = ''
as $$
declare
  v_from timestamptz := private.attribution_bucket_ceiling(p_from);
  v_to timestamptz := private.attribution_bucket_ceiling(p_to);
  v_settings jsonb;
begin
  if p_campaign_id is not null
     and not exists (select from public.campaigns c where c.id = p_campaign_id and c.org_id = p_org_id) then
    return jsonb_build_object('refused', 'campaign_id');
  end if;
  select private.attribution_settings(o.properties) into v_settings from public.organizations o where o.id = p_org_id;
  return (
    with conversions as materialized (
      select p.converted_at, p.currency, p.amount, p.path_pending, coalesce(p.touches, '[]') as touches
      from public.attribution_paths p
      where p.org_id = p_org_id and p.converted_at >= v_from and p.converted_at < v_to and p.status = 'approved'
        and (p_campaign_id is null or p.campaign_id = p_campaign_id
             or p.touches @> jsonb_build_array(jsonb_build_object('cmp', p_campaign_id)))
    ),
    attributed as (
      select c.*,
             array(select private.attribution_path_channel(t.touch, p_dimension, p_property)
                   from jsonb_array_elements(c.touches) with ordinality as t(touch, i) order by t.i) as channels
      from conversions c
      where jsonb_array_length(c.touches) > 0 and (p_grouped or p_detailed)
    ),
    -- users with touches in the period (their 50 latest) and no approved conversion in it
    user_touches as (
      select t.user_key, t.at, t.event_id, t.campaign_id,
             private.attribution_channel(p_dimension, p_property, t.campaign_id, t.creative_id, t.asset_ids, t.properties) as channel,
             row_number() over (partition by t.user_key order by t.at desc, t.event_id desc) as recency
      from public.attribution_touches t
      where t.org_id = p_org_id and t.user_key <> '' and t.at >= v_from and t.at < v_to
    ),
    non_converting as (
      select u.user_key, array_agg(u.channel order by u.at, u.event_id) filter (where u.recency <= 50) as channels
      from user_touches u
      group by u.user_key
      having (p_campaign_id is null or bool_or(u.campaign_id = p_campaign_id))
         and not exists (select from public.attribution_paths p
                         where p.org_id = p_org_id and p.user_key = u.user_key and p.status = 'approved'
                           and p.converted_at >= v_from and p.converted_at < v_to)
    )
    select jsonb_build_object(
      'settings', v_settings,
      'conversions', (select count(*) from conversions),
      'attributed', (select count(*) from conversions c where jsonb_array_length(c.touches) > 0),
      'pending', (select count(*) from conversions c where c.path_pending),
      'non_converting', (select count(*) from non_converting),
      'currencies', (select coalesce(jsonb_agg(jsonb_build_array(x.currency, x.conversions, x.attributed, x.value) order by x.currency nulls first), '[]')
                     from (select c.currency, count(*) as conversions,
                                  count(*) filter (where jsonb_array_length(c.touches) > 0) as attributed,
                                  coalesce(sum(c.amount) filter (where jsonb_array_length(c.touches) > 0), 0) as value
                           from conversions c group by c.currency) x),
      'grouped', case when p_grouped then (
                   select coalesce(jsonb_agg(jsonb_build_array(g.paths, g.currency, g.amount, g.channels)), '[]')
                   from (select count(*) as paths, a.currency, a.amount, to_jsonb(a.channels) as channels
                         from attributed a group by a.currency, a.amount, a.channels) g) end,
      'detailed', case when p_detailed then (
                    select coalesce(jsonb_agg(jsonb_build_array(
                             floor(extract(epoch from a.converted_at) * 1000)::bigint, a.currency, a.amount,
                             (select jsonb_agg(jsonb_build_array(t.touch -> 'at', t.touch -> 'k', a.channels[t.i::integer]) order by t.i)
                              from jsonb_array_elements(a.touches) with ordinality as t(touch, i)))), '[]')
                    from attributed a) end,
      'non_converting_paths', case when p_grouped then (
                                select coalesce(jsonb_agg(jsonb_build_array(g.paths, g.channels)), '[]')
                                from (select count(*) as paths, to_jsonb(n.channels) as channels
                                      from non_converting n group by n.channels) g) end)
  );
end
$$;
comment on function public.attribution_period(uuid, text, text, timestamptz, timestamptz, uuid, boolean, boolean) is
  'GET /v1/attribution: the conversions of a period and, on request, their paths and the non-converting paths (backend only).';

-- The rule models' credits stored as metrics, summed over [p_from, p_to) (whole 15-minute
-- buckets): [[model, channel, currency or null, conversions, value], ...].
create function public.attribution_stored_credits(
  p_org_id uuid, p_dimension text, p_models text[], p_from timestamptz, p_to timestamptz
)
returns jsonb
language sql
stable
set search_path = ''
as $$
  select coalesce(jsonb_agg(jsonb_build_array(x.model, x.channel, x.currency, x.conversions, x.value)
                            order by x.model, x.channel, x.currency nulls first), '[]')
  from (select s.dimensions ->> 'model' as model, s.entity_id as channel, s.dimensions ->> 'currency' as currency,
               coalesce(sum(p.value) filter (where s.metric = 'attributed_conversions'), 0) as conversions,
               coalesce(sum(p.value) filter (where s.metric = 'attributed_value'), 0) as value
        from public.metric_series s
        join public.metric_points p on p.org_id = s.org_id and p.series_id = s.id
        where s.org_id = p_org_id and s.entity_type = p_dimension and s.granularity = '15m'
          and s.metric in ('attributed_conversions', 'attributed_value')
          and s.dimensions ->> 'model' = any (p_models)
          and p.bucket_start >= private.attribution_bucket_ceiling(p_from) and p.bucket_start < private.attribution_bucket_ceiling(p_to)
        group by 1, 2, 3) x
$$;
comment on function public.attribution_stored_credits(uuid, text, text[], timestamptz, timestamptz) is
  'GET /v1/attribution: the rule models'' credits summed from the metrics (backend only).';

-- One conversion of the organization, by the id of any of its events: its state, its path and
-- the settings; {"refused": "event_id"} when the organization has no such conversion.
create function public.attribution_conversion(p_org_id uuid, p_event_id text) returns jsonb
language sql
stable
set search_path = ''
as $$
  with found as (
    select p.*
    from public.attribution_paths p
    where p.org_id = p_org_id
      and p.conversion_key = coalesce(
        (select q.conversion_key from public.attribution_paths q where q.org_id = p_org_id and q.event_id = p_event_id limit 1),
        (select case when e.click_id is null then jsonb_build_array(e.event_id)::text
                     else jsonb_build_array(e.click_id, coalesce(e.properties ->> 'txid', ''), e.type)::text end
         from public.events e
         where e.org_id = p_org_id and e.event_id = p_event_id and private.counts_as_conversion(e.type, e.context)
         limit 1))
  )
  select coalesce(
    (select jsonb_build_object(
       'settings', (select private.attribution_settings(o.properties) from public.organizations o where o.id = p_org_id),
       'event_id', f.event_id, 'converted_at', f.converted_at, 'status', f.status, 'value', f.amount,
       'currency', f.currency, 'campaign_id', f.campaign_id, 'click_id', f.click_id, 'user_key', f.user_key,
       'touches', f.touches, 'touches_dropped', f.touches_dropped, 'pending', f.path_pending or f.credit_pending)
     from found f),
    jsonb_build_object('refused', 'event_id'))
$$;
comment on function public.attribution_conversion(uuid, text) is
  'GET /v1/attribution/conversions/:event_id: one conversion and its path, or {"refused": "event_id"} (backend only).';

revoke all on function
  public.attribution_period(uuid, text, text, timestamptz, timestamptz, uuid, boolean, boolean),
  public.attribution_stored_credits(uuid, text, text[], timestamptz, timestamptz),
  public.attribution_conversion(uuid, text)
  from public, anon, authenticated;
grant execute on function
  public.attribution_period(uuid, text, text, timestamptz, timestamptz, uuid, boolean, boolean),
  public.attribution_stored_credits(uuid, text, text[], timestamptz, timestamptz),
  public.attribution_conversion(uuid, text)
  to service_role;
