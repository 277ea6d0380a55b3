import { defineConfig } from 'vitest/config';

// Node tests: unit and integration. The database backend is PGlite unless DATABASE_URL
// points at a Postgres server, where each test file gets a fresh database of its own.
export default defineConfig({
  test: {
    include: ['tests/unit/**/*.test.ts', 'tests/integration/**/*.test.ts'],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    pool: 'forks',
    reporters: ['default'],
  },
});
