/**
 * Choosing the next token from logits: greedy, or sampled with temperature, top-k and top-p (nucleus) from a seeded
 * generator, so the same seed gives the same tokens.
 */
export interface SamplingParams {
  /** 0 (or absent): greedy. Otherwise logits are divided by it before the softmax. */
  temperature?: number;
  /** Keep the smallest set of most likely tokens whose probability reaches top_p (1 or absent: all; 0: greedy). */
  topP?: number;
  /** Keep the k most likely tokens (0 or absent: all; 1 is greedy). */
  topK?: number;
  /** Seed of the row's random generator. */
  seed?: number;
}

/** The index of the largest value; the first one on ties. */
export function argmax(v: ArrayLike<number>): number {
  let best = 0;
  let bv = -Infinity;
  for (let i = 0; i < v.length; i++) {
    if (v[i] > bv) {
      bv = v[i];
      best = i;
    }
  }
  return best;
}

/**
 * A small seeded generator (SplitMix32-style mixing over a 32-bit counter, as in Java's SplittableRandom / mulberry32):
 * uniform numbers in [0, 1), reproducible from the seed on every platform.
 */
export class Rng {
  private state: number;

  constructor(seed: number) {
    // Any integer (negative, or past 32 bits) maps to a 32-bit state.
    this.state = Number(BigInt.asUintN(32, BigInt(Math.trunc(seed)))) >>> 0;
  }

  next(): number {
    this.state = (this.state + 0x6d2b79f5) >>> 0;
    let t = this.state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
}

/** Whether these parameters choose greedily (no randomness). */
export function isGreedy(p: SamplingParams | undefined): boolean {
  return !p || !p.temperature || p.topK === 1 || p.topP === 0;
}

/** Candidates sorted by probability (descending; lower id first on ties). */
function sortDesc(ids: number[], probs: Float64Array): number[] {
  return ids.sort((a, b) => probs[b] - probs[a] || a - b);
}

/**
 * A row's sampler: `pick(logits)` returns the next token id. Greedy parameters take the argmax without touching the
 * generator. Otherwise: softmax(logits / temperature), then top-k, then top-p over what is left (renormalised), then a
 * draw from the row's generator.
 */
export class Sampler {
  private readonly rng: Rng | undefined;

  constructor(readonly params: SamplingParams = {}) {
    const { temperature = 0, topP = 1, topK = 0 } = params;
    if (!(temperature >= 0) || !Number.isFinite(temperature)) throw new RangeError(`temperature must be >= 0, got ${temperature}`);
    if (!(topP >= 0 && topP <= 1)) throw new RangeError(`top_p must be in [0, 1], got ${topP}`);
    if (!Number.isInteger(topK) || topK < 0) throw new RangeError(`top_k must be a non-negative integer, got ${topK}`);
    this.rng = isGreedy(params) ? undefined : new Rng(params.seed ?? 0);
  }

  pick(logits: ArrayLike<number>): number {
    if (!this.rng) return argmax(logits);
    const V = logits.length;
    const t = this.params.temperature!;
    const topP = this.params.topP ?? 1;
    const topK = this.params.topK ?? 0;
    let max = -Infinity;
    for (let i = 0; i < V; i++) if (logits[i] > max) max = logits[i];
    const probs = new Float64Array(V);
    let sum = 0;
    for (let i = 0; i < V; i++) {
      const p = Math.exp((logits[i] - max) / t);
      probs[i] = p;
      sum += p;
    }
    for (let i = 0; i < V; i++) probs[i] /= sum;
    let cands: number[] | undefined;
    if (topK > 0 && topK < V) {
      // The k largest: a threshold found by sorting a copy, then the ids at or above it (ties broken by id).
      const sorted = Float64Array.from(probs).sort();
      const kth = sorted[V - topK];
      const ids: number[] = [];
      for (let i = 0; i < V; i++) if (probs[i] >= kth) ids.push(i);
      cands = sortDesc(ids, probs).slice(0, topK);
    }
    if (topP < 1) {
      if (!cands) {
        // Sort only the tokens that can be in the nucleus: those above a threshold whose mass already reaches top_p
        // (every token outside falls below every token inside). The threshold drops until it does.
        let pmax = 0;
        for (let i = 0; i < V; i++) if (probs[i] > pmax) pmax = probs[i];
        for (let th = pmax * 1e-3; ; th /= 1000) {
          const ids: number[] = [];
          let mass = 0;
          for (let i = 0; i < V; i++) {
            if (probs[i] >= th) {
              ids.push(i);
              mass += probs[i];
            }
          }
          if (mass >= topP || th === 0 || ids.length === V) {
            cands = sortDesc(ids, probs);
            break;
          }
          if (th < 1e-300) th = 0;
        }
      }
      let mass = 0;
      for (const id of cands) mass += probs[id];
      const keep: number[] = [];
      let acc = 0;
      for (const id of cands) {
        keep.push(id);
        acc += probs[id];
        if (acc >= topP * mass) break;
      }
      cands = keep;
    }
    const u = this.rng.next();
    if (!cands) {
      let acc = 0;
      for (let i = 0; i < V; i++) {
        acc += probs[i];
        if (u < acc) return i;
      }
      return argmax(probs);
    }
    let mass = 0;
    for (const id of cands) mass += probs[id];
    let acc = 0;
    for (const id of cands) {
      acc += probs[id] / mass;
      if (u < acc) return id;
    }
    return cands[cands.length - 1];
  }
}
