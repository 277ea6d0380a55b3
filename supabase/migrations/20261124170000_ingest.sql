-- Ingestion: the one SQL function every write path calls (the Node group commit, the Worker's
-- queue consumer through Hyperdrive, and supabase-js rpc through PostgREST), so that dedup and
-- the failed-event rule live in one place.

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

-- Inserts canonical events (a JSON array) with dedup, and returns the keys it inserted.
-- A row of the input: org_id, event_id, id_source ('client' | 'edge'), type, occurred_at,
-- received_at, campaign_id, creative_id, asset_ids, user_key, click_id, value, currency,
-- status, properties, context.
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
    i.org_id, i.event_id, i.type, i.occurred_at, coalesce(i.received_at, now()), i.campaign_id,
    i.creative_id, coalesce(i.asset_ids, '{}'), i.user_key, i.click_id, i.value, i.currency,
    i.status, coalesce(i.properties, '{}'), coalesce(i.context, '{}')
  from input i
  where i.id_source is distinct from 'client'
     or exists (select 1 from claimed c where c.org_id = i.org_id and c.event_id = i.event_id)
  on conflict do nothing
  returning ev.org_id, ev.event_id
$$;

-- The write of one batch, in one round trip:
--   p_batch = { "events": [canonical events], "failures": [failed-event records] }
-- returns { "inserted": n, "duplicates": [[org_id, event_id], ...] (keys already stored),
--           "failed": [[org_id, event_id, reason], ...], "failures_stored": n }.
-- Callers send each key once per batch (the writers dedup a batch before sending).
-- A row the database refuses (it passed the edge's validation but not a constraint) does not
-- sink its batch: the batch is retried row by row and the refused row goes to failed_events.
-- Any other error fails the call, and the caller answers 503 (nothing is acknowledged).
create function public.ingest_events(p_batch jsonb)
returns jsonb
language plpgsql
set search_path = ''
as $$
declare
  v_events jsonb := coalesce(p_batch -> 'events', '[]');
  -- keys as 'org_id event_id' text, so set differences below are hash lookups
  v_inserted text[];
  v_failed text[] := '{}';
  v_failed_reasons jsonb := '[]';
  v_row jsonb;
  v_failures_stored integer;
begin
  if jsonb_typeof(v_events) <> 'array' then
    raise exception 'ingest_events: "events" must be an array' using errcode = 'invalid_parameter_value';
  end if;

  begin
    select coalesce(array_agg(k.org_id::text || ' ' || k.event_id), '{}')
      into v_inserted
      from private.insert_events(v_events) k;
  exception when others then
    v_inserted := '{}';
    for v_row in select value from jsonb_array_elements(v_events) loop
      begin
        v_inserted := v_inserted || array(
          select k.org_id::text || ' ' || k.event_id from private.insert_events(jsonb_build_array(v_row)) k);
      -- Only a problem of the row itself (bad data, a constraint) is the row's fault; anything
      -- else (permissions, a lost connection) fails the whole call so the sender retries.
      exception when data_exception or integrity_constraint_violation then
        v_failed := v_failed || ((v_row ->> 'org_id') || ' ' || (v_row ->> 'event_id'));
        v_failed_reasons := v_failed_reasons
          || jsonb_build_array(jsonb_build_array(v_row ->> 'org_id', v_row ->> 'event_id', sqlerrm));
        insert into public.failed_events (org_id, source, reason_code, reason, payload, payload_truncated, properties)
        values (
          (v_row ->> 'org_id')::uuid,
          coalesce(v_row -> 'context' ->> 'source', 'ingest'),
          'db_rejected',
          sqlerrm,
          left(v_row::text, 65536),
          length(v_row::text) > 65536,
          jsonb_build_object('payload_format', 'canonical', 'sqlstate', sqlstate)
        );
      end;
    end loop;
  end;

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
    'failed', v_failed_reasons,
    'failures_stored', v_failures_stored
  );
end
$$;

revoke all on function private.insert_events(jsonb) from public;
grant execute on function private.insert_events(jsonb) to service_role;
revoke all on function public.ingest_events(jsonb) from public, anon, authenticated;
grant execute on function public.ingest_events(jsonb) to service_role;

-- The live key with this hash (not revoked, not expired), with its settings (a postback
-- token's param_map). A function so that the edge's supabase-js path (rpc) and the SQL path ask
-- the same question the same way.
create function public.resolve_api_key(p_key_hash text)
returns table (id uuid, org_id uuid, kind text, scopes text[], key_hash text, properties jsonb)
language sql
stable
set search_path = ''
as $$
  select k.id, k.org_id, k.kind, k.scopes, k.key_hash, k.properties
  from public.api_keys k
  where k.key_hash = p_key_hash
    and k.revoked_at is null
    and (k.expires_at is null or k.expires_at > now())
$$;
revoke all on function public.resolve_api_key(text) from public, anon, authenticated;
grant execute on function public.resolve_api_key(text) to service_role;
