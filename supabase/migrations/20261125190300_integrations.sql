-- DSP integrations and their signed webhooks. An integration's signing secret (whsec_…) is
-- derived from the server secret and the integration id: it is never stored, so it can never be
-- read back; the server recomputes it to verify a delivery. properties.mapping holds the
-- declarative mapping of the DSP's payload to canonical events.

create table public.integrations (
  id uuid primary key default gen_random_uuid(),
  org_id uuid not null references public.organizations (id) on delete cascade,
  name text not null check (length(btrim(name)) between 1 and 200),
  -- dsp_webhook today; any snake_case kind later
  kind text not null default 'dsp_webhook' check (kind ~ '^[a-z][a-z0-9_]{0,62}$'),
  status text not null default 'active' check (status in ('active', 'paused', 'archived')),
  -- { "mapping": {...}, "secret_version": 1 }
  properties jsonb not null default '{}' check (jsonb_typeof(properties) = 'object'),
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);
create index integrations_org_idx on public.integrations (org_id, kind);

create trigger touch_updated_at before update on public.integrations
  for each row execute function private.touch_updated_at();
create trigger audit_row_change after insert or update or delete on public.integrations
  for each row execute function private.audit_row_change();

-- integrations: members read; owners and admins write and delete.
alter table public.integrations enable row level security;
create policy "integrations: members read" on public.integrations
  for select to authenticated using (org_id in (select private.user_org_ids()));
create policy "integrations: writers insert" on public.integrations
  for insert to authenticated with check (org_id in (select private.user_org_ids_with_role(array['owner', 'admin'])));
create policy "integrations: writers update" on public.integrations
  for update to authenticated
  using (org_id in (select private.user_org_ids_with_role(array['owner', 'admin'])))
  with check (org_id in (select private.user_org_ids_with_role(array['owner', 'admin'])));
create policy "integrations: deleters delete" on public.integrations
  for delete to authenticated using (org_id in (select private.user_org_ids_with_role(array['owner', 'admin'])));
revoke all on table public.integrations from anon, authenticated;
grant select, insert, update, delete on table public.integrations to authenticated;
grant all on table public.integrations to service_role;

-- Deliveries seen within the signature tolerance, so that a replayed delivery is refused.
create table public.webhook_deliveries (
  integration_id uuid not null references public.integrations (id) on delete cascade,
  signature_hash text not null,
  org_id uuid not null,
  received_at timestamptz not null default now(),
  primary key (integration_id, signature_hash)
);
create index webhook_deliveries_time_idx on public.webhook_deliveries (integration_id, received_at);
alter table public.webhook_deliveries enable row level security;
revoke all on table public.webhook_deliveries from anon, authenticated;
grant all on table public.webhook_deliveries to service_role;

-- What the edge needs to verify and map a delivery (service_role only).
create function public.webhook_integration(p_integration_id uuid)
returns table (id uuid, org_id uuid, status text, properties jsonb)
language sql
stable
set search_path = ''
as $$
  select i.id, i.org_id, i.status, i.properties from public.integrations i where i.id = p_integration_id
$$;

-- A DSP's campaign id to ours: campaigns.properties.dsp_settings.external_campaign_id, or any
-- entry of campaigns.properties.external_ids.
create function public.campaign_by_external_id(p_org_id uuid, p_external_id text)
returns uuid
language sql
stable
set search_path = ''
as $$
  select c.id from public.campaigns c
  where c.org_id = p_org_id
    and (c.properties -> 'dsp_settings' ->> 'external_campaign_id' = p_external_id
         or coalesce(c.properties -> 'external_ids', '[]') ? p_external_id)
  order by c.created_at
  limit 1
$$;

-- One delivery in one transaction: claim it (a replay finds it claimed), then ingest its
-- events and failures. Claims older than the tolerance are cleared as we go.
create function public.ingest_webhook(p_integration_id uuid, p_signature_hash text, p_batch jsonb)
returns jsonb
language plpgsql
set search_path = ''
as $$
declare
  v_org uuid;
  v_claimed integer;
begin
  select i.org_id into v_org from public.integrations i where i.id = p_integration_id;
  if v_org is null then
    raise exception 'unknown integration %', p_integration_id using errcode = 'no_data_found';
  end if;
  delete from public.webhook_deliveries d
   where d.integration_id = p_integration_id and d.received_at < now() - interval '10 minutes';
  insert into public.webhook_deliveries (integration_id, signature_hash, org_id)
  values (p_integration_id, p_signature_hash, v_org)
  on conflict do nothing;
  get diagnostics v_claimed = row_count;
  if v_claimed = 0 then
    return jsonb_build_object('replayed', true);
  end if;
  return public.ingest_events(p_batch) || jsonb_build_object('replayed', false);
end
$$;

revoke all on function public.webhook_integration(uuid) from public, anon, authenticated;
revoke all on function public.campaign_by_external_id(uuid, text) from public, anon, authenticated;
revoke all on function public.ingest_webhook(uuid, text, jsonb) from public, anon, authenticated;
grant execute on function public.webhook_integration(uuid) to service_role;
grant execute on function public.campaign_by_external_id(uuid, text) to service_role;
grant execute on function public.ingest_webhook(uuid, text, jsonb) to service_role;
