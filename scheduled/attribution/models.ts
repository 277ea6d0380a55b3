/**
 * Attribution models (issue 12): pure functions, no I/O. The job builds the paths; this module
 * only says how much credit each touch or channel gets.
 *
 * - Rule models credit the touches of one converting path.
 * - Markov and Shapley credit channels from all the paths of a period. Both are exact: Markov
 *   solves the absorbing chain once (one elimination of size channels + 1) and derives every
 *   channel's removal from that one factorisation; Shapley is the simplified form of Zhao et al.
 *   (2018), a sum over paths with no sampling and no cap on channels.
 * - Bootstrap intervals resample the paths with a seeded generator, so they are reproducible.
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

/** A path as the data-driven models see it: its channels in time order. */
export interface ChannelPath {
  channels: readonly string[];
  /** conversions (1) or value of a converting path; ignored for non-converting */
  value?: number;
}

const DAY_MS = 86_400_000;
export const DEFAULT_HALF_LIFE_DAYS = 7;

// ---------------------------------------------------------------------------------------------
// Rule models

/** Credit of each touch of one converting path (touches in time order, all before convertedAt); sums to 1; [] for no touch. */
export function ruleCredits(model: RuleModel, touches: readonly Touch[], convertedAt: number, options?: { halfLifeDays?: number }): number[] {
  const n = touches.length;
  if (n === 0) return [];
  const credits = new Array<number>(n).fill(0);
  switch (model) {
    case 'last_touch':
      credits[n - 1] = 1;
      return credits;
    case 'first_touch':
      credits[0] = 1;
      return credits;
    case 'linear':
      return credits.fill(1 / n);
    case 'position_based':
      return positionBased(n);
    case 'time_decay':
      return timeDecay(touches, convertedAt, options?.halfLifeDays ?? DEFAULT_HALF_LIFE_DAYS);
    default:
      throw new RangeError(`unknown rule model: ${String(model)}`);
  }
}

/** 40 % to the first and the last touch, 20 % shared by the middle ones; one touch 100 %, two 50/50. */
function positionBased(n: number): number[] {
  if (n === 1) return [1];
  if (n === 2) return [0.5, 0.5];
  const credits = new Array<number>(n).fill(0.2 / (n - 2));
  credits[0] = 0.4;
  credits[n - 1] = 0.4;
  return credits;
}

/** Weight 2^(−age/half-life), normalised. Ages are taken from the youngest touch so no weight underflows to 0. */
function timeDecay(touches: readonly Touch[], convertedAt: number, halfLifeDays: number): number[] {
  if (!(halfLifeDays > 0) || !Number.isFinite(halfLifeDays)) throw new RangeError(`halfLifeDays must be a positive number, got ${halfLifeDays}`);
  const halfLifeMs = halfLifeDays * DAY_MS;
  const ages = touches.map((touch) => convertedAt - touch.at);
  const youngest = ages.reduce((min, age) => Math.min(min, age), Infinity);
  const weights = ages.map((age) => 2 ** (-(age - youngest) / halfLifeMs));
  const total = weights.reduce((sum, weight) => sum + weight, 0);
  return weights.map((weight) => weight / total);
}

// ---------------------------------------------------------------------------------------------
// Paths as integers: channel names become indices once, so the models work on typed arrays.

/** Paths of one kind, flattened: path p's channels are flat[offsets[p] .. offsets[p+1]). Empty paths are left out. */
interface PathSet {
  offsets: Int32Array;
  flat: Int32Array;
  /** value of each path (converting paths; 1 unless given) */
  values: Float64Array;
  /** how many times each path counts (1, or a bootstrap sample's draw count) */
  weights: Float64Array;
}

interface EncodedPaths {
  names: string[];
  converting: PathSet;
  nonConverting: PathSet;
}

function encodePaths(converting: readonly ChannelPath[], nonConverting: readonly ChannelPath[]): EncodedPaths {
  const indexOf = new Map<string, number>();
  const names: string[] = [];
  const encode = (paths: readonly ChannelPath[], valued: boolean): PathSet => {
    let touches = 0;
    let count = 0;
    for (const path of paths) {
      if (path.channels.length > 0) {
        touches += path.channels.length;
        count += 1;
      }
    }
    const set: PathSet = { offsets: new Int32Array(count + 1), flat: new Int32Array(touches), values: new Float64Array(count), weights: new Float64Array(count).fill(1) };
    let p = 0;
    let at = 0;
    for (const path of paths) {
      if (path.channels.length === 0) continue;
      for (const channel of path.channels) {
        let index = indexOf.get(channel);
        if (index === undefined) {
          index = names.length;
          indexOf.set(channel, index);
          names.push(channel);
        }
        set.flat[at++] = index;
      }
      set.values[p] = valued ? (path.value ?? 1) : 1;
      p += 1;
      set.offsets[p] = at;
    }
    return set;
  };
  return { converting: encode(converting, true), nonConverting: encode(nonConverting, false), names };
}

/** Sum of weight × value over the converting paths (all non-empty): the total the data-driven models share out. */
function attributedTotal(set: PathSet): number {
  let total = 0;
  for (let p = 0; p < set.weights.length; p++) total += set.weights[p]! * set.values[p]!;
  return total;
}

// ---------------------------------------------------------------------------------------------
// Markov

/**
 * The chain's counts. Transient states: 0 = START, 1..n = the channels. `between` is the
 * (n+1)×(n+1) matrix of transition counts between transient states (row-major), `toConv` and
 * `toNull` the counts into the absorbing states. Repeats (c→c) are transitions like any other.
 */
interface ChainCounts {
  size: number;
  between: Float64Array;
  toConv: Float64Array;
  toNull: Float64Array;
}

function countTransitions(encoded: EncodedPaths): ChainCounts {
  const size = encoded.names.length + 1;
  const counts: ChainCounts = { size, between: new Float64Array(size * size), toConv: new Float64Array(size), toNull: new Float64Array(size) };
  const add = (set: PathSet, absorbing: Float64Array) => {
    for (let p = 0; p < set.weights.length; p++) {
      const weight = set.weights[p]!;
      if (weight === 0) continue;
      let from = 0;
      for (let at = set.offsets[p]!; at < set.offsets[p + 1]!; at++) {
        const to = set.flat[at]! + 1;
        counts.between[from * size + to]! += weight;
        from = to;
      }
      absorbing[from]! += weight;
    }
  };
  add(encoded.converting, counts.toConv);
  add(encoded.nonConverting, counts.toNull);
  return counts;
}

/**
 * Removal effects from the chain's counts.
 *
 * With Q the transient-to-transient probabilities, M = (I − Q)^(-1) and x = M r the probability of
 * conversion from each state (r = one-step probabilities into CONV): removing channel c zeroes
 * column c of Q, a rank-one change, and Sherman–Morrison gives
 *   P(conv | c removed) = x_START − M[START][c] · x_c / M[c][c]
 * (M[START][c] / M[c][c] is the probability of ever reaching c). So the effect is
 *   1 − P(conv | c removed) / P(conv) = (M[START][c] / M[c][c]) · x_c / x_START,
 * a product of non-negative numbers: no cancellation, and exactly 0 where c cannot convert.
 *
 * Rows are scaled by their totals (A = D − C with C the counts), which leaves x and the ratios
 * unchanged and keeps the counts as they are. A is a non-singular M-matrix (every state reaches
 * CONV or NULL), so the elimination needs no pivoting, and with the Grassmann–Taksar–Heyman
 * pivot (each pivot is the row's exit mass plus its off-diagonal mass, never a difference)
 * every quantity below is a sum of non-negative terms: accurate entry by entry.
 */
function removalEffectsFromCounts(counts: ChainCounts): { conversionProbability: number; effects: Float64Array } {
  const { size } = counts;
  const lu = counts.between; // factorised in place
  // A = D − C: off-diagonal −C; the diagonal is never read (each pivot is rebuilt from exit + off-diagonal mass)
  for (let i = 0; i < lu.length; i++) lu[i] = -lu[i]!;
  const exit = new Float64Array(size);
  for (let i = 0; i < size; i++) exit[i] = counts.toConv[i]! + counts.toNull[i]!;
  factorise(lu, exit, size);

  const x = solve(lu, counts.toConv, size);
  const conversionProbability = x[0]!;
  const effects = new Float64Array(size - 1);
  if (!(conversionProbability > 0)) return { conversionProbability: 0, effects };
  const fromStart = rowOfInverse(lu, 0, size);
  const diagonal = diagonalOfInverse(lu, size);
  for (let c = 1; c < size; c++) {
    if (diagonal[c] === 0 || x[c] === 0) continue;
    const effect = ((fromStart[c]! / diagonal[c]!) * x[c]!) / conversionProbability;
    effects[c - 1] = Math.min(1, effect);
  }
  return { conversionProbability, effects };
}

/**
 * LU of A without pivoting, in place (L unit lower below the diagonal, U on and above), pivots
 * by GTH: `exit` holds each row's sum over the columns still to eliminate (its exit mass), kept
 * up to date as the row is eliminated. Row by row, each row eliminated by the finished rows
 * above it, four rows at a time so that a finished row is read once for four (the work is bound
 * by memory traffic otherwise).
 */
function factorise(a: Float64Array, exit: Float64Array, size: number): void {
  let i0 = 0;
  for (; i0 + 4 <= size; i0 += 4) {
    for (let k = 0; k < i0; k++) eliminateFour(a, exit, size, i0, k);
    for (let i = i0; i < i0 + 4; i++) finishRow(a, exit, size, i, i0);
  }
  for (let i = i0; i < size; i++) finishRow(a, exit, size, i, 0);
}

/** Rows i0..i0+3 eliminated by the finished row k. */
function eliminateFour(a: Float64Array, exit: Float64Array, size: number, i0: number, k: number): void {
  const rowK = k * size;
  const r0 = i0 * size;
  const r1 = r0 + size;
  const r2 = r1 + size;
  const r3 = r2 + size;
  const pivot = a[rowK + k]!;
  const l0 = a[r0 + k]! / pivot;
  const l1 = a[r1 + k]! / pivot;
  const l2 = a[r2 + k]! / pivot;
  const l3 = a[r3 + k]! / pivot;
  if (l0 === 0 && l1 === 0 && l2 === 0 && l3 === 0) return;
  a[r0 + k] = l0;
  a[r1 + k] = l1;
  a[r2 + k] = l2;
  a[r3 + k] = l3;
  const exitK = exit[k]!;
  exit[i0] = exit[i0]! - l0 * exitK;
  exit[i0 + 1] = exit[i0 + 1]! - l1 * exitK;
  exit[i0 + 2] = exit[i0 + 2]! - l2 * exitK;
  exit[i0 + 3] = exit[i0 + 3]! - l3 * exitK;
  for (let j = k + 1; j < size; j++) {
    const u = a[rowK + j]!;
    a[r0 + j] = a[r0 + j]! - l0 * u;
    a[r1 + j] = a[r1 + j]! - l1 * u;
    a[r2 + j] = a[r2 + j]! - l2 * u;
    a[r3 + j] = a[r3 + j]! - l3 * u;
  }
}

/**
 * Row i eliminated by the finished rows from..i−1, then given its pivot: exit mass plus
 * off-diagonal mass. A state with no transitions at all (a channel no bootstrap draw touched)
 * gets pivot 1: it is an isolated identity row.
 */
function finishRow(a: Float64Array, exit: Float64Array, size: number, i: number, from: number): void {
  const rowI = i * size;
  for (let k = from; k < i; k++) {
    const entry = a[rowI + k]!;
    if (entry === 0) continue;
    const rowK = k * size;
    const l = entry / a[rowK + k]!;
    a[rowI + k] = l;
    exit[i] = exit[i]! - l * exit[k]!;
    for (let j = k + 1; j < size; j++) a[rowI + j] = a[rowI + j]! - l * a[rowK + j]!;
  }
  let pivot = exit[i]!;
  for (let j = i + 1; j < size; j++) pivot -= a[rowI + j]!;
  a[rowI + i] = pivot === 0 ? 1 : pivot;
}

/** A⁻¹ b from the factorisation. */
function solve(lu: Float64Array, b: Float64Array, size: number): Float64Array {
  const x = Float64Array.from(b);
  for (let i = 0; i < size; i++) {
    const row = i * size;
    let sum = x[i]!;
    for (let j = 0; j < i; j++) sum -= lu[row + j]! * x[j]!;
    x[i] = sum;
  }
  for (let i = size - 1; i >= 0; i--) {
    const row = i * size;
    let sum = x[i]!;
    for (let j = i + 1; j < size; j++) sum -= lu[row + j]! * x[j]!;
    x[i] = sum / lu[row + i]!;
  }
  return x;
}

/** Row `r` of A⁻¹ = e_rᵀ U⁻¹ L⁻¹ (the transposed solve), walking rows of the factors. */
function rowOfInverse(lu: Float64Array, r: number, size: number): Float64Array {
  const z = new Float64Array(size);
  z[r] = 1;
  for (let i = 0; i < size; i++) {
    const row = i * size;
    const zi = z[i]! / lu[row + i]!;
    z[i] = zi;
    if (zi === 0) continue;
    for (let j = i + 1; j < size; j++) z[j] = z[j]! - zi * lu[row + j]!;
  }
  for (let i = size - 1; i > 0; i--) {
    const row = i * size;
    const zi = z[i]!;
    if (zi === 0) continue;
    for (let j = 0; j < i; j++) z[j] = z[j]! - zi * lu[row + j]!;
  }
  return z;
}

/**
 * diag(A⁻¹) = diag(U⁻¹ L⁻¹): L⁻¹ in full (row-major), then each column k of U⁻¹ adds
 * U⁻¹[c][k] · L⁻¹[k][c] to entry c. Both triangular inverses go four columns at a time, so a row
 * of the factors is read once for four; with the factorisation about (2/3)·n³ multiply-adds.
 */
function diagonalOfInverse(lu: Float64Array, size: number): Float64Array {
  const lower = inverseOfLower(lu, size);
  const diagonal = new Float64Array(size);
  const t = new Float64Array(4 * size); // t[4i + m] = U⁻¹[i][k + m]
  for (let k = 0; k < size; k += 4) {
    const top = Math.min(k + 3, size - 1);
    for (let i = top; i >= 0; i--) {
      const row = i * size;
      let s0 = 0;
      let s1 = 0;
      let s2 = 0;
      let s3 = 0;
      for (let j = i + 1; j <= top; j++) {
        const u = lu[row + j]!;
        const p = 4 * j;
        s0 -= u * t[p]!;
        s1 -= u * t[p + 1]!;
        s2 -= u * t[p + 2]!;
        s3 -= u * t[p + 3]!;
      }
      const inverse = 1 / lu[row + i]!;
      const sums = [s0, s1, s2, s3];
      // column k + m has U⁻¹[i][k + m] = 0 below its diagonal and 1/U[i][i] on it
      for (let m = 0; m < 4; m++) t[4 * i + m] = i > k + m ? 0 : i === k + m ? inverse : sums[m]! * inverse;
    }
    for (let kk = k; kk <= top; kk++) {
      const m = kk - k;
      const lowerRow = kk * size;
      for (let c = 0; c <= kk; c++) diagonal[c] = diagonal[c]! + t[4 * c + m]! * lower[lowerRow + c]!;
    }
  }
  return diagonal;
}

/** L⁻¹ of the unit lower factor, row-major, four columns at a time (v[4i + m] = L⁻¹[i][c + m]). */
function inverseOfLower(lu: Float64Array, size: number): Float64Array {
  const lower = new Float64Array(size * size);
  const v = new Float64Array(4 * size);
  for (let c = 0; c < size; c += 4) {
    const width = Math.min(4, size - c);
    for (let i = c; i < size; i++) {
      const row = i * size;
      let s0 = 0;
      let s1 = 0;
      let s2 = 0;
      let s3 = 0;
      for (let j = c; j < i; j++) {
        const l = lu[row + j]!;
        const p = 4 * j;
        s0 -= l * v[p]!;
        s1 -= l * v[p + 1]!;
        s2 -= l * v[p + 2]!;
        s3 -= l * v[p + 3]!;
      }
      const p = 4 * i;
      if (i < c + 4) {
        // column c + m of L⁻¹ is 0 above its diagonal and 1 on it
        const sums = [s0, s1, s2, s3];
        for (let m = 0; m < 4; m++) v[p + m] = i < c + m ? 0 : i === c + m ? 1 : sums[m]!;
      } else {
        v[p] = s0;
        v[p + 1] = s1;
        v[p + 2] = s2;
        v[p + 3] = s3;
      }
      for (let m = 0; m < width; m++) lower[row + c + m] = v[p + m]!;
    }
  }
  return lower;
}

function markovOfEncoded(encoded: EncodedPaths): { conversionProbability: number; effects: Float64Array } {
  if (encoded.names.length === 0) return { conversionProbability: 0, effects: new Float64Array(0) };
  return removalEffectsFromCounts(countTransitions(encoded));
}

/** Credit per channel with a positive effect: total × effect / sum of effects. */
function markovCreditsOfEncoded(encoded: EncodedPaths): Float64Array {
  const { effects } = markovOfEncoded(encoded);
  const credits = new Float64Array(encoded.names.length);
  let sum = 0;
  for (const effect of effects) sum += effect;
  if (!(sum > 0)) return credits;
  const total = attributedTotal(encoded.converting);
  for (let c = 0; c < credits.length; c++) credits[c] = (total * effects[c]!) / sum;
  return credits;
}

/** Exact first-order Markov removal effects (absorbing chain START, channels, CONV, NULL; transitions counted between
 *  consecutive touches, repeats included; removing a channel sends every transition into it to NULL).
 *  Returns P(conv), and per channel its removal effect 1 - P(conv | removed)/P(conv). Solve once, removals by rank-one
 *  (Sherman–Morrison) updates or one factorisation — never one dense solve per channel. */
export function markovRemovalEffects(converting: readonly ChannelPath[], nonConverting: readonly ChannelPath[]): { conversionProbability: number; removalEffects: Map<string, number> } {
  const encoded = encodePaths(converting, nonConverting);
  const { conversionProbability, effects } = markovOfEncoded(encoded);
  const removalEffects = new Map<string, number>();
  encoded.names.forEach((name, c) => removalEffects.set(name, effects[c]!));
  return { conversionProbability, removalEffects };
}

/** Markov credit: total × effect / sum of effects, per channel (total = sum of `value` of converting paths with ≥1 touch). */
export function markovCredits(converting: readonly ChannelPath[], nonConverting: readonly ChannelPath[]): Map<string, number> {
  const encoded = encodePaths(converting, nonConverting);
  return creditMap(encoded.names, markovCreditsOfEncoded(encoded));
}

// ---------------------------------------------------------------------------------------------
// Shapley

/** The same paths with each channel once, in order of first touch: all Shapley needs. Values and weights are shared. */
function distinctChannels(set: PathSet, channelCount: number): PathSet {
  const seenIn = new Int32Array(channelCount).fill(-1);
  const offsets = new Int32Array(set.offsets.length);
  const flat = new Int32Array(set.flat.length);
  let at = 0;
  for (let p = 0; p < set.weights.length; p++) {
    for (let from = set.offsets[p]!; from < set.offsets[p + 1]!; from++) {
      const c = set.flat[from]!;
      if (seenIn[c] === p) continue;
      seenIn[c] = p;
      flat[at++] = c;
    }
    offsets[p + 1] = at;
  }
  return { offsets, flat: flat.subarray(0, at), values: set.values, weights: set.weights };
}

/** Shapley credit from paths of distinct channels: each gets weight × value / |S|. */
function shapleyOfDistinct(distinct: PathSet, channelCount: number): Float64Array {
  const credits = new Float64Array(channelCount);
  const { offsets, flat, values, weights } = distinct;
  for (let p = 0; p < weights.length; p++) {
    if (weights[p] === 0) continue;
    const share = (weights[p]! * values[p]!) / (offsets[p + 1]! - offsets[p]!);
    for (let at = offsets[p]!; at < offsets[p + 1]!; at++) credits[flat[at]!] = credits[flat[at]!]! + share;
  }
  return credits;
}

function shapleyCreditsOfEncoded(encoded: EncodedPaths): Float64Array {
  return shapleyOfDistinct(distinctChannels(encoded.converting, encoded.names.length), encoded.names.length);
}

/** Simplified Shapley (Zhao et al. 2018): each distinct channel S of a converting path gets value/|S|; summed per channel. */
export function shapleyCredits(converting: readonly ChannelPath[]): Map<string, number> {
  const encoded = encodePaths(converting, []);
  return creditMap(encoded.names, shapleyCreditsOfEncoded(encoded));
}

/** Channels with credit; a channel that earns nothing (it never leads to a conversion) is left out. */
function creditMap(names: readonly string[], credits: Float64Array): Map<string, number> {
  const map = new Map<string, number>();
  names.forEach((name, c) => {
    if (credits[c]! > 0) map.set(name, credits[c]!);
  });
  return map;
}

// ---------------------------------------------------------------------------------------------
// Bootstrap

export const DEFAULT_BOOTSTRAP_SAMPLES = 200;
export const DEFAULT_BOOTSTRAP_SEED = 12;

const MULBERRY32_INCREMENT = 0x6d2b79f5;

/** mulberry32's output for a state: uniform in [0, 1). */
function mulberry32Output(state: number): number {
  let t = state;
  t = Math.imul(t ^ (t >>> 15), t | 1);
  t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
}

/** mulberry32: a tiny, well-known 32-bit generator; uniform in [0, 1). */
export function mulberry32(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + MULBERRY32_INCREMENT) >>> 0;
    return mulberry32Output(state);
  };
}

/**
 * Identical paths (same channels, same value) folded into one with a count, so a sample costs a
 * pass over the distinct paths. `member[p]` is the group of original path p. An open-addressing
 * table of group ids, keyed by a hash of the channel indices and the value's bits.
 */
function groupPaths(set: PathSet): { set: PathSet; member: Int32Array } {
  const count = set.weights.length;
  let capacity = 16;
  while (capacity < 2 * count) capacity *= 2;
  const table = new Int32Array(capacity).fill(-1);
  const first = new Int32Array(count); // a group's first path
  const member = new Int32Array(count);
  let groups = 0;
  let touches = 0;
  for (let p = 0; p < count; p++) {
    let slot = hashPath(set, p) & (capacity - 1);
    let group = table[slot]!;
    while (group !== -1 && !samePath(set, first[group]!, p)) {
      slot = (slot + 1) & (capacity - 1);
      group = table[slot]!;
    }
    if (group === -1) {
      group = groups++;
      table[slot] = group;
      first[group] = p;
      touches += set.offsets[p + 1]! - set.offsets[p]!;
    }
    member[p] = group;
  }
  const grouped: PathSet = { offsets: new Int32Array(groups + 1), flat: new Int32Array(touches), values: new Float64Array(groups), weights: new Float64Array(groups) };
  let at = 0;
  for (let g = 0; g < groups; g++) {
    const p = first[g]!;
    grouped.flat.set(set.flat.subarray(set.offsets[p]!, set.offsets[p + 1]!), at);
    at += set.offsets[p + 1]! - set.offsets[p]!;
    grouped.offsets[g + 1] = at;
    grouped.values[g] = set.values[p]!;
  }
  return { set: grouped, member };
}

const valueBits = new Float64Array(1);
const valueWords = new Uint32Array(valueBits.buffer);

function hashPath(set: PathSet, p: number): number {
  let hash = 0x811c9dc5;
  const mix = (word: number) => (hash = Math.imul(hash ^ word, 0x01000193));
  for (let at = set.offsets[p]!; at < set.offsets[p + 1]!; at++) mix(set.flat[at]!);
  valueBits[0] = set.values[p]!;
  mix(valueWords[0]!);
  mix(valueWords[1]!);
  return (hash ^ (hash >>> 16)) >>> 0;
}

function samePath(set: PathSet, p: number, q: number): boolean {
  const length = set.offsets[p + 1]! - set.offsets[p]!;
  if (length !== set.offsets[q + 1]! - set.offsets[q]! || set.values[p] !== set.values[q]) return false;
  for (let i = 0; i < length; i++) if (set.flat[set.offsets[p]! + i] !== set.flat[set.offsets[q]! + i]) return false;
  return true;
}

/**
 * One multinomial draw: as many paths as there are, with replacement, counted per group. The
 * generator's state is a local here (a closure's state costs twice the time at millions of draws).
 */
function resample(weights: Float64Array, member: Int32Array, generator: { state: number }): void {
  weights.fill(0);
  const n = member.length;
  let state = generator.state;
  for (let draw = 0; draw < n; draw++) {
    state = (state + MULBERRY32_INCREMENT) >>> 0;
    const g = member[Math.floor(mulberry32Output(state) * n)]!;
    weights[g] = weights[g]! + 1;
  }
  generator.state = state;
}

/** The empirical quantile of sorted values with linear interpolation (R's type 7). */
function quantile(sorted: Float64Array, p: number): number {
  const h = (sorted.length - 1) * p;
  const low = Math.floor(h);
  const high = Math.min(low + 1, sorted.length - 1);
  return sorted[low]! + (h - low) * (sorted[high]! - sorted[low]!);
}

/** Bootstrap interval of a data-driven model's credit: resample paths with replacement `samples` times (seeded, so
 *  reproducible), return per channel [low, high] at the central `level` (e.g. 0.9).
 *  Converting and non-converting paths are resampled separately (each keeps its size); a channel a sample does not
 *  credit counts 0 in it. The channels are those of the full data's credit. */
export function bootstrapIntervals(
  model: 'markov' | 'shapley',
  converting: readonly ChannelPath[],
  nonConverting: readonly ChannelPath[],
  options: { level: number; samples?: number; seed?: number },
): Map<string, { low: number; high: number }> {
  const { level } = options;
  const samples = options.samples ?? DEFAULT_BOOTSTRAP_SAMPLES;
  if (!(level > 0 && level < 1)) throw new RangeError(`level must be between 0 and 1 (exclusive), got ${level}`);
  if (!Number.isInteger(samples) || samples < 1) throw new RangeError(`samples must be a positive integer, got ${samples}`);
  const generator = { state: (options.seed ?? DEFAULT_BOOTSTRAP_SEED) >>> 0 };

  const encoded = encodePaths(converting, model === 'markov' ? nonConverting : []);
  const credit = model === 'markov' ? markovCreditsOfEncoded : shapleyCreditsOfEncoded;
  const pointCredits = credit(encoded);
  const channels = [...pointCredits.keys()].filter((c) => pointCredits[c]! > 0);

  const conv = groupPaths(encoded.converting);
  const nonConv = groupPaths(encoded.nonConverting);
  const sample: EncodedPaths = { names: encoded.names, converting: conv.set, nonConverting: nonConv.set };
  // Shapley sees each path's distinct channels only: found once, not once a sample
  const distinct = model === 'shapley' ? distinctChannels(conv.set, encoded.names.length) : conv.set;
  const draws = channels.map(() => new Float64Array(samples));
  for (let s = 0; s < samples; s++) {
    resample(conv.set.weights, conv.member, generator);
    resample(nonConv.set.weights, nonConv.member, generator);
    const credits = model === 'markov' ? markovCreditsOfEncoded(sample) : shapleyOfDistinct(distinct, encoded.names.length);
    channels.forEach((c, k) => (draws[k]![s] = credits[c]!));
  }

  const intervals = new Map<string, { low: number; high: number }>();
  channels.forEach((c, k) => {
    const sorted = draws[k]!.sort();
    intervals.set(encoded.names[c]!, { low: quantile(sorted, (1 - level) / 2), high: quantile(sorted, (1 + level) / 2) });
  });
  return intervals;
}
