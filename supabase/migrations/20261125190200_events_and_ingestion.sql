-- The event log and everything that writes it: the append-only events table and its daily
-- partitions, the ledger of sender-chosen ids, failed events, which events are conversions, the
-- one insert every write path calls (ingest_events) and S2S postbacks.
--
-- events is append-only and range-partitioned by occurred_at, one partition per UTC day, so
-- that retention drops whole partitions and time-bounded queries prune to a few days.
-- org_id leads every key (the schema can be distributed by org without redesign).
-- No foreign keys on the log: ingestion must not pay a lookup per row, and the log outlives
-- the entities it mentions.

create table public.events (
  org_id uuid not null,
  event_id text not null check (length(event_id) between 1 and 128),
  -- impression, click, conversion, data_usage, creative_view, or any other snake_case type
  type text not null check (type ~ '^[a-z][a-z0-9_]{0,62}$'),
  occurred_at timestamptz not null,
  received_at timestamptz not null default now(),
  campaign_id uuid,
  creative_id text check (length(creative_id) <= 128),
  asset_ids uuid[] not null default '{}',
  user_key text check (length(user_key) <= 256),
  click_id text check (length(click_id) <= 128),
  value numeric,
  currency text check (currency ~ '^[A-Z]{3}$'),
  status text check (status ~ '^[a-z][a-z0-9_]{0,31}$'),
  properties jsonb not null default '{}' check (jsonb_typeof(properties) = 'object'),
  -- geo, device, bot flag, truncated or hashed IP, consent: never a raw IP
  context jsonb not null default '{}' check (jsonb_typeof(context) = 'object'),
  -- The inserting transaction: the rollup's watermark. Not received_at, which the edge sets: a
  -- row can commit long after it (queues, replays), so a time watermark would miss it. Every
  -- transaction below pg_snapshot_xmin(pg_current_snapshot()) has finished, so rows below that
  -- mark can no longer appear.
  ingest_xid xid8 not null default pg_current_xact_id(),
  -- Dedup on (org_id, event_id); Postgres requires the partition key in a unique key.
  primary key (org_id, event_id, occurred_at)
) partition by range (occurred_at);

comment on table public.events is
  'Append-only event log, one partition per UTC day (events_pYYYYMMDD) plus events_default for stray times.';

create index events_campaign_time_idx on public.events (org_id, campaign_id, occurred_at);
create index events_creative_time_idx on public.events (org_id, creative_id, occurred_at)
  where creative_id is not null;
create index events_click_idx on public.events (org_id, click_id) where click_id is not null;
create index events_user_time_idx on public.events (org_id, user_key, occurred_at)
  where user_key is not null;
-- Arrival order: rollups read what arrived since their watermark.
create index events_received_brin on public.events using brin (received_at);
-- The rollup reads a window of transactions, and a range recompute whole buckets by time.
create index events_ingest_xid_idx on public.events (ingest_xid);
create index events_occurred_brin on public.events using brin (occurred_at);

-- Rows whose day has no partition yet land here; ensure_event_partitions moves them out.
create table public.events_default partition of public.events default;

-- Append-only: no UPDATE ever, DELETE only for an explicit erasure or partition upkeep
-- (which sets precise.allow_event_delete for its own transaction). Retention drops partitions.
create function private.refuse_event_change() returns trigger
language plpgsql
set search_path = ''
as $$
begin
  if tg_op = 'DELETE' and current_setting('precise.allow_event_delete', true) = 'on' then
    return old;
  end if;
  raise exception 'events are append-only (% refused)', tg_op
    using errcode = 'insufficient_privilege',
          hint = 'record a new event instead, e.g. a status change';
end
$$;
revoke all on function private.refuse_event_change() from public;

create trigger refuse_event_change before update or delete on public.events
  for each row execute function private.refuse_event_change();
create trigger refuse_event_truncate before truncate on public.events
  for each statement execute function private.refuse_event_change();

-- Creates (or, when events_default already holds rows for it, carves out) the partition of
-- one UTC day, and locks it down: a partition queried directly would bypass the parent's
-- policies, so it gets RLS with no policy and no grants for API roles.
create function private.create_event_partition(p_day date) returns boolean
language plpgsql
set search_path = ''
as $$
declare
  v_name text := 'events_p' || to_char(p_day, 'YYYYMMDD');
  v_lo timestamptz := p_day::timestamp at time zone 'UTC';
  v_hi timestamptz := (p_day + 1)::timestamp at time zone 'UTC';
begin
  if to_regclass('public.' || v_name) is not null then
    return false;
  end if;

  if exists (select 1 from public.events_default where occurred_at >= v_lo and occurred_at < v_hi) then
    execute format('create table public.%I (like public.events including defaults including constraints)', v_name);
    perform set_config('precise.allow_event_delete', 'on', true);
    execute format(
      'with moved as (delete from public.events_default where occurred_at >= $1 and occurred_at < $2 returning *)
       insert into public.%I select * from moved', v_name)
      using v_lo, v_hi;
    perform set_config('precise.allow_event_delete', 'off', true);
    execute format('alter table public.events attach partition public.%I for values from (%L) to (%L)',
      v_name, v_lo, v_hi);
  else
    execute format('create table public.%I partition of public.events for values from (%L) to (%L)',
      v_name, v_lo, v_hi);
  end if;

  execute format('alter table public.%I enable row level security', v_name);
  execute format('revoke all on table public.%I from anon, authenticated', v_name);
  return true;
end
$$;

-- Makes sure a partition exists for every UTC day from p_from to p_to (inclusive); returns
-- how many it created. Safe to call concurrently and repeatedly (a scheduled job calls it
-- daily; ingestion never waits for it because events_default catches stray days).
create function private.ensure_event_partitions(
  p_from date default ((now() at time zone 'UTC')::date - 1),
  p_to date default ((now() at time zone 'UTC')::date + 14)
) returns integer
language plpgsql
set search_path = ''
as $$
declare
  v_day date;
  v_created integer := 0;
begin
  if p_from is null or p_to is null or p_to < p_from then
    raise exception 'ensure_event_partitions: bad range % .. %', p_from, p_to
      using errcode = 'invalid_parameter_value';
  end if;
  if p_to - p_from > 3700 then
    raise exception 'ensure_event_partitions: at most 3700 days at once (asked %)', p_to - p_from
      using errcode = 'invalid_parameter_value';
  end if;

  perform pg_advisory_xact_lock(hashtext('precise.events.partitions'));
  for v_day in select d::date from generate_series(p_from, p_to, interval '1 day') as d loop
    if private.create_event_partition(v_day) then
      v_created := v_created + 1;
    end if;
  end loop;
  return v_created;
end
$$;
revoke all on function private.create_event_partition(date) from public;
revoke all on function private.ensure_event_partitions(date, date) from public;
grant execute on function private.ensure_event_partitions(date, date) to service_role;

alter table public.events_default enable row level security;
select private.ensure_event_partitions();

-- Events that could be tied to an org but were refused: kept with the reason and the raw
-- payload (bounded) so an operator can fix and replay them. Nothing is dropped silently.
create table public.failed_events (
  id uuid primary key default gen_random_uuid(),
  org_id uuid not null references public.organizations (id) on delete cascade,
  -- pixel, beacon, batch, postback, webhook, queue, ...
  source text not null check (source ~ '^[a-z][a-z0-9_]{0,31}$'),
  reason_code text not null check (reason_code ~ '^[a-z][a-z0-9_]{0,63}$'),
  reason text not null,
  field text,
  payload text not null check (octet_length(payload) <= 65536),
  payload_truncated boolean not null default false,
  received_at timestamptz not null default now(),
  replay_count integer not null default 0,
  replayed_at timestamptz,
  -- the outcome of the last replay, e.g. {"ok": true, "event_id": "..."}
  replay_result jsonb,
  properties jsonb not null default '{}' check (jsonb_typeof(properties) = 'object'),
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);
create index failed_events_org_time_idx on public.failed_events (org_id, received_at desc);
create index failed_events_pending_idx on public.failed_events (org_id, received_at)
  where replayed_at is null;

create trigger touch_updated_at before update on public.failed_events
  for each row execute function private.touch_updated_at();

-- Members read their org's log and failures; only the backend (service_role) writes.
alter table public.events enable row level security;
create policy "events: members read" on public.events
  for select to authenticated using (org_id in (select private.user_org_ids()));
alter table public.failed_events enable row level security;
create policy "failed_events: members read" on public.failed_events
  for select to authenticated using (org_id in (select private.user_org_ids()));

revoke all on table public.events, public.events_default, public.failed_events from anon, authenticated;
grant select on table public.events, public.failed_events to authenticated;
grant all on table public.events, public.failed_events to service_role;

-- Dedup for event ids chosen by the sender. The events primary key must contain the partition
-- key (occurred_at), so on its own it cannot catch a retry that carries the same event_id but
-- no timestamp (occurred_at then defaults to arrival and differs). Sender ids are claimed here
-- first, on (org_id, event_id) alone. Ids the edge generates (UUIDv7) are unique by
-- construction and a queue redelivery repeats their occurred_at, so they skip this table.
create table public.event_ids (
  org_id uuid not null,
  event_id text not null,
  occurred_at timestamptz not null,
  claimed_at timestamptz not null default now(),
  primary key (org_id, event_id)
);
comment on table public.event_ids is
  'Sender-chosen event ids already ingested, for dedup on (org_id, event_id) regardless of time.';
create index event_ids_claimed_brin on public.event_ids using brin (claimed_at);

alter table public.event_ids enable row level security;
revoke all on table public.event_ids from anon, authenticated;
grant all on table public.event_ids to service_role;

-- ---------------------------------------------------------------------------------------------
-- Which events are conversions
-- ---------------------------------------------------------------------------------------------

-- The types an organization counts as conversions: its properties.conversion_types (an array
-- of snake_case names), else the default list.
create function private.conversion_types(p_org_properties jsonb) returns text[]
language sql
immutable
set search_path = ''
as $$
  select case
    when jsonb_typeof(p_org_properties -> 'conversion_types') = 'array'
      then array(select jsonb_array_elements_text(p_org_properties -> 'conversion_types'))
    else array['conversion', 'install', 'lead', 'purchase', 'sign_up', 'subscribe', 'registration', 'deposit']
  end
$$;
revoke all on function private.conversion_types(jsonb) from public;
grant execute on function private.conversion_types(jsonb) to service_role;

-- The one rule every job uses: an event is a conversion when ingestion marked it so
-- (context.conversion, written only where it differs from the type alone), else when its type is
-- `conversion` (events stored before the mark existed). No search_path setting: it names no
-- object, and without one the planner inlines it into the rollup's scans.
create function private.counts_as_conversion(p_type text, p_context jsonb) returns boolean
language sql
immutable
parallel safe
as $$
  select coalesce((p_context ->> 'conversion')::boolean, p_type = 'conversion')
$$;
revoke all on function private.counts_as_conversion(text, jsonb) from public;
grant execute on function private.counts_as_conversion(text, jsonb) to service_role;

-- ---------------------------------------------------------------------------------------------
-- The insert: dedup, the conversion mark, what a click passes on, unowned ids set apart
-- ---------------------------------------------------------------------------------------------

-- Inserts canonical events (a JSON array) with dedup, and returns the keys it inserted.
-- A row of the input: org_id, event_id, id_source ('client' | 'edge'), type, occurred_at,
-- received_at, campaign_id, creative_id, asset_ids, user_key, click_id, value, currency,
-- status, properties, context. As each event is stored:
--   * its type is marked a conversion or not by the organization's conversion_types;
--   * a non-click event naming a recorded click_id inherits the click's campaign, creative,
--     data assets and user key, so campaign metrics and attribution see it;
--   * a campaign or data asset the organization neither owns nor is licensed to use is kept in
--     context.unowned and never counted under that id.
create function private.insert_events(p_events jsonb)
returns table (org_id uuid, event_id text)
language sql
set search_path = ''
as $$
  with input as (
    select distinct on (e.org_id, e.event_id) e.*
    from jsonb_to_recordset(p_events) as e(
      org_id uuid, event_id text, id_source text, type text, occurred_at timestamptz,
      received_at timestamptz, campaign_id uuid, creative_id text, asset_ids uuid[],
      user_key text, click_id text, value numeric, currency text, status text,
      properties jsonb, context jsonb)
    -- one row per key even when a caller sends a key twice (with different times, the
    -- partitioned primary key alone would keep both)
    order by e.org_id, e.event_id, e.received_at
  ),
  -- what a non-click event naming a recorded click takes from it (the first such click)
  inherited as (
    select i.*,
           coalesce(i.campaign_id, c.campaign_id) as from_campaign_id,
           coalesce(i.creative_id, c.creative_id) as from_creative_id,
           case when coalesce(cardinality(i.asset_ids), 0) = 0 then c.asset_ids else i.asset_ids end as from_asset_ids,
           -- the user the click names, unless the event names its own or may carry none
           case when coalesce((i.context -> 'consent' ->> 'limited')::boolean, false) or i.context ? 'anonymous'
                then i.user_key else coalesce(i.user_key, c.user_key) end as from_user_key,
           c.event_id as click_event_id
    from input i
    left join lateral (
      select k.event_id, k.campaign_id, k.creative_id, k.asset_ids, k.user_key
      from public.events k
      where i.click_id is not null and i.type <> 'click'
        and k.org_id = i.org_id and k.click_id = i.click_id and k.type = 'click'
      order by k.occurred_at, k.event_id
      limit 1
    ) c on true
  ),
  campaign_checks as (
    select d.org_id, d.campaign_id,
           exists (select 1 from public.campaigns c where c.id = d.campaign_id and c.org_id = d.org_id) as allowed
    from (select distinct h.org_id, h.from_campaign_id as campaign_id from inherited h where h.from_campaign_id is not null) d
  ),
  asset_checks as (
    select d.org_id, d.asset_id, private.may_use_asset(d.org_id, d.asset_id) as allowed
    from (select distinct h.org_id, a.asset_id from inherited h cross join unnest(h.from_asset_ids) as a(asset_id)) d
  ),
  conversion_types as (
    select o.id as org_id, private.conversion_types(o.properties) as types
    from public.organizations o
    where o.id in (select distinct i.org_id from input i)
  ),
  resolved as (
    select h.*,
           case when coalesce(cc.allowed, true) then h.from_campaign_id end as final_campaign_id,
           cc.allowed = false as campaign_unowned,
           coalesce(assets.allowed, '{}') as final_asset_ids,
           assets.unowned as unowned_asset_ids,
           h.type = any (coalesce(t.types, private.conversion_types('{}'))) as is_conversion
    from inherited h
    left join campaign_checks cc on cc.org_id = h.org_id and cc.campaign_id = h.from_campaign_id
    left join conversion_types t on t.org_id = h.org_id
    -- the event's assets split in one pass, in the order it named them
    cross join lateral (
      select array_agg(a.asset_id order by a.ord) filter (where x.allowed) as allowed,
             array_agg(a.asset_id order by a.ord) filter (where not x.allowed) as unowned
      from unnest(h.from_asset_ids) with ordinality as a(asset_id, ord)
      join asset_checks x on x.org_id = h.org_id and x.asset_id = a.asset_id
    ) assets
  ),
  claimed as (
    insert into public.event_ids (org_id, event_id, occurred_at)
    select i.org_id, i.event_id, i.occurred_at from input i where i.id_source = 'client'
    on conflict do nothing
    returning event_ids.org_id, event_ids.event_id
  )
  insert into public.events as ev (
    org_id, event_id, type, occurred_at, received_at, campaign_id, creative_id, asset_ids,
    user_key, click_id, value, currency, status, properties, context)
  select
    r.org_id, r.event_id, r.type, r.occurred_at, coalesce(r.received_at, now()), r.final_campaign_id,
    r.from_creative_id, r.final_asset_ids, r.from_user_key, r.click_id, r.value, r.currency,
    r.status, coalesce(r.properties, '{}'),
    coalesce(r.context, '{}') || jsonb_strip_nulls(jsonb_build_object(
      -- written only where the type alone would say otherwise (private.counts_as_conversion)
      'conversion', case when r.is_conversion <> (r.type = 'conversion') then r.is_conversion end,
      'click_event_id', r.click_event_id,
      'unowned', nullif(jsonb_strip_nulls(jsonb_build_object(
        'campaign_id', case when r.campaign_unowned then r.from_campaign_id end,
        'asset_ids', to_jsonb(r.unowned_asset_ids))), '{}'::jsonb)))
  from resolved r
  where r.id_source is distinct from 'client'
     or exists (select 1 from claimed c where c.org_id = r.org_id and c.event_id = r.event_id)
  on conflict do nothing
  returning ev.org_id, ev.event_id
$$;

-- Inserts p_events; a row Postgres refuses is found by halving (about 2·log2(n) subtransactions
-- per bad row, where one per row overflowed the snapshot's subtransaction cache past 64).
revoke all on function private.insert_events(jsonb) from public;
grant execute on function private.insert_events(jsonb) to service_role;

create function private.insert_events_isolating(p_events jsonb) returns jsonb
language plpgsql
set search_path = ''
as $$
declare
  v_count integer := jsonb_array_length(p_events);
  v_half integer;
  v_left jsonb;
  v_right jsonb;
begin
  if v_count = 0 then
    return jsonb_build_object('inserted', '[]'::jsonb, 'failed', '[]'::jsonb);
  end if;
  begin
    return jsonb_build_object(
      'inserted', (select coalesce(jsonb_agg(k.org_id::text || ' ' || k.event_id), '[]') from private.insert_events(p_events) k),
      'failed', '[]'::jsonb);
  -- Only a problem of a row itself (bad data, a constraint) is the row's fault; anything else
  -- (permissions, a lost connection) fails the whole call so the sender retries.
  exception when data_exception or integrity_constraint_violation then
    if v_count = 1 then
      return jsonb_build_object('inserted', '[]'::jsonb, 'failed', jsonb_build_array(jsonb_build_array(
        p_events -> 0 ->> 'org_id', p_events -> 0 ->> 'event_id', sqlerrm, sqlstate, p_events -> 0)));
    end if;
  end;
  v_half := v_count / 2;
  select coalesce(jsonb_agg(e.value order by e.ordinality) filter (where e.ordinality <= v_half), '[]'),
         coalesce(jsonb_agg(e.value order by e.ordinality) filter (where e.ordinality > v_half), '[]')
    into v_left, v_right
    from jsonb_array_elements(p_events) with ordinality as e;
  v_left := private.insert_events_isolating(v_left);
  v_right := private.insert_events_isolating(v_right);
  return jsonb_build_object('inserted', (v_left -> 'inserted') || (v_right -> 'inserted'),
                            'failed', (v_left -> 'failed') || (v_right -> 'failed'));
end
$$;
revoke all on function private.insert_events_isolating(jsonb) from public;
grant execute on function private.insert_events_isolating(jsonb) to service_role;

-- The write of one batch, in one round trip:
--   p_batch = { "events": [canonical events], "failures": [failed-event records] }
-- returns { "inserted": n, "duplicates": [[org_id, event_id], ...] (keys already stored),
--           "failed": [[org_id, event_id, reason], ...], "failures_stored": n }.
-- Callers send each key once per batch (the writers dedup a batch before sending).
-- A row the database refuses (it passed the edge's validation but not a constraint) does not
-- sink its batch: insert_events_isolating sets it apart and it goes to failed_events.
-- Any other error fails the call, and the caller answers 503 (nothing is acknowledged).
create function public.ingest_events(p_batch jsonb)
returns jsonb
language plpgsql
set search_path = ''
as $$
declare
  v_events jsonb := coalesce(p_batch -> 'events', '[]');
  v_result jsonb;
  v_inserted text[];
  v_failed text[];
  v_failures_stored integer;
begin
  if jsonb_typeof(v_events) <> 'array' then
    raise exception 'ingest_events: "events" must be an array' using errcode = 'invalid_parameter_value';
  end if;

  v_result := private.insert_events_isolating(v_events);
  -- keys as 'org_id event_id' text, so the set difference below is a hash lookup
  v_inserted := array(select jsonb_array_elements_text(v_result -> 'inserted'));
  v_failed := array(select (f ->> 0) || ' ' || (f ->> 1) from jsonb_array_elements(v_result -> 'failed') f);

  insert into public.failed_events (org_id, source, reason_code, reason, payload, payload_truncated, properties)
  select (f ->> 0)::uuid,
         coalesce(f -> 4 -> 'context' ->> 'source', 'ingest'),
         'db_rejected',
         f ->> 2,
         left((f -> 4)::text, 65536),
         length((f -> 4)::text) > 65536,
         jsonb_build_object('payload_format', 'canonical', 'sqlstate', f ->> 3)
  from jsonb_array_elements(v_result -> 'failed') f;

  insert into public.failed_events (org_id, source, reason_code, reason, field, payload, payload_truncated, properties, received_at)
  select f.org_id, f.source, f.reason_code, f.reason, f.field, f.payload, coalesce(f.payload_truncated, false),
         coalesce(f.properties, '{}'), coalesce(f.received_at, now())
  from jsonb_to_recordset(coalesce(p_batch -> 'failures', '[]')) as f(
    org_id uuid, source text, reason_code text, reason text, field text, payload text,
    payload_truncated boolean, properties jsonb, received_at timestamptz);
  get diagnostics v_failures_stored = row_count;

  return jsonb_build_object(
    'inserted', cardinality(v_inserted),
    -- the common case, everything new, skips the set difference
    'duplicates', case when cardinality(v_inserted) + cardinality(v_failed) = jsonb_array_length(v_events) then '[]'::jsonb else (
      select coalesce(jsonb_agg(jsonb_build_array(e ->> 'org_id', e ->> 'event_id')), '[]')
      from jsonb_array_elements(v_events) e
      where (e ->> 'org_id') || ' ' || (e ->> 'event_id') not in (select unnest(v_inserted || v_failed))
    ) end,
    'failed', (select coalesce(jsonb_agg(jsonb_build_array(f -> 0, f -> 1, f -> 2)), '[]') from jsonb_array_elements(v_result -> 'failed') f),
    'failures_stored', v_failures_stored
  );
end
$$;
revoke all on function public.ingest_events(jsonb) from public, anon, authenticated;
grant execute on function public.ingest_events(jsonb) to service_role;

-- ---------------------------------------------------------------------------------------------
-- S2S postbacks
-- ---------------------------------------------------------------------------------------------
-- S2S postbacks. A conversion counts once per (org, click_id, txid), or per (org, click_id,
-- type) when the network sends no txid. The same key with a new status is a status change,
-- recorded as a new event; allowed: pending -> approved -> rejected (a chargeback), and
-- pending -> rejected. The check and the insert run under a lock on the key, so a network
-- retrying, or sending two statuses at once, cannot slip past it.

create function private.status_transition_allowed(p_from text, p_to text) returns boolean
language sql
immutable
set search_path = ''
as $$
  select (p_from, p_to) in (('pending', 'approved'), ('pending', 'rejected'), ('approved', 'rejected'))
$$;

-- p_event: one canonical event (type, click_id, status, properties.txid, ...).
-- Returns { outcome: stored | duplicate | refused, status, previous_status, unmatched_click }.
-- A conversion for a click this org never recorded is stored all the same, flagged
-- context.unmatched_click (attribution decides what to do with it).
create function public.record_postback(p_event jsonb)
returns jsonb
language plpgsql
set search_path = ''
as $$
declare
  v_org uuid := (p_event ->> 'org_id')::uuid;
  v_click text := p_event ->> 'click_id';
  v_type text := p_event ->> 'type';
  v_txid text := p_event -> 'properties' ->> 'txid';
  v_status text := p_event ->> 'status';
  v_seen text[];
  v_latest text;
  v_matched boolean;
  v_inserted bigint;
begin
  perform pg_advisory_xact_lock(hashtextextended(concat_ws(' ', v_org, v_click, v_type, v_txid), 0));

  select array_agg(e.status), (array_agg(e.status order by e.received_at desc, e.event_id desc))[1]
    into v_seen, v_latest
    from public.events e
   where e.org_id = v_org and e.click_id = v_click and e.type = v_type
     and (e.properties ->> 'txid') is not distinct from v_txid;

  -- A status this key already had: the network retrying (perhaps late, after a newer status).
  if v_status = any (v_seen) then
    return jsonb_build_object('outcome', 'duplicate', 'status', v_latest, 'previous_status', v_latest);
  end if;
  if v_latest is not null and not private.status_transition_allowed(v_latest, v_status) then
    return jsonb_build_object('outcome', 'refused', 'status', v_latest, 'previous_status', v_latest);
  end if;

  v_matched := exists (
    select 1 from public.events c where c.org_id = v_org and c.click_id = v_click and c.type = 'click');
  select count(*) into v_inserted
    from private.insert_events(jsonb_build_array(
      jsonb_set(p_event, '{context,unmatched_click}', to_jsonb(not v_matched))));

  return jsonb_build_object(
    'outcome', case when v_inserted = 1 then 'stored' else 'duplicate' end,
    'status', v_status,
    'previous_status', v_latest,
    'unmatched_click', not v_matched);
end
$$;

revoke all on function private.status_transition_allowed(text, text) from public;
grant execute on function private.status_transition_allowed(text, text) to service_role;
revoke all on function public.record_postback(jsonb) from public, anon, authenticated;
grant execute on function public.record_postback(jsonb) to service_role;
