/**
 * Attribution models micro-benchmark (not a test): times the data-driven models in memory, no database.
 *   node --experimental-strip-types --no-warnings=ExperimentalWarning bench/attribution-models.ts [--paths 1000000] [--bootstrap 200]
 * Synthetic paths: `--paths` converting and as many non-converting, 1 to 7 touches (4 on average),
 * over 20 channels (campaigns) and over 1,000 (creatives), channel popularity skewed, converting
 * paths leaning to the popular channels. For each: markovCredits and shapleyCredits on all the
 * paths, and bootstrap intervals (90 %) at `--bootstrap` samples (Markov for creatives
 * extrapolated from a few samples); for campaigns, how far a ChannelAttribution-style simulation of the chain
 * lands from the exact removal effects. Then the Markov solve alone at growing channel counts: it is O(n³).
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
  // per sample: the difference between two runs, so the one-off work (grouping, the point estimate) is apart
  for (const model of ['shapley', 'markov'] as const) {
    // a Markov sample at 1,000 channels is one O(n³) solve: a few samples, and the rest extrapolated
    const [few, many] = model === 'markov' && channels > 20 ? [2, 7] : [10, BOOTSTRAP];
    const first = time(() => bootstrapIntervals(model, data.converting, data.nonConverting, { level: 0.9, samples: few }));
    const second = time(() => bootstrapIntervals(model, data.converting, data.nonConverting, { level: 0.9, samples: many }));
    const perSample = (second.seconds - first.seconds) / (many - few);
    const setup = first.seconds - few * perSample;
    const total = many === BOOTSTRAP ? `${second.seconds.toFixed(1)} s for ${many} samples` : `${(setup + BOOTSTRAP * perSample).toFixed(0)} s for ${BOOTSTRAP} samples (extrapolated from ${few} and ${many})`;
    log(`  bootstrap ${model.padEnd(8)}   ${total}: ${(perSample * 1000).toFixed(0)} ms a sample after ${setup.toFixed(2)} s of setup`);
  }
  if (channels <= 31) compareWithSimulation(data.converting, data.nonConverting);
  const top = [...markov.result].sort((a, b) => b[1] - a[1]).slice(0, 3);
  log(`  top Markov credit: ${top.map(([c, v]) => `${c} ${v.toFixed(0)}`).join(', ')}; Shapley: ${top.map(([c]) => (shapley.result.get(c) ?? 0).toFixed(0)).join(', ')}`);
}

/**
 * ChannelAttribution (Python/R) estimates removal effects by simulating walks through the chain;
 * its package cannot be installed here, so this is a simulation of that kind: `walks` walks from
 * START, and P(conv | c removed) estimated as the share of walks that convert without visiting c.
 * Reports the largest distance of its effects from the exact ones. Up to 31 channels (a bitmask).
 */
function simulatedEffects(converting: readonly ChannelPath[], nonConverting: readonly ChannelPath[], walks: number, seed: number): Map<string, number> {
  const names = [...new Set([...converting, ...nonConverting].flatMap((p) => p.channels))];
  const index = new Map(names.map((name, i) => [name, i + 1]));
  const size = names.length + 1; // 0 = START; columns size = CONV, size + 1 = NULL
  const counts = Array.from({ length: size }, () => new Float64Array(size + 2));
  const walk = (list: readonly ChannelPath[], end: number) => {
    for (const path of list) {
      let from = 0;
      for (const channel of path.channels) from = (counts[from]![index.get(channel)!]! += 1, index.get(channel)!);
      counts[from]![end]! += 1;
    }
  };
  walk(converting, size);
  walk(nonConverting, size + 1);
  const cumulative = counts.map((row) => {
    const total = row.reduce((a, b) => a + b, 0);
    let running = 0;
    return row.map((count) => (running += count / total));
  });
  const random = mulberry32(seed);
  let converted = 0;
  const convertedWithout = new Float64Array(size);
  for (let w = 0; w < walks; w++) {
    let state = 0;
    let visited = 0;
    for (let step = 0; step < 10_000 && state < size; step++) {
      const u = random();
      const row = cumulative[state]!;
      let next = 0;
      while (next < row.length - 1 && row[next]! <= u) next++;
      state = next;
      if (state > 0 && state < size) visited |= 1 << (state - 1);
    }
    if (state !== size) continue;
    converted++;
    for (let c = 1; c < size; c++) if ((visited & (1 << (c - 1))) === 0) convertedWithout[c]!++;
  }
  return new Map(names.map((name, i) => [name, 1 - convertedWithout[i + 1]! / converted]));
}

function compareWithSimulation(converting: readonly ChannelPath[], nonConverting: readonly ChannelPath[]) {
  const exact = markovRemovalEffects(converting, nonConverting).removalEffects;
  for (const walks of [100_000, 1_000_000]) {
    const { result: simulated, seconds } = time(() => simulatedEffects(converting, nonConverting, walks, 1));
    const again = simulatedEffects(converting, nonConverting, walks, 2);
    let worst = 0;
    let worstRelative = 0;
    let spread = 0;
    for (const [channel, effect] of exact) {
      const distance = Math.abs(simulated.get(channel)! - effect);
      worst = Math.max(worst, distance);
      worstRelative = Math.max(worstRelative, distance / effect);
      spread = Math.max(spread, Math.abs(simulated.get(channel)! - again.get(channel)!));
    }
    log(`  simulated effects, ${walks.toLocaleString('en')} walks (${seconds.toFixed(2)} s): largest distance from exact ${worst.toExponential(2)} (${(100 * worstRelative).toFixed(2)} % of that effect); two seeds differ by up to ${spread.toExponential(2)}`);
  }
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
