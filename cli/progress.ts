/**
 * A progress bar for long operations (replays, backfills, load): redrawn in place on a
 * terminal, one line per step otherwise (CI logs, pipes).
 */
export function progressBar(label: string, write: (text: string) => void, isTty = Boolean(process.stderr.isTTY)) {
  const started = performance.now();
  let lastPercent = -1;
  return (done: number, total: number) => {
    const percent = total === 0 ? 100 : Math.floor((done / total) * 100);
    if (percent === lastPercent && done < total) return;
    lastPercent = percent;
    const width = 30;
    const filled = Math.round((percent / 100) * width);
    const seconds = (performance.now() - started) / 1000;
    const rate = seconds > 0 ? Math.round(done / seconds) : 0;
    const line = `${label} [${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${done}/${total} ${percent}% ${rate}/s`;
    if (isTty) process.stderr.write(`\r${line}${done >= total ? '\n' : ''}`);
    else write(line);
  };
}
