-- Demo data for a local stack or `supabase db reset`: two organizations (a media buyer and a
-- data owner), their people, data assets, campaigns with the seed's example properties, the
-- relationships between them, a data-access grant and a purchase. Fixed ids and
-- `on conflict do nothing`, so applying it twice changes nothing. No API keys: mint them with
-- `precise key create`, so that no key is ever written down in a file.

insert into auth.users (id, email, raw_user_meta_data) values
  ('0a000000-0000-4000-8000-000000000001', 'alice@demo.precise.dev', '{"display_name": "Alice (media buyer)"}'),
  ('0a000000-0000-4000-8000-000000000002', 'bob@demo.precise.dev', '{"display_name": "Bob (analyst)"}'),
  ('0a000000-0000-4000-8000-000000000003', 'carol@northwind.example', '{"display_name": "Carol (data owner)"}')
on conflict do nothing;

-- the profile trigger fills public.users; make sure of it where auth.users already had them
insert into public.users (id, email, display_name)
select id, email, raw_user_meta_data ->> 'display_name' from auth.users
where id in ('0a000000-0000-4000-8000-000000000001', '0a000000-0000-4000-8000-000000000002',
             '0a000000-0000-4000-8000-000000000003')
on conflict do nothing;

insert into public.organizations (id, name, kind, properties) values
  ('0b000000-0000-4000-8000-000000000001', 'Precise Demo Media', 'media_buyer',
   '{"subscription_tier": "enterprise", "default_currency": "USD", "timezone": "America/New_York"}'),
  ('0b000000-0000-4000-8000-000000000002', 'Northwind Data', 'data_owner',
   '{"subscription_tier": "pro", "default_currency": "EUR", "timezone": "Europe/Berlin"}')
on conflict do nothing;

insert into public.org_members (org_id, user_id, role) values
  ('0b000000-0000-4000-8000-000000000001', '0a000000-0000-4000-8000-000000000001', 'owner'),
  ('0b000000-0000-4000-8000-000000000001', '0a000000-0000-4000-8000-000000000002', 'viewer'),
  ('0b000000-0000-4000-8000-000000000002', '0a000000-0000-4000-8000-000000000003', 'owner')
on conflict do nothing;

insert into public.data_assets (id, org_id, name, asset_type, properties) values
  ('0c000000-0000-4000-8000-000000000001', '0b000000-0000-4000-8000-000000000002', 'Luxury auto intenders',
   'audience', '{"size": 1000000, "quality_score": 95, "categories": ["automotive", "luxury"], "refresh_frequency": "daily"}'),
  ('0c000000-0000-4000-8000-000000000002', '0b000000-0000-4000-8000-000000000002', 'Weekend travellers',
   'behavioral', '{"size": 420000, "quality_score": 88, "categories": ["travel"], "refresh_frequency": "weekly"}'),
  ('0c000000-0000-4000-8000-000000000003', '0b000000-0000-4000-8000-000000000002', 'Stadium visitors',
   'location', '{"size": 75000, "quality_score": 91, "categories": ["sports"], "refresh_frequency": "hourly", "custom_field": "geofence_v2"}')
on conflict do nothing;

insert into public.campaigns (id, org_id, name, status, starts_at, ends_at, properties) values
  ('0d000000-0000-4000-8000-000000000001', '0b000000-0000-4000-8000-000000000001', 'Winter Sale 2026', 'active',
   '2026-11-01T00:00:00Z', '2027-01-31T23:59:59Z',
   '{"budget": 50000,
     "currency": "USD",
     "targeting": {"age": "25-54", "interests": ["sports", "travel"], "countries": ["US", "CA"]},
     "creatives": [
       {"id": "crv-winter-300x250", "format": "banner", "size": "300x250"},
       {"id": "crv-winter-video-15s", "format": "video", "duration_s": 15}
     ],
     "dsp_settings": {"dsp": "example-dsp", "bid_strategy": "target_cpa", "target_cpa": 25, "external_campaign_id": "dsp-88412"},
     "creative_fatigue_threshold": 2000000,
     "click_allow_list": ["shop.example.com"]}'),
  ('0d000000-0000-4000-8000-000000000002', '0b000000-0000-4000-8000-000000000001', 'Stadium Nights', 'draft',
   null, null,
   '{"budget": 12000, "currency": "USD", "targeting": {"interests": ["sports"]}, "creatives": [],
     "creative_fatigue_threshold": 500000}')
on conflict do nothing;

insert into public.relationships (org_id, relationship_type, source_type, source_id, target_type, target_id, properties) values
  ('0b000000-0000-4000-8000-000000000001', 'campaign_uses_asset', 'campaign', '0d000000-0000-4000-8000-000000000001',
   'data_asset', '0c000000-0000-4000-8000-000000000001', '{"weight": 0.7}'),
  ('0b000000-0000-4000-8000-000000000001', 'campaign_uses_asset', 'campaign', '0d000000-0000-4000-8000-000000000001',
   'data_asset', '0c000000-0000-4000-8000-000000000002', '{"weight": 0.3}'),
  ('0b000000-0000-4000-8000-000000000001', 'user_manages_campaign', 'user', '0a000000-0000-4000-8000-000000000001',
   'campaign', '0d000000-0000-4000-8000-000000000001', '{}'),
  ('0b000000-0000-4000-8000-000000000002', 'asset_requires_permission', 'data_asset', '0c000000-0000-4000-8000-000000000001',
   'organization', '0b000000-0000-4000-8000-000000000002', '{"action": "use"}')
on conflict do nothing;

-- Northwind lets the demo buyer use its audience this season, up to 5M impressions, on an
-- enterprise subscription.
insert into public.permissions (id, org_id, grantee_type, grantee_id, resource_type, resource_id, action, conditions) values
  ('0e000000-0000-4000-8000-000000000001', '0b000000-0000-4000-8000-000000000002', 'organization',
   '0b000000-0000-4000-8000-000000000001', 'data_asset', '0c000000-0000-4000-8000-000000000001', 'use',
   '{"valid_from": "2026-11-01T00:00:00Z", "valid_until": "2027-02-01T00:00:00Z", "usage_limit": 5000000, "tier_required": "enterprise"}')
on conflict do nothing;

insert into public.transactions (id, org_id, counterparty_org_id, transaction_type, status, amount, currency, occurred_at, properties) values
  ('0f000000-0000-4000-8000-000000000001', '0b000000-0000-4000-8000-000000000001', '0b000000-0000-4000-8000-000000000002',
   'data_purchase', 'completed', 1250.00, 'USD', '2026-11-15T12:00:00Z',
   '{"line_items": [
      {"asset_id": "0c000000-0000-4000-8000-000000000001", "description": "CPM data fee, 500k impressions", "quantity": 500, "unit_price": 2.00, "amount": 1000.00},
      {"asset_id": "0c000000-0000-4000-8000-000000000002", "description": "CPM data fee, 125k impressions", "quantity": 125, "unit_price": 2.00, "amount": 250.00}
    ]}')
on conflict do nothing;
