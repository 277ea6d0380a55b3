import { cloudflareTest } from '@cloudflare/vitest-plugin';
import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vitest/config';

// Two projects. node: unit and integration tests on Node. workers: the Worker entry inside
// workerd (Miniflare), with its queue and a Hyperdrive binding to the same real database.
// The database backend is PGlite unless DATABASE_URL points at a Postgres server, where each
// test file (and the workers project) gets a fresh database of its own.
export default defineConfig({
  test: {
    testTimeout: 60_000,
    hookTimeout: 60_000,
    projects: [
      {
        test: {
          name: 'node',
          include: ['tests/unit/**/*.test.ts', 'tests/integration/**/*.test.ts', 'tests/e2e/**/*.test.ts', 'tests/fuzz/**/*.test.ts'],
          pool: 'forks',
        },
      },
      {
        plugins: [
          cloudflareTest(({ inject }) => ({
            wrangler: { configPath: './wrangler.toml' },
            miniflare: {
              hyperdrives: { HYPERDRIVE: inject('databaseUrl') },
              bindings: {
                IP_HASH_SECRET: 'workerd-test-secret-0123456789',
                PRECISE_SECRET: 'workerd-test-server-secret-0123456789-0123',
                TEST_DATABASE_URL: inject('databaseUrl'),
                TEST_ORG_ID: inject('orgId'),
                TEST_PUBLISHABLE_KEY: inject('publishableKey'),
                TEST_INGEST_KEY: inject('ingestKey'),
                TEST_POSTBACK_TOKEN: inject('postbackToken'),
                TEST_INTEGRATION_ID: inject('integrationId'),
              },
            },
          })),
        ],
        // pg picks its Workers socket (pg-cloudflare) by the `workerd` export condition, which
        // the test runner's module loader does not apply to pg's require(); point it there.
        resolve: { alias: { 'pg-cloudflare': fileURLToPath(new URL('./node_modules/pg-cloudflare/dist/index.js', import.meta.url)) } },
        test: {
          name: 'workers',
          include: ['tests/workers/**/*.test.ts'],
          globalSetup: ['tests/workers/global-setup.ts'],
        },
      },
    ],
  },
});
