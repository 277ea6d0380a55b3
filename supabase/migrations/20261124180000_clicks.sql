-- Click redirects: the edge reads a campaign's settings (the click allow-list in
-- properties.click_allow_list) through this function, org-scoped, from Postgres or by rpc.
create function public.campaign_properties(p_org_id uuid, p_campaign_id uuid)
returns jsonb
language sql
stable
set search_path = ''
as $$
  select c.properties from public.campaigns c where c.org_id = p_org_id and c.id = p_campaign_id
$$;
revoke all on function public.campaign_properties(uuid, uuid) from public, anon, authenticated;
grant execute on function public.campaign_properties(uuid, uuid) to service_role;

-- Clicks are looked up by click_id (postbacks, attribution); events_click_idx serves it.
comment on function public.campaign_properties(uuid, uuid) is
  'A campaign''s properties for the edge (service_role only): click_allow_list, external ids.';
