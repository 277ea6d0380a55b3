/**
 * TEMPORARY stand-in written by helper LEDGER so that the attribution job and API can be compiled
 * and tested before helper MATH's implementation of this interface lands (the lead takes MATH's
 * file on merge). It follows the contract in /work/attribution-contract.md; dense solves only.
 */
export type TouchKind = 'click' | 'view';
export interface Touch {
  /** epoch milliseconds */
  at: number;
  kind: TouchKind;
  /** the channel at the dimension asked for; '(none)' when the touch has no value there */
  channel: string;
}
export const RULE_MODELS = ['last_touch', 'first_touch', 'linear', 'position_based', 'time_decay'] as const;
export type RuleModel = (typeof RULE_MODELS)[number];
export const MODELS = [...RULE_MODELS, 'markov', 'shapley'] as const;
export type Model = (typeof MODELS)[number];

const DAY_MS = 86_400_000;

export function ruleCredits(model: RuleModel, touches: readonly Touch[], convertedAt: number, options: { halfLifeDays?: number } = {}): number[] {
  const n = touches.length;
  if (n === 0) return [];
  switch (model) {
    case 'last_touch':
      return touches.map((_, i) => (i === n - 1 ? 1 : 0));
    case 'first_touch':
      return touches.map((_, i) => (i === 0 ? 1 : 0));
    case 'linear':
      return touches.map(() => 1 / n);
    case 'position_based':
      if (n === 1) return [1];
      if (n === 2) return [0.5, 0.5];
      return touches.map((_, i) => (i === 0 || i === n - 1 ? 0.4 : 0.2 / (n - 2)));
    case 'time_decay': {
      const halfLife = (options.halfLifeDays ?? 7) * DAY_MS;
      const ages = touches.map((t) => convertedAt - t.at);
      const youngest = Math.min(...ages);
      const weights = ages.map((age) => 2 ** (-(age - youngest) / halfLife));
      const total = weights.reduce((a, b) => a + b, 0);
      return weights.map((w) => w / total);
    }
  }
}

export interface ChannelPath {
  channels: readonly string[];
  value?: number;
}

export function markovRemovalEffects(
  converting: readonly ChannelPath[],
  nonConverting: readonly ChannelPath[],
): { conversionProbability: number; removalEffects: Map<string, number> } {
  const index = new Map<string, number>();
  const counts = new Map<string, Map<string, number>>();
  const add = (from: string, to: string) => {
    if (!counts.has(from)) counts.set(from, new Map());
    const row = counts.get(from)!;
    row.set(to, (row.get(to) ?? 0) + 1);
  };
  const walk = (path: ChannelPath, end: string) => {
    if (path.channels.length === 0) return;
    let from = '\u0000start';
    for (const channel of path.channels) {
      if (!index.has(channel)) index.set(channel, index.size);
      add(from, channel);
      from = channel;
    }
    add(from, end);
  };
  converting.forEach((p) => walk(p, '\u0000conv'));
  nonConverting.forEach((p) => walk(p, '\u0000null'));
  const channels = [...index.keys()];
  const solve = (removed: string | undefined) => {
    const n = channels.length;
    const a = channels.map(() => new Array<number>(n + 1).fill(0));
    channels.forEach((c, i) => {
      a[i]![i] = 1;
      if (c === removed) return;
      const row = counts.get(c)!;
      const total = [...row.values()].reduce((x, y) => x + y, 0);
      for (const [to, count] of row) {
        if (to === '\u0000conv') a[i]![n] = a[i]![n]! + count / total;
        else if (to !== '\u0000null' && to !== removed) a[i]![index.get(to)!] = a[i]![index.get(to)!]! - count / total;
      }
    });
    for (let col = 0; col < n; col += 1) {
      let pivot = col;
      for (let r = col + 1; r < n; r += 1) if (Math.abs(a[r]![col]!) > Math.abs(a[pivot]![col]!)) pivot = r;
      [a[col], a[pivot]] = [a[pivot]!, a[col]!];
      for (let r = 0; r < n; r += 1) {
        if (r === col || a[r]![col] === 0) continue;
        const f = a[r]![col]! / a[col]![col]!;
        for (let k = col; k <= n; k += 1) a[r]![k] = a[r]![k]! - f * a[col]![k]!;
      }
    }
    const p = channels.map((_, i) => a[i]![n]! / a[i]![i]!);
    const start = counts.get('\u0000start');
    if (!start) return 0;
    const total = [...start.values()].reduce((x, y) => x + y, 0);
    let result = 0;
    for (const [to, count] of start) if (to !== removed) result += (count / total) * p[index.get(to)!]!;
    return result;
  };
  const base = solve(undefined);
  const removalEffects = new Map<string, number>();
  for (const c of channels) removalEffects.set(c, base === 0 ? 0 : 1 - solve(c) / base);
  return { conversionProbability: base, removalEffects };
}

export function markovCredits(converting: readonly ChannelPath[], nonConverting: readonly ChannelPath[]): Map<string, number> {
  const total = converting.filter((p) => p.channels.length > 0).reduce((sum, p) => sum + (p.value ?? 1), 0);
  const { removalEffects } = markovRemovalEffects(converting, nonConverting);
  const sum = [...removalEffects.values()].reduce((a, b) => a + b, 0);
  const credits = new Map<string, number>();
  for (const [channel, effect] of removalEffects) credits.set(channel, sum === 0 ? 0 : (total * effect) / sum);
  return credits;
}

export function shapleyCredits(converting: readonly ChannelPath[]): Map<string, number> {
  const credits = new Map<string, number>();
  for (const path of converting) {
    const set = [...new Set(path.channels)];
    for (const channel of set) credits.set(channel, (credits.get(channel) ?? 0) + (path.value ?? 1) / set.length);
  }
  return credits;
}

export function bootstrapIntervals(
  model: 'markov' | 'shapley',
  converting: readonly ChannelPath[],
  nonConverting: readonly ChannelPath[],
  options: { level: number; samples?: number; seed?: number },
): Map<string, { low: number; high: number }> {
  let state = (options.seed ?? 1) >>> 0;
  const random = () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const resample = <T>(items: readonly T[]) => items.map(() => items[Math.floor(random() * items.length)]!);
  const samples = options.samples ?? 200;
  const draws = new Map<string, number[]>();
  for (let s = 0; s < samples; s += 1) {
    const conv = resample(converting);
    const credits = model === 'markov' ? markovCredits(conv, resample(nonConverting)) : shapleyCredits(conv);
    for (const [channel, credit] of credits) {
      if (!draws.has(channel)) draws.set(channel, []);
      draws.get(channel)!.push(credit);
    }
  }
  const result = new Map<string, { low: number; high: number }>();
  const tail = (1 - options.level) / 2;
  for (const [channel, values] of draws) {
    while (values.length < samples) values.push(0);
    values.sort((a, b) => a - b);
    const at = (q: number) => values[Math.min(values.length - 1, Math.max(0, Math.floor(q * (values.length - 1))))]!;
    result.set(channel, { low: at(tail), high: at(1 - tail) });
  }
  return result;
}
