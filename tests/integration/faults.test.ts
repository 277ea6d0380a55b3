import { describe, expect, it } from 'vitest';
import { canRunFaults, formatTable, runFaults, SHORT, type ScenarioResult } from '../../bench/faults.ts';
import { BACKEND } from '../helpers/database.ts';

// The short form of `npm run bench:faults`: pixels through the real Node server (a child
// process) into a throwaway Postgres cluster of its own (port 5598, never the shared server),
// with Postgres restarted, then the server SIGKILLed, mid-load; and a control server that
// answers before its write commits, to show the count sees a loss when there is one. It needs
// root and Debian's pg_createcluster, and runs once per CI (the Postgres run): it uses no test
// database.
describe('faults mid-load: Postgres restart, server SIGKILL', () => {
  it.runIf(BACKEND === 'postgres' && canRunFaults())(
    'loses no acknowledged pixel, and stores each pixel with an eid exactly once',
    async () => {
      const results = await runFaults({
        ...SHORT,
        concurrency: 64,
        deadlineMs: 30_000,
        scenarios: [
          { fault: 'postgres-restart', eids: true },
          { fault: 'sigkill', eids: true },
          // a server that answers before its write commits: the same count must see its loss
          { fault: 'sigkill', eids: true, server: 'ack-before-commit' },
        ],
        cluster: 'precisefaults_test',
        pgPort: 5598,
        log: () => {},
      });
      console.log(formatTable(results));
      expect(results.map((r) => [r.fault, r.server])).toEqual([
        ['postgres-restart', 'precise'],
        ['sigkill', 'precise'],
        ['sigkill', 'ack-before-commit'],
      ]);
      for (const r of results) {
        expect(r.faults, r.scenario).toBe(1);
        // the fault was felt: requests failed and were retried
        expect(r.requests, r.scenario).toBeGreaterThan(r.sent);
        expect(r.acknowledged, r.scenario).toBe(r.sent);
        expect(r.refused, r.scenario).toBe(0);
        expect(r.extra, r.scenario).toBe(0);
      }
      const [restart, kill, control] = results as [ScenarioResult, ScenarioResult, ScenarioResult];
      for (const r of [restart, kill]) {
        expect(r.lost, r.scenario).toBe(0);
        expect(r.stored, r.scenario).toBe(r.sent);
      }
      expect(control.lost).toBeGreaterThan(0);
      expect(control.stored).toBe(control.sent - control.lost);
    },
    // each server start and Postgres restart takes seconds; the margin is for a busy machine
    120_000,
  );
});
