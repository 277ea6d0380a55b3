/**
 * Attribution models micro-benchmark (not a test): times the data-driven models in memory, no database.
 *   node --experimental-strip-types --no-warnings=ExperimentalWarning bench/attribution-models.ts [--paths 1000000] [--bootstrap 200]
 * Synthetic paths: `--paths` converting and as many non-converting, 1 to 7 touches (4 on average),
 * over 20 channels (campaigns) and over 1,000 (creatives), channel popularity skewed, converting
 * paths leaning to the popular channels. For each: markovCredits and shapleyCredits on all the
 * paths, and bootstrap intervals (90 %) at `--bootstrap` samples (per-sample time for creatives,
 * from a few samples). Then the Markov solve alone at growing channel counts: it is O(n³).
 */
import { parseArgs } from 'node:util';
import { bootstrapIntervals, markovCredits, markovRemovalEffects, mulberry32, shapleyCredits, type ChannelPath } from '../scheduled/attribution/models.ts';

const { values: args } = parseArgs({
  options: {
    paths: { type: 'string', default: '1000000' },
    bootstrap: { type: 'string', default: '200' },
  },
});
const PATHS = Number(args.paths);
const BOOTSTRAP = Number(args.bootstrap);
const log = (line: string) => process.stdout.write(`${line}\n`);

function time<T>(work: () => T): { result: T; seconds: number } {
  const start = process.hrtime.bigint();
  const result = work();
  return { result, seconds: Number(process.hrtime.bigint() - start) / 1e9 };
}

/** Paths over `channels` names; popularity ~ u^skew, so low indices are common. */
function synthesise(channels: number, count: number, seed: number): { converting: ChannelPath[]; nonConverting: ChannelPath[] } {
  const random = mulberry32(seed);
  const names = Array.from({ length: channels }, (_, i) => `${channels <= 20 ? 'campaign' : 'creative'}-${i}`);
  const path = (skew: number): string[] => Array.from({ length: 1 + Math.floor(random() * 7) }, () => names[Math.floor(random() ** skew * channels)]!);
  return {
    converting: Array.from({ length: count }, () => ({ channels: path(2), value: 1 })),
    nonConverting: Array.from({ length: count }, () => ({ channels: path(1.5) })),
  };
}

function run(label: string, channels: number) {
  const { result: data, seconds: generated } = time(() => synthesise(channels, PATHS, channels));
  const touches = [...data.converting, ...data.nonConverting].reduce((sum, p) => sum + p.channels.length, 0);
  log(`\n${label}: ${channels} channels, ${PATHS.toLocaleString('en')} converting + ${PATHS.toLocaleString('en')} non-converting paths, ${touches.toLocaleString('en')} touches (generated in ${generated.toFixed(1)} s)`);
  const markov = time(() => markovCredits(data.converting, data.nonConverting));
  log(`  markovCredits        ${markov.seconds.toFixed(2)} s   (${markov.result.size} channels credited)`);
  const effects = time(() => markovRemovalEffects(data.converting, data.nonConverting));
  log(`  markovRemovalEffects ${effects.seconds.toFixed(2)} s   P(conv) = ${effects.result.conversionProbability.toFixed(6)}`);
  const shapley = time(() => shapleyCredits(data.converting));
  log(`  shapleyCredits       ${shapley.seconds.toFixed(2)} s`);
  const samples = channels <= 20 ? BOOTSTRAP : Math.min(BOOTSTRAP, 5);
  for (const model of ['shapley', 'markov'] as const) {
    const boot = time(() => bootstrapIntervals(model, data.converting, data.nonConverting, { level: 0.9, samples }));
    const perSample = boot.seconds / samples;
    const note = samples < BOOTSTRAP ? `, ${(perSample * BOOTSTRAP).toFixed(0)} s at ${BOOTSTRAP} samples (extrapolated)` : '';
    log(`  bootstrap ${model.padEnd(8)}   ${boot.seconds.toFixed(2)} s for ${samples} samples (${(perSample * 1000).toFixed(0)} ms a sample${note})`);
  }
  const top = [...markov.result].sort((a, b) => b[1] - a[1]).slice(0, 3);
  log(`  top Markov credit: ${top.map(([c, v]) => `${c} ${v.toFixed(0)}`).join(', ')}; Shapley: ${top.map(([c]) => (shapley.result.get(c) ?? 0).toFixed(0)).join(', ')}`);
}

/** The solve alone: every channel once in its own few paths, so the chain has n channels and little else to count. */
function solveScaling() {
  log('\nMarkov solve alone (one elimination, every removal), by channel count:');
  for (const channels of [250, 500, 1000, 2000]) {
    const { converting, nonConverting } = synthesise(channels, 50 * channels, 99);
    const { seconds } = time(() => markovRemovalEffects(converting, nonConverting));
    log(`  ${String(channels).padStart(5)} channels  ${seconds.toFixed(2)} s`);
  }
}

run('campaigns', 20);
run('creatives', 1000);
solveScaling();
