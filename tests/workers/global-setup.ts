import type { TestProject } from 'vitest/node';
import { createApiKey, createIntegration, createOrganization } from '../../core/admin.ts';
import { createTestDatabase } from '../helpers/database.ts';

/**
 * Runs in Node before the workerd tests: a real database (PGlite served on a socket, or a fresh
 * Postgres database), migrated, with an organization and its keys. The Worker reaches it
 * through Miniflare's Hyperdrive binding.
 */
declare module 'vitest' {
  export interface ProvidedContext {
    databaseUrl: string;
    orgId: string;
    publishableKey: string;
    ingestKey: string;
    postbackToken: string;
    integrationId: string;
  }
}

export default async function setup(project: TestProject) {
  const test = await createTestDatabase();
  const org = await createOrganization(test.db, { name: 'Edge Co' });
  project.provide('databaseUrl', await test.connectionUrl());
  project.provide('orgId', org.id);
  project.provide('publishableKey', (await createApiKey(test.db, { orgId: org.id, kind: 'publishable' })).key);
  project.provide('ingestKey', (await createApiKey(test.db, { orgId: org.id, kind: 'secret', scopes: ['ingest'] })).key);
  project.provide('postbackToken', (await createApiKey(test.db, { orgId: org.id, kind: 'postback' })).key);
  project.provide('integrationId', (await createIntegration(test.db, { orgId: org.id, name: 'Edge DSP' })).id);
  return () => test.drop();
}
