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
  /** [token id, bias] pairs added to the logits before anything else (OpenAI's logit_bias; greedy too). */
  logitBias?: [number, number][];
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
/** Temperatures below this are greedy (vLLM's sampling epsilon): 1/t would overflow to Infinity and the weights to NaN. */
export const MIN_TEMPERATURE = 1e-5;

export function isGreedy(p: SamplingParams | undefined): boolean {
  return !p || !p.temperature || p.temperature < MIN_TEMPERATURE || p.topK === 1 || p.topP === 0;
}

/**
 * The ids (of `ids`, or of every token) that a threshold keeps: those above `th`, then those equal to it by lowest id
 * until `n` are kept; in id order.
 */
function keepAbove(probs: Float64Array, ids: number[] | undefined, th: number, n = Infinity): number[] {
  const keep = new Uint8Array(probs.length);
  let kept = 0;
  const ties: number[] = [];
  const visit = (i: number) => {
    if (probs[i] > th) {
      keep[i] = 1;
      kept++;
    } else if (probs[i] === th) ties.push(i);
  };
  if (ids) for (const i of ids) visit(i);
  else for (let i = 0; i < probs.length; i++) visit(i);
  ties.sort((a, b) => a - b);
  for (const i of ties) {
    if (kept >= n) break;
    keep[i] = 1;
    kept++;
  }
  const out: number[] = [];
  for (let i = 0; i < keep.length; i++) if (keep[i]) out.push(i);
  return out;
}

/**
 * Quickselect by count or by mass: the value th such that the values above it fall short of `target` (how many, or
 * their sum) and those at or above it reach it. In place on a copy in `scratch` (three-way partitions around a median
 * of three), expected O(n), where sorting 128k probabilities took 15-45 ms a token.
 */
function selectThreshold(src: Float64Array, target: number, byMass: boolean, scratch: Float64Array): number {
  const a = scratch.subarray(0, src.length);
  a.set(src);
  let lo = 0;
  let hi = a.length;
  let need = target;
  let pivot = -Infinity;
  while (lo < hi) {
    const x = a[lo];
    const y = a[(lo + hi) >> 1];
    const z = a[hi - 1];
    pivot = Math.max(Math.min(x, y), Math.min(Math.max(x, y), z));
    // [lo, gt) above the pivot, [gt, i) equal, [lt, hi) below.
    let gt = lo;
    let i = lo;
    let lt = hi;
    let gAmt = 0;
    let eAmt = 0;
    while (i < lt) {
      const v = a[i];
      if (v > pivot) {
        a[i] = a[gt];
        a[gt] = v;
        gt++;
        i++;
        gAmt += byMass ? v : 1;
      } else if (v < pivot) {
        lt--;
        a[i] = a[lt];
        a[lt] = v;
      } else {
        i++;
        eAmt += byMass ? v : 1;
      }
    }
    if (gAmt >= need) hi = gt;
    else if (gAmt + eAmt >= need) return pivot;
    else {
      need -= gAmt + eAmt;
      lo = lt;
    }
  }
  // Rounding left a sliver of mass unreached: keep everything down to the last pivot.
  return pivot;
}

/** The k most probable ids (ties by lowest id). */
function keepTopK(probs: Float64Array, k: number, scratch: Float64Array): number[] {
  return keepAbove(probs, undefined, selectThreshold(probs, k, false, scratch), k);
}

/** The smallest set of most probable ids (of `ids`, or all) whose mass reaches `p` of theirs (ties at the edge kept). */
function keepTopP(probs: Float64Array, ids: number[] | undefined, p: number, scratch: Float64Array): number[] {
  const values = ids ? Float64Array.from(ids, (i) => probs[i]) : probs;
  let mass = 0;
  for (let i = 0; i < values.length; i++) mass += values[i];
  return keepAbove(probs, ids, selectThreshold(values, p * mass, true, scratch));
}

/**
 * A row's sampler: `pick(logits)` returns the next token id. Greedy parameters take the argmax without touching the
 * generator. Otherwise: softmax(logits / temperature), then top-k, then top-p over what is left (renormalised), then a
 * draw from the row's generator.
 */
export class Sampler {
  private readonly rng: Rng | undefined;
  private weights: Float64Array | undefined;
  private scratch: Float64Array | undefined;

  constructor(readonly params: SamplingParams = {}) {
    const { temperature = 0, topP = 1, topK = 0 } = params;
    if (!(temperature >= 0) || !Number.isFinite(temperature)) throw new RangeError(`temperature must be >= 0, got ${temperature}`);
    if (!(topP >= 0 && topP <= 1)) throw new RangeError(`top_p must be in [0, 1], got ${topP}`);
    if (!Number.isInteger(topK) || topK < 0) throw new RangeError(`top_k must be a non-negative integer, got ${topK}`);
    this.rng = isGreedy(params) ? undefined : new Rng(params.seed ?? 0);
  }

  pick(raw: ArrayLike<number>): number {
    let logits = raw;
    if (this.params.logitBias?.length) {
      const biased = Float32Array.from(raw);
      for (const [id, bias] of this.params.logitBias) if (id >= 0 && id < biased.length) biased[id] += bias;
      logits = biased;
    }
    if (!this.rng) return argmax(logits);
    const V = logits.length;
    const t = this.params.temperature!;
    const topP = this.params.topP ?? 1;
    const topK = this.params.topK ?? 0;
    let max = -Infinity;
    for (let i = 0; i < V; i++) if (logits[i] > max) max = logits[i];
    // Unnormalised softmax weights in a buffer kept across steps (top-k, top-p and the draw are scale-free).
    if (this.weights?.length !== V) {
      this.weights = new Float64Array(V);
      this.scratch = new Float64Array(V);
    }
    const scratch = this.scratch!;
    const probs = this.weights;
    const inv = 1 / t;
    for (let i = 0; i < V; i++) probs[i] = Math.exp((logits[i] - max) * inv);
    let cands: number[] | undefined;
    if (topK > 0 && topK < V) cands = keepTopK(probs, topK, scratch);
    if (topP < 1) cands = keepTopP(probs, cands, topP, scratch);
    const u = this.rng.next();
    if (!cands) {
      let sum = 0;
      for (let i = 0; i < V; i++) sum += probs[i];
      const target = u * sum;
      let acc = 0;
      for (let i = 0; i < V; i++) {
        acc += probs[i];
        if (target < acc) return i;
      }
      return argmax(probs);
    }
    let mass = 0;
    for (const id of cands) mass += probs[id];
    const target = u * mass;
    let acc = 0;
    for (const id of cands) {
      acc += probs[id];
      if (target < acc) return id;
    }
    return cands[cands.length - 1];
  }
}
