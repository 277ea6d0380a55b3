import { createApiKey, createOrganization } from '../../core/admin.ts';
import type { EventSink } from '../../core/ingest/batch.ts';
import type { EventWriter } from '../../core/ingest/writer.ts';
import { createApp, type App } from '../../functions/app.ts';
import type { Services } from '../../functions/env.ts';
import { createServices, sqlStores } from '../../functions/services.ts';
import * as attributionModels from '../../scheduled/attribution/models.ts';
import * as fatigueDetector from '../../scheduled/fatigue/detector.ts';
import { directSink } from '../../functions/sinks/direct.ts';
import { GroupCommitSink } from '../../functions/sinks/group-commit.ts';
import { createTestDatabase, type TestDatabase } from './database.ts';

/**
 * A real database with one organization and its keys, and the Hono app on the Node services
 * (group commit by default), driven through app.request().
 */
export interface IngestHarness {
  test: TestDatabase;
  app: App;
  services: Services;
  orgId: string;
  publishableKey: string;
  ingestKey: string;
  readOnlyKey: string;
  /** All events of the org, oldest first. */
  events(): Promise<StoredEvent[]>;
  failedEvents(): Promise<Array<{ source: string; reason_code: string; field: string | null; payload: string; properties: any }>>;
  close(): Promise<void>;
}

export interface StoredEvent {
  event_id: string;
  type: string;
  occurred_at: Date;
  received_at: Date;
  campaign_id: string | null;
  creative_id: string | null;
  asset_ids: string[];
  user_key: string | null;
  click_id: string | null;
  value: string | null;
  currency: string | null;
  status: string | null;
  properties: Record<string, unknown>;
  context: Record<string, any>;
  whole: string;
}

export const IP_HASH_SECRET = 'test-secret-for-ip-hashing-0123456789';
export const SERVER_SECRET = 'test-server-secret-0123456789-0123456789';

export async function createIngestHarness(options: { sink?: (writer: EventWriter) => EventSink; writer?: (test: TestDatabase) => EventWriter } = {}): Promise<IngestHarness> {
  const test = await createTestDatabase();
  const org = await createOrganization(test.db, { name: 'Ingest Co' });
  const publishable = await createApiKey(test.db, { orgId: org.id, kind: 'publishable' });
  const ingest = await createApiKey(test.db, { orgId: org.id, kind: 'secret', scopes: ['ingest'] });
  const readOnly = await createApiKey(test.db, { orgId: org.id, kind: 'secret', scopes: ['read'] });
  const stores = sqlStores(test.db);
  const writer = options.writer ? options.writer(test) : stores.writer;
  const sink = options.sink ? options.sink(writer) : new GroupCommitSink(writer, { maxWaitMs: 1 });
  const services = createServices({
    stores: { ...stores, writer },
    sink,
    serverSecret: SERVER_SECRET,
    attributionMath: attributionModels,
    fatigueMath: fatigueDetector,
    ipHashSecret: IP_HASH_SECRET,
    // app.request() has no socket: tests give the client IP as a proxy would
    clientIp: (c) => c.req.header('x-forwarded-for')?.split(',')[0]?.trim(),
  });
  const app = createApp({ services: () => services });
  return {
    test,
    app,
    services,
    orgId: org.id,
    publishableKey: publishable.key,
    ingestKey: ingest.key,
    readOnlyKey: readOnly.key,
    async events() {
      const { rows } = await test.db.query<StoredEvent>(
        `select event_id, type, occurred_at, received_at, campaign_id, creative_id, asset_ids, user_key, click_id,
                value::text as value, currency, status, properties, context, row_to_json(e)::text as whole
         from events e where org_id = $1 order by received_at, event_id`,
        [org.id],
      );
      return rows;
    },
    async failedEvents() {
      const { rows } = await test.db.query<any>(
        'select source, reason_code, field, payload, properties from failed_events where org_id = $1 order by received_at, id',
        [org.id],
      );
      return rows;
    },
    async close() {
      await sink.close?.();
      await test.drop();
    },
  };
}

export { directSink };
