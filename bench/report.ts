import { appendFile } from 'node:fs/promises';

/**
 * A benchmark's section: printed, and with --record appended to bench/RESULTS.md (newest last).
 * `lines` is the section (its ### heading, the setup, the table, the verdicts); `preface` goes
 * before it in the file only (a ## heading for a benchmark's first section).
 */
export async function publishReport(lines: string[], record: boolean, preface = ''): Promise<void> {
  const report = lines.join('\n');
  process.stdout.write(`\n${report}\n`);
  if (record) await appendFile(new URL('./RESULTS.md', import.meta.url), `\n${preface}${report}`);
}
