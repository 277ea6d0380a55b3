import { alertSecretHash, alertSigningSecret, parseAlertSettings, type AlertEvent, type AlertTargetOptions } from './alerts/settings.ts';
import type { Database, TransactionHandle } from './db/port.ts';
import { PreciseError } from './errors.ts';
import { isUuid } from './events/canonical.ts';
import { parseMapping } from './webhooks/delivery.ts';
import { displayPrefix, generateKey, hashKey, KEY_SCOPES, type KeyKind, type KeyScope } from './keys.ts';

/**
 * Operator actions on organizations, keys, campaigns, integrations and alert webhooks (the CLI
 * calls these; an admin API can later). Each runs in a transaction labelled with the actor, so
 * the audit trail says who.
 */
async function asActor<T>(db: Database, actor: string, fn: (tx: TransactionHandle) => Promise<T>): Promise<T> {
  return db.transaction(async (tx) => {
    await tx.query(`select set_config('precise.actor', $1, true)`, [actor]);
    return fn(tx);
  });
}

export function assertUuid(value: string, field: string): void {
  if (!isUuid(value)) throw new PreciseError('invalid_argument', `${field} must be a UUID, got "${value}"`, { field });
}

export interface Organization {
  id: string;
  name: string;
  kind: string;
  created_at: Date;
}

export async function createOrganization(
  db: Database,
  input: { name: string; kind?: string; properties?: Record<string, unknown> },
  actor = 'cli',
): Promise<Organization> {
  const name = input.name.trim();
  if (!name || name.length > 200) {
    throw new PreciseError('invalid_argument', 'name must be 1 to 200 characters', { field: 'name' });
  }
  const kind = input.kind ?? 'both';
  if (!['data_owner', 'media_buyer', 'both'].includes(kind)) {
    throw new PreciseError('invalid_argument', 'kind must be data_owner, media_buyer or both', { field: 'kind' });
  }
  return asActor(db, actor, async (tx) => {
    const { rows } = await tx.query<Organization>(
      `insert into public.organizations (name, kind, properties) values ($1, $2, $3)
       returning id, name, kind, created_at`,
      [name, kind, input.properties ?? {}],
    );
    return rows[0]!;
  });
}

async function assertOrganizationExists(tx: TransactionHandle, orgId: string): Promise<void> {
  assertUuid(orgId, 'org');
  const { rows } = await tx.query('select 1 from public.organizations where id = $1', [orgId]);
  if (rows.length === 0) throw new PreciseError('not_found', `no organization ${orgId}`, { field: 'org' });
}

export interface CreatedKey {
  id: string;
  org_id: string;
  kind: KeyKind;
  prefix: string;
  scopes: KeyScope[];
  name: string | null;
  properties: Record<string, unknown>;
  /** The clear key: returned once, never stored. */
  key: string;
}

export async function createApiKey(
  db: Database,
  input: { orgId: string; kind: KeyKind; scopes?: KeyScope[]; name?: string; properties?: Record<string, unknown> },
  actor = 'cli',
): Promise<CreatedKey> {
  if (!['publishable', 'secret', 'postback'].includes(input.kind)) {
    throw new PreciseError('invalid_argument', 'kind must be publishable, secret or postback', { field: 'kind' });
  }
  const scopes = [...new Set(input.scopes ?? [])];
  const unknown = scopes.filter((scope) => !KEY_SCOPES.includes(scope));
  if (unknown.length > 0) {
    throw new PreciseError('invalid_argument', `unknown scope ${unknown.join(', ')} (use ${KEY_SCOPES.join(', ')})`, {
      field: 'scopes',
    });
  }
  if (input.kind === 'secret' && scopes.length === 0) {
    throw new PreciseError('invalid_argument', 'a secret key needs at least one scope (ingest, read, admin)', {
      field: 'scopes',
    });
  }
  if (input.kind !== 'secret' && scopes.length > 0) {
    throw new PreciseError('invalid_argument', `a ${input.kind} key takes no scopes: it may only ingest`, {
      field: 'scopes',
    });
  }
  const key = generateKey(input.kind);
  const keyHash = hashKey(key);
  return asActor(db, actor, async (tx) => {
    await assertOrganizationExists(tx, input.orgId);
    const { rows } = await tx.query<Omit<CreatedKey, 'key'>>(
      `insert into public.api_keys (org_id, kind, name, prefix, key_hash, scopes, properties)
       values ($1, $2, $3, $4, $5, $6, $7)
       returning id, org_id, kind, prefix, scopes, name, properties`,
      [input.orgId, input.kind, input.name ?? null, displayPrefix(key), keyHash, scopes, input.properties ?? {}],
    );
    return { ...rows[0]!, key };
  });
}

export const CAMPAIGN_STATUSES = ['draft', 'active', 'paused', 'completed', 'archived'];

export interface Campaign {
  id: string;
  org_id: string;
  name: string;
  status: string;
  properties: Record<string, unknown>;
}

export async function createCampaign(
  db: Database,
  input: { orgId: string; name: string; status?: string; properties?: Record<string, unknown> },
  actor = 'cli',
): Promise<Campaign> {
  const name = input.name.trim();
  if (!name || name.length > 200) {
    throw new PreciseError('invalid_argument', 'name must be 1 to 200 characters', { field: 'name' });
  }
  const status = input.status ?? 'draft';
  if (!CAMPAIGN_STATUSES.includes(status)) {
    throw new PreciseError('invalid_argument', `status must be one of ${CAMPAIGN_STATUSES.join(', ')}`, {
      field: 'status',
    });
  }
  const properties = input.properties ?? {};
  if (typeof properties !== 'object' || properties === null || Array.isArray(properties)) {
    throw new PreciseError('invalid_argument', 'properties must be a JSON object', { field: 'properties' });
  }
  return asActor(db, actor, async (tx) => {
    await assertOrganizationExists(tx, input.orgId);
    const { rows } = await tx.query<Campaign>(
      `insert into public.campaigns (org_id, name, status, properties) values ($1, $2, $3, $4)
       returning id, org_id, name, status, properties`,
      [input.orgId, name, status, properties],
    );
    return rows[0]!;
  });
}

export interface Integration {
  id: string;
  org_id: string;
  name: string;
  kind: string;
  properties: Record<string, unknown>;
}

/** A DSP integration; its webhook secret is derived (see core/webhooks/delivery.ts), never stored. */
export async function createIntegration(
  db: Database,
  input: { orgId: string; name: string; mapping?: unknown },
  actor = 'cli',
): Promise<Integration> {
  const name = input.name.trim();
  if (!name || name.length > 200) {
    throw new PreciseError('invalid_argument', 'name must be 1 to 200 characters', { field: 'name' });
  }
  const properties: Record<string, unknown> = { secret_version: 1 };
  if (input.mapping !== undefined) properties.mapping = parseMapping(input.mapping);
  return asActor(db, actor, async (tx) => {
    await assertOrganizationExists(tx, input.orgId);
    const { rows } = await tx.query<Integration>(
      `insert into public.integrations (org_id, name, properties) values ($1, $2, $3)
       returning id, org_id, name, kind, properties`,
      [input.orgId, name, properties],
    );
    return rows[0]!;
  });
}

export interface AlertWebhook {
  org_id: string;
  webhook_url: string;
  events: AlertEvent[];
  secret_version: number;
  /** The signing secret: only when it was just made (the first time, or a rotation); never stored. */
  secret?: string;
}

/**
 * Sets an organization's alert webhook (organizations.properties.alerts), checked; issues its
 * signing secret the first time (returned then, and on a rotation only). Setting it again
 * re-enables a URL that answered 410.
 */
export async function setAlertWebhook(
  db: Database,
  input: { orgId: string; url: string; events?: string[]; rotateSecret?: boolean },
  serverSecret: string,
  options: AlertTargetOptions = {},
  actor = 'cli',
): Promise<AlertWebhook> {
  const settings = parseAlertSettings({ webhook_url: input.url, ...(input.events ? { events: input.events } : {}) }, options);
  const alerts = { webhook_url: settings.webhookUrl.href, events: settings.events };
  return asActor(db, actor, async (tx) => {
    await assertOrganizationExists(tx, input.orgId);
    await tx.query(`update public.organizations set properties = properties || jsonb_build_object('alerts', $2::jsonb) where id = $1`, [
      input.orgId,
      JSON.stringify(alerts),
    ]);
    const { rows } = await tx.query<{ secret_version: number; secret_hash: string }>(
      `select secret_version, secret_hash from public.alert_webhooks where org_id = $1 for update`,
      [input.orgId],
    );
    const current = rows[0]?.secret_version;
    const version = current === undefined ? 1 : input.rotateSecret ? current + 1 : current;
    const secret = alertSigningSecret(serverSecret, input.orgId, version);
    if (version === current && alertSecretHash(secret) !== rows[0]!.secret_hash) {
      throw new PreciseError('conflict', 'the signing secret was issued under another server secret (PRECISE_SECRET): use that one, or rotate the secret', {
        field: 'rotate-secret',
      });
    }
    await tx.query(
      `insert into public.alert_webhooks (org_id, secret_version, secret_hash) values ($1, $2, $3)
       on conflict (org_id) do update
         set secret_version = excluded.secret_version, secret_hash = excluded.secret_hash,
             secret_rotated_at = case when excluded.secret_version <> public.alert_webhooks.secret_version then now()
                                      else public.alert_webhooks.secret_rotated_at end,
             disabled_url = null, disabled_at = null`,
      [input.orgId, version, alertSecretHash(secret)],
    );
    return { org_id: input.orgId, ...alerts, secret_version: version, ...(version !== current ? { secret } : {}) };
  });
}

/** Turns an organization's alerts off: its settings go; deliveries still pending then fail, unsent. */
export async function removeAlertWebhook(db: Database, orgId: string, actor = 'cli'): Promise<{ org_id: string; removed: boolean }> {
  return asActor(db, actor, async (tx) => {
    await assertOrganizationExists(tx, orgId);
    const { rowCount } = await tx.query(`update public.organizations set properties = properties - 'alerts' where id = $1 and properties ? 'alerts'`, [orgId]);
    return { org_id: orgId, removed: rowCount > 0 };
  });
}
