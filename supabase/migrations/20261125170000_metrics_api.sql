-- GET /v1/metrics refuses what it cannot answer, in the one SQL function every driver calls
-- (SQL on Postgres and PGlite, supabase-js rpc on a Supabase edge deployment):
--   * an entity the caller may not see: another organization, another org's campaign, a data
--     asset neither owned nor granted; answered {"refused": "entity_id"} (the API's 404), never
--     a series of zeros that would confirm nothing and hide the mistake;
--   * a time zone Postgres does not know (its tz database may be older than the runtime's):
--     {"refused": "tz"} (the API's 400), instead of an error the rpc path would turn into a 503;
--   * amounts without a currency: their own currency, '' in "currencies", so that they are never
--     added to EUR amounts unnoticed; p_currency = '' selects them.

-- Whether an organization may read an entity's metrics. Campaigns: its own. Data assets: its own,
-- or granted to it (any grant, in force or not: the metrics are its own history of the asset).
-- Creatives are free text on events: whatever its own metrics hold. Ids are compared as text,
-- within the org's rows, so that an id that is not a UUID is simply not found.
create function private.metric_entity_visible(p_org_id uuid, p_entity_type text, p_entity_id text)
returns boolean
language sql
stable
set search_path = ''
as $$
  select case p_entity_type
    when 'organization' then p_entity_id = p_org_id::text
    when 'creative' then true
    when 'campaign' then exists (
      select from public.campaigns c where c.org_id = p_org_id and c.id::text = p_entity_id)
    when 'data_asset' then exists (
      select from public.data_assets a where a.org_id = p_org_id and a.id::text = p_entity_id)
      or exists (
        select from public.permissions g
        join public.data_assets a on a.org_id = g.org_id and (g.resource_id is null or a.id = g.resource_id)
        where g.grantee_type = 'organization' and g.grantee_id = p_org_id and g.resource_type = 'data_asset'
          and a.id::text = p_entity_id)
    else false
  end
$$;

-- Whether AT TIME ZONE reads p_name (an exception block: pg_timezone_names reads every zone file,
-- some 50 ms a call).
create function private.time_zone_known(p_name text)
returns boolean
language plpgsql
stable
set search_path = ''
as $$
begin
  perform now() at time zone p_name;
  return true;
exception when invalid_parameter_value then
  return false;
end
$$;

revoke all on function private.metric_entity_visible(uuid, text, text), private.time_zone_known(text) from public;
grant execute on function private.metric_entity_visible(uuid, text, text), private.time_zone_known(text) to service_role;

create or replace function public.metric_buckets(
  p_org_id uuid,
  p_entity_type text,
  p_entity_id text,
  p_metrics text[],
  p_from timestamptz,
  p_to timestamptz,
  p_granularity text,
  p_time_zone text,
  p_currency text default null
)
returns jsonb
language plpgsql
stable
set search_path = ''
as $$
begin
  if not private.metric_entity_visible(p_org_id, p_entity_type, p_entity_id) then
    return jsonb_build_object('refused', 'entity_id');
  end if;
  if not private.time_zone_known(p_time_zone) then
    return jsonb_build_object('refused', 'tz');
  end if;
  return (
    with chosen as (
      -- amounts restricted to the currency asked for ('' = none); counters have no currency
      select s.id, s.metric,
             case when s.metric in ('spend', 'conversion_value') then coalesce(s.dimensions ->> 'currency', '') end as currency
      from public.metric_series s
      where s.org_id = p_org_id and s.entity_type = p_entity_type and s.entity_id = p_entity_id
        and s.granularity = '15m' and s.metric = any (p_metrics)
        and (p_currency is null or s.metric not in ('spend', 'conversion_value')
             or coalesce(s.dimensions ->> 'currency', '') = p_currency)
    ),
    points as (
      select c.metric, c.currency, p.bucket_start, p.value
      from chosen c
      join public.metric_points p on p.org_id = p_org_id and p.series_id = c.id
      where p.bucket_start >= p_from and p.bucket_start < p_to
    ),
    summed as (
      select date_trunc(p_granularity, p.bucket_start at time zone p_time_zone) as local_bucket, p.metric, sum(p.value) as value
      from points p
      group by 1, 2
    ),
    buckets as (
      select generate_series(
               date_trunc(p_granularity, p_from at time zone p_time_zone),
               (p_to at time zone p_time_zone) - interval '1 microsecond',
               ('1 ' || p_granularity)::interval) as local_bucket
    )
    select jsonb_build_object(
      -- the currencies of the amounts summed ('' for none), so that the caller can refuse to add USD to EUR
      'currencies', coalesce((select jsonb_agg(distinct p.currency) from points p where p.currency is not null), '[]'),
      -- one array per bucket and metric: local time, offset in minutes, metric (or null), sum
      'rows', coalesce((
        select jsonb_agg(jsonb_build_array(
                 to_char(b.local_bucket, 'YYYY-MM-DD"T"HH24:MI:SS'),
                 (extract(epoch from b.local_bucket - ((b.local_bucket at time zone p_time_zone) at time zone 'UTC')) / 60)::integer,
                 v.metric, v.value::text) order by b.local_bucket, v.metric)
        from buckets b
        left join summed v on v.local_bucket = b.local_bucket), '[]'))
  );
end
$$;
comment on function public.metric_buckets(uuid, text, text, text[], timestamptz, timestamptz, text, text, text) is
  'GET /v1/metrics: one entity''s metrics summed into local hours, days, weeks or months, or {"refused": field} (backend only).';
