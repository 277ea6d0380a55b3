import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BACKEND, createEmptyDatabase, type TestDatabase } from '../helpers/database.ts';
import { hasCommands, startStackProcess, type RunningStack } from '../helpers/stack.ts';

// The README's walkthrough, run verbatim: its ```sh blocks in one bash, against `precise start`
// as a child process, and what it printed compared with the outputs the README promises (the
// comment lines `# {...}` in those blocks: every JSON line printed, in order, nothing else).
const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const README = readFileSync(path.join(ROOT, 'README.md'), 'utf8');
const BASE_LINE = /^BASE=http:\/\/127\.0\.0\.1:8787$/m;
const hasBashCurlJq = hasCommands('bash', 'curl', 'jq');

/** The text of a `## ` section, up to the next one. */
function section(title: string): string {
  const start = README.indexOf(`\n## ${title}\n`);
  if (start < 0) throw new Error(`README has no section "${title}"`);
  const end = README.indexOf('\n## ', start + 1);
  return README.slice(start, end < 0 ? undefined : end);
}

const walkthrough = section('Walkthrough');
const blocks = [...walkthrough.matchAll(/^```sh\n([\s\S]*?)^```$/gm)].map((match) => match[1]!);
const promised = blocks.flatMap((block) => [...block.matchAll(/^# ([[{].*)$/gm)].map((match) => JSON.parse(match[1]!)));

/** Runs a script in `bash -euo pipefail` from the repository root; its stdout, or a thrown error with both streams. */
function runBash(script: string, env: NodeJS.ProcessEnv, timeoutMs: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn('bash', ['-euo', 'pipefail', '-c', script], { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk) => (stdout += chunk));
    child.stderr.on('data', (chunk) => (stderr += chunk));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      if (code === 0) resolve(stdout);
      else reject(new Error(`walkthrough exited ${code ?? signal}\n--- stdout\n${stdout}\n--- stderr\n${stderr}`));
    });
  });
}

const jsonLines = (text: string) =>
  text.split('\n').flatMap((line) => {
    try {
      const value: unknown = JSON.parse(line);
      return typeof value === 'object' && value !== null ? [value] : [];
    } catch {
      return [];
    }
  });

describe('the README', () => {
  it('stands alone: no paths outside the repository', () => {
    expect(README).not.toMatch(/\.\.\/|ARCHITECTURE\.md/);
  });

  it('has a walkthrough that promises the metrics it makes, with the mapping the DSP section shows', () => {
    expect(blocks.length).toBeGreaterThan(5);
    expect(walkthrough).toMatch(BASE_LINE);
    expect(promised.some((output) => 'impressions' in output && 'spend' in output && 'conversions' in output)).toBe(true);
    const heredoc = /cat > "\$MAPPING" <<'EOF'\n([\s\S]*?)\nEOF\n/.exec(walkthrough);
    const shown = /^```json\n(\{\n {2}"events_path"[\s\S]*?)^```$/m.exec(section('Connecting a network or DSP'));
    expect(heredoc && shown).toBeTruthy();
    expect(JSON.parse(heredoc![1]!)).toEqual(JSON.parse(shown![1]!));
  });
});

describe(`the README's walkthrough, verbatim (${BACKEND})`, () => {
  let dataDir: string;
  let database: TestDatabase | undefined;
  let stack: RunningStack | undefined;
  let env: Record<string, string>;

  beforeAll(async () => {
    if (!hasBashCurlJq) return;
    dataDir = await mkdtemp(path.join(tmpdir(), 'precise-readme-'));
    // The scheduler is off: its minute rollup, holding the rollup lock at the moment the
    // walkthrough runs its own, would make that one skip (the README says to run it again).
    env = { PRECISE_DATA_DIR: dataDir, PRECISE_JOBS: 'off', DATABASE_URL: '' };
    if (BACKEND === 'postgres') {
      database = await createEmptyDatabase();
      env.DATABASE_URL = database.url!;
    }
    stack = await startStackProcess(env);
  }, 120_000);
  afterAll(async () => {
    if (stack) expect(await stack.stop()).toBe(0); // a clean stop, as Ctrl-C gives
    await database?.drop();
    if (dataDir) await rm(dataDir, { recursive: true, force: true });
  });

  it.runIf(hasBashCurlJq)('prints exactly the outputs and metrics the README promises', { timeout: 420_000 }, async () => {
    const script = blocks.join('\n').replace(BASE_LINE, `BASE=${stack!.httpUrl}`);
    // this Node first (npx, node -p), the running stack's data dir for the CLI, and its database
    const shellEnv = { ...process.env, ...env, PATH: `${path.dirname(process.execPath)}${path.delimiter}${process.env.PATH ?? ''}` };
    const utcDay = () => new Date().toISOString().slice(0, 10);
    let stdout = '';
    // The walkthrough reads today's metrics: a run across UTC midnight splits them over two days,
    // so such a run is done again (a new organization, the same promise).
    for (let attempt = 1; attempt <= 2; attempt += 1) {
      const day = utcDay();
      const started = performance.now();
      stdout = await runBash(script, shellEnv, 200_000);
      console.log(`README walkthrough (${BACKEND}): ${((performance.now() - started) / 1000).toFixed(1)} s`);
      if (utcDay() === day) break;
    }
    expect(jsonLines(stdout)).toEqual(promised);
  });
});
