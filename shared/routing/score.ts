/**
 * The routing rule, as a pure function (the API's router and the at-scale simulation, bench/routing-sim.ts, both call
 * it). For each live worker w and the request's chunks c (with their token counts):
 *
 *   cached(w) = Σ_c tokens(c) × { 1 (memory weight)  if w's memory tier holds c
 *                               { D (ROUTING_DISK_WEIGHT) if only w's disk tier holds c
 *                               { H (ROUTING_HOME_WEIGHT) if no live worker holds c and w is c's home
 *                               { 0 otherwise
 *   score(w)  = cached(w) − λ (ROUTING_LOAD_WEIGHT, tokens per job) × backlog(w)   (jobs waiting or running on w)
 *
 * The best score wins; ties go to the worker with the highest rendezvous hash of the request's context (its chunk
 * sequence, mode and tenant), so the same context lands on the same worker. A chunk's home is its own rendezvous
 * winner: chunks no one holds yet are spread over the workers the same way every time, so the chunk pool is
 * partitioned (each worker's memory needs about 1/N of it) instead of every worker caching the same hot chunks.
 */

export type Residence = 'm' | 'd' | undefined;

export interface ScoreWeights {
  /** Weight of a token whose chunk is on the worker's disk tier only (memory is 1). */
  disk: number;
  /** Weight of a token whose chunk no live worker holds, for that chunk's home worker. */
  home: number;
  /** Tokens one job of backlog is worth (λ). */
  load: number;
}

export const DEFAULT_WEIGHTS: ScoreWeights = { disk: 0.5, home: 0.25, load: 256 };

/** 32-bit hash of a string (FNV-1a), for rendezvous hashing. */
export function hash32(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}

/** Rendezvous weight of (item, worker) from their hashes: a 32-bit mix (murmur3's finalizer). */
export function rendezvous(itemHash: number, workerHash: number): number {
  let h = (itemHash ^ Math.imul(workerHash, 0x9e3779b1)) >>> 0;
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/** The index among `workerHashes` with the highest rendezvous weight for `itemHash`. */
export function homeOf(itemHash: number, workerHashes: ArrayLike<number>): number {
  let best = -1;
  let bestW = -1;
  for (let i = 0; i < workerHashes.length; i++) {
    const w = rendezvous(itemHash, workerHashes[i]);
    if (w > bestW) {
      bestW = w;
      best = i;
    }
  }
  return best;
}

export interface ScoreInput {
  /** Tokens of each of the request's chunks. */
  tokens: ArrayLike<number>;
  /** Hash of each chunk (hash32 of its key), for its home. */
  chunkHashes: ArrayLike<number>;
  /** held[w][c]: where worker w holds chunk c. */
  held: ArrayLike<ArrayLike<Residence>>;
  /** Jobs waiting or running on each worker. */
  backlog: ArrayLike<number>;
  /** hash32 of each worker id. */
  workerHashes: ArrayLike<number>;
  /** hash32 of the request's context key. */
  contextHash: number;
  /** Each chunk's home (index into the workers), when the caller knows it already (the simulation); else homeOf. */
  homes?: ArrayLike<number>;
}

export interface Scored {
  /** Index of the chosen worker. */
  best: number;
  /** Each worker's cached(w) and score(w). */
  cached: number[];
  scores: number[];
}

/** Scores every worker and picks the best (see the module's comment). `input.held.length` workers, at least one. */
export function scoreWorkers(input: ScoreInput, w: ScoreWeights = DEFAULT_WEIGHTS): Scored {
  const n = input.workerHashes.length;
  const k = input.tokens.length;
  const cached = new Array<number>(n);
  const anyone = new Uint8Array(k);
  for (let i = 0; i < n; i++) {
    const row = input.held[i];
    let sum = 0;
    for (let c = 0; c < k; c++) {
      const r = row[c];
      if (r === undefined) continue;
      anyone[c] = 1;
      sum += r === 'm' ? input.tokens[c] : input.tokens[c] * w.disk;
    }
    cached[i] = sum;
  }
  if (w.home > 0) {
    for (let c = 0; c < k; c++) {
      if (anyone[c]) continue;
      const home = input.homes ? input.homes[c] : homeOf(input.chunkHashes[c], input.workerHashes);
      if (home >= 0) cached[home] += input.tokens[c] * w.home;
    }
  }
  const scores = new Array<number>(n);
  let best = 0;
  let bestTie = -1;
  for (let i = 0; i < n; i++) {
    const score = (scores[i] = cached[i] - w.load * input.backlog[i]);
    // The rendezvous tie-break is computed only where it can decide.
    if (i === 0 || score > scores[best]) {
      best = i;
      bestTie = -1;
    } else if (score === scores[best]) {
      if (bestTie < 0) bestTie = rendezvous(input.contextHash, input.workerHashes[best]);
      const tie = rendezvous(input.contextHash, input.workerHashes[i]);
      if (tie > bestTie) {
        best = i;
        bestTie = tie;
      }
    }
  }
  return { best, cached, scores };
}
