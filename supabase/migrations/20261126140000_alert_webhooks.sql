-- Alert webhooks: the system events an organization asked for (creative_fatigue_detected,
-- creative_fatigue_cleared), POSTed to its endpoint, signed the Standard Webhooks way, with
-- retries and a delivery log. The job is scheduled/jobs/alert-webhooks.ts; the settings, their
-- checks and the signing secret are core/alerts/.
--
-- Settings: organizations.properties.alerts = {"webhook_url": "https://…", "events": [...]}.
-- Owners and admins may write them directly (RLS), so the job checks them again before each send.
--
-- The signing secret is never stored: it is derived from the server secret (PRECISE_SECRET) and
-- the organization's secret_version (core/alerts/settings.ts), the way the DSP integrations'
-- secrets are. alert_webhooks keeps the version and a SHA-256 of the secret it made, so that a
-- process with another server secret refuses to sign instead of signing with a secret the
-- receiver does not know.
--
-- Enqueueing (the outbox): a step following its own arrival watermark over events.ingest_xid
-- (rollup_state 'alert_webhooks'), as attribution and creative fatigue do. It reads the events
-- that arrived since the watermark and moves it in the same transaction, and every transaction
-- below pg_snapshot_xmin has finished, so each event is read by exactly one step; the primary key
-- (org_id, event_id) makes a delivery of an event once even if it were read twice. The writers of
-- those events (private.fatigue_apply) are left as they are, the ingest path gets no trigger, and
-- retention (private.drop_event_partition checks every rollup_state row) waits for this reader too.
-- The delivery keeps its payload, so a delivery outlives its event's partition.

create table public.alert_webhooks (
  org_id uuid primary key references public.organizations (id) on delete cascade,
  -- the signing secret is whsec_ + HMAC(server secret, org and this version); bumped by a rotation
  secret_version integer not null default 1 check (secret_version >= 1),
  -- SHA-256 (hex) of the current secret: a process deriving another one refuses to sign
  secret_hash text not null check (secret_hash ~ '^[0-9a-f]{64}$'),
  -- for a day after a rotation, deliveries carry the previous secret's signature too
  secret_rotated_at timestamptz,
  -- the URL that answered 410 Gone: nothing goes to it until an operator sets the alerts again
  disabled_url text,
  disabled_at timestamptz,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);
comment on table public.alert_webhooks is
  'Per organization: the alert webhook''s secret version (the secret itself is derived, never stored) and whether its URL is disabled (backend writes, members read).';

create table public.alert_deliveries (
  org_id uuid not null references public.organizations (id) on delete cascade,
  -- the event's id: the webhook-id header, the receiver's idempotency key
  event_id text not null,
  event_type text not null,
  -- the body's JSON, built once from the event: every attempt sends the same
  payload jsonb not null check (jsonb_typeof(payload) = 'object'),
  -- the URL of the last attempt (at first: the one configured when the event arrived)
  url text not null,
  status text not null default 'pending' check (status in ('pending', 'delivered', 'failed')),
  attempts integer not null default 0,
  -- when a pending delivery is due (a run claims it by moving this a lease ahead); null once done
  next_attempt_at timestamptz,
  last_attempt_at timestamptz,
  -- the endpoint's HTTP status, null when none came back (refused, timed out, not sent)
  last_status integer,
  last_error text,
  delivered_at timestamptz,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  primary key (org_id, event_id)
);
comment on table public.alert_deliveries is
  'The alert webhook deliveries and their attempts: the delivery log (backend writes, members read).';
create index alert_deliveries_due_idx on public.alert_deliveries (next_attempt_at) where status = 'pending';
create index alert_deliveries_log_idx on public.alert_deliveries (org_id, created_at desc);

create trigger touch_updated_at before update on public.alert_webhooks
  for each row execute function private.touch_updated_at();
create trigger touch_updated_at before update on public.alert_deliveries
  for each row execute function private.touch_updated_at();

alter table public.alert_webhooks enable row level security;
create policy "alert_webhooks: members read" on public.alert_webhooks
  for select to authenticated using (org_id in (select private.user_org_ids()));
alter table public.alert_deliveries enable row level security;
create policy "alert_deliveries: members read" on public.alert_deliveries
  for select to authenticated using (org_id in (select private.user_org_ids()));
-- No insert, update or delete policy: members cannot write; the backend (service_role) does.
revoke all on table public.alert_webhooks, public.alert_deliveries from anon, authenticated;
grant select on table public.alert_webhooks, public.alert_deliveries to authenticated;
grant all on table public.alert_webhooks, public.alert_deliveries to service_role;

-- From now on: events that arrived before alerts existed are never sent.
insert into public.rollup_state (name, watermark) values ('alert_webhooks', pg_snapshot_xmin(pg_current_snapshot()));

-- ---------------------------------------------------------------------------------------------
-- The job's steps
-- ---------------------------------------------------------------------------------------------

-- The events an organization may be alerted to; its alerts.events picks among them.
create function private.alert_event_types() returns text[]
language sql
immutable
set search_path = ''
as $$ select array['creative_fatigue_detected', 'creative_fatigue_cleared'] $$;

-- Enqueues a delivery for each system event of an alert type that arrived since the watermark,
-- for the organizations whose alerts ask for it (settings present, a secret issued, the URL not
-- disabled), due at p_now (the job's clock), atomically with the watermark. Never two at once (a
-- second caller returns skipped). Retention runs it too, before it drops a day.
create function private.alert_enqueue_step(p_now timestamptz default now()) returns jsonb
language plpgsql
set search_path = ''
as $$
declare
  v_started timestamptz := clock_timestamp();
  v_from xid8;
  v_to xid8 := pg_snapshot_xmin(pg_current_snapshot());
  v_added bigint := 0;
begin
  if not pg_try_advisory_xact_lock(hashtext('precise.alert_webhooks')) then
    return jsonb_build_object('skipped', true, 'reason', 'another alert-webhooks run is under way');
  end if;
  select s.watermark into v_from from public.rollup_state s where s.name = 'alert_webhooks' for update;
  v_to := greatest(v_to, v_from);
  -- no organization has alerts: nothing to read, the watermark moves on
  if exists (select from public.alert_webhooks) then
    insert into public.alert_deliveries (org_id, event_id, event_type, payload, url, next_attempt_at)
    select e.org_id, e.event_id, e.type,
           jsonb_build_object(
             'type', e.type,
             'timestamp', to_char(e.occurred_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
             'data', jsonb_build_object(
               'event_id', e.event_id,
               'organization_id', e.org_id,
               'campaign_id', e.campaign_id,
               'creative_id', e.creative_id,
               'occurred_at', to_char(e.occurred_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
               'evidence', e.properties)),
           coalesce(o.properties -> 'alerts' ->> 'webhook_url', ''),
           p_now
    from public.events e
    join public.organizations o on o.id = e.org_id
    join public.alert_webhooks w on w.org_id = e.org_id
    where e.ingest_xid >= v_from and e.ingest_xid < v_to
      and e.type = any (private.alert_event_types())
      -- written by Precise itself: a sender's context never has this key
      and e.context ? 'system'
      and jsonb_typeof(o.properties -> 'alerts') = 'object'
      -- alerts.events picks; absent, every type; malformed, enqueued (the send says what is wrong)
      and case jsonb_typeof(o.properties -> 'alerts' -> 'events')
            when 'array' then (o.properties -> 'alerts' -> 'events') ? e.type
            else true
          end
      and w.disabled_url is distinct from (o.properties -> 'alerts' ->> 'webhook_url')
    on conflict (org_id, event_id) do nothing;
    get diagnostics v_added = row_count;
  end if;
  update public.rollup_state s
     set watermark = v_to, last_run_at = v_started,
         last_duration_ms = (extract(epoch from clock_timestamp() - v_started) * 1000)::integer,
         last_events = v_added, runs = s.runs + 1, updated_at = now()
   where s.name = 'alert_webhooks';
  return jsonb_build_object('skipped', false, 'enqueued', v_added);
end
$$;

-- Claims up to p_limit pending deliveries due at p_now: moves them p_lease ahead (a run that dies
-- leaves them to the run after the lease), and returns each with its organization's settings and
-- secret state. Deliveries claimed by a run still under way are skipped.
create function private.alert_claim_deliveries(p_now timestamptz, p_limit integer, p_lease interval)
returns table (
  org_id uuid, event_id text, attempts integer, payload jsonb, url text,
  alerts jsonb, secret_version integer, secret_hash text, secret_rotated_at timestamptz, disabled_url text
)
language sql
set search_path = ''
as $$
  with due as (
    select d.org_id, d.event_id
    from public.alert_deliveries d
    where d.status = 'pending' and d.next_attempt_at <= p_now
    order by d.next_attempt_at
    limit p_limit
    for update skip locked
  ), claimed as (
    update public.alert_deliveries d
       set next_attempt_at = p_now + p_lease
      from due
     where d.org_id = due.org_id and d.event_id = due.event_id
    returning d.org_id, d.event_id, d.attempts, d.payload, d.url
  )
  select c.org_id, c.event_id, c.attempts, c.payload, c.url,
         o.properties -> 'alerts', w.secret_version, w.secret_hash, w.secret_rotated_at, w.disabled_url
  from claimed c
  left join public.organizations o on o.id = c.org_id
  left join public.alert_webhooks w on w.org_id = c.org_id
$$;

-- Records what the attempts of a run came to, and disables the URLs that answered 410:
--   p_results: [{org_id, event_id, url, status ('pending' | 'delivered' | 'failed'), counted
--                (an attempt was made), at, http_status, error, next_attempt_at, disable}, ...]
-- Only pending deliveries change (a delivery recorded twice keeps its first outcome).
create function private.alert_record_attempts(p_results jsonb) returns integer
language plpgsql
set search_path = ''
as $$
declare
  v_recorded integer;
begin
  update public.alert_deliveries d
     set status = r.status,
         url = coalesce(r.url, d.url),
         attempts = d.attempts + case when r.counted then 1 else 0 end,
         last_attempt_at = case when r.counted then r.at else d.last_attempt_at end,
         last_status = r.http_status,
         last_error = left(r.error, 500),
         next_attempt_at = case when r.status = 'pending' then r.next_attempt_at end,
         delivered_at = case when r.status = 'delivered' then r.at end
    from jsonb_to_recordset(p_results) as r(org_id uuid, event_id text, url text, status text, counted boolean,
                                            at timestamptz, http_status integer, error text, next_attempt_at timestamptz,
                                            disable boolean)
   where d.org_id = r.org_id and d.event_id = r.event_id and d.status = 'pending'
     and r.status in ('pending', 'delivered', 'failed');
  get diagnostics v_recorded = row_count;

  update public.alert_webhooks w
     set disabled_url = r.url, disabled_at = r.at
    from jsonb_to_recordset(p_results) as r(org_id uuid, url text, at timestamptz, disable boolean)
   where w.org_id = r.org_id and r.disable;
  return v_recorded;
end
$$;

-- The delivery log is kept for 30 days after a delivery is done.
create function private.alert_prune_deliveries(p_now timestamptz) returns bigint
language plpgsql
set search_path = ''
as $$
declare
  v_pruned bigint;
begin
  delete from public.alert_deliveries d
   where d.status <> 'pending' and d.updated_at < p_now - interval '30 days';
  get diagnostics v_pruned = row_count;
  return v_pruned;
end
$$;

revoke all on function
  private.alert_event_types(),
  private.alert_enqueue_step(timestamptz),
  private.alert_claim_deliveries(timestamptz, integer, interval),
  private.alert_record_attempts(jsonb),
  private.alert_prune_deliveries(timestamptz)
  from public;
grant execute on function
  private.alert_event_types(),
  private.alert_enqueue_step(timestamptz),
  private.alert_claim_deliveries(timestamptz, integer, interval),
  private.alert_record_attempts(jsonb),
  private.alert_prune_deliveries(timestamptz)
  to service_role;

-- ---------------------------------------------------------------------------------------------
-- Reading: the delivery log of one organization, newest first (GET /v1/alerts/deliveries), and
-- its webhook's state. Never a secret: none is stored.
-- ---------------------------------------------------------------------------------------------

create function public.alert_delivery_log(p_org_id uuid, p_status text, p_limit integer) returns jsonb
language sql
stable
set search_path = ''
as $$
  select jsonb_build_object(
    'webhook', (
      select jsonb_build_object(
        'webhook_url', o.properties -> 'alerts' -> 'webhook_url',
        'events', o.properties -> 'alerts' -> 'events',
        'secret_version', w.secret_version,
        'secret_rotated_at', w.secret_rotated_at,
        'disabled_url', w.disabled_url,
        'disabled_at', w.disabled_at)
      from public.organizations o
      left join public.alert_webhooks w on w.org_id = o.id
      where o.id = p_org_id),
    'rows', coalesce((
      select jsonb_agg(jsonb_build_object(
               'event_id', d.event_id, 'event_type', d.event_type, 'url', d.url, 'status', d.status,
               'attempts', d.attempts, 'next_attempt_at', d.next_attempt_at, 'last_attempt_at', d.last_attempt_at,
               'last_status', d.last_status, 'last_error', d.last_error, 'delivered_at', d.delivered_at,
               'created_at', d.created_at) order by d.created_at desc, d.event_id)
      from (
        select * from public.alert_deliveries d
        where d.org_id = p_org_id and (p_status is null or d.status = p_status)
        order by d.created_at desc, d.event_id
        limit greatest(1, least(coalesce(p_limit, 100), 1000))
      ) d), '[]'))
$$;
comment on function public.alert_delivery_log(uuid, text, integer) is
  'GET /v1/alerts/deliveries: an organization''s alert webhook state and its newest deliveries (backend only).';

revoke all on function public.alert_delivery_log(uuid, text, integer) from public, anon, authenticated;
grant execute on function public.alert_delivery_log(uuid, text, integer) to service_role;
