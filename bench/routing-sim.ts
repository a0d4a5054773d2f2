/**
 * npm run bench:routing-sim [-- --workers 64 --docs 1000000 --requests 10000000 --alphas 0.6,0.9,1.1 --modes cache,round-robin,shared]
 *
 * Routing at a scale this machine cannot serve: simulated workers (no model), the real scoring rule
 * (shared/routing/score.ts's scoreWorkers, with its default weights). Per Zipf α and routing mode it measures the
 * memory-tier hit rate, the load imbalance and the Redis bytes read per request.
 *
 * The model of a worker: a memory tier that is an LRU of `--mem-docs` documents (default docs/32: the workers' memory
 * together holds twice the pool), one chunk of `--tokens` tokens per document; a memory miss reads the chunk from
 * Redis (tokens × --kv-bytes-per-token bytes), or compiles it the first time any worker needs it. Load: requests arrive
 * at --load × the workers' total rate; each worker serves one request per time unit (every request costs the same, so
 * cache routing gains nothing in speed here: only hit rate and bytes are compared); a worker's backlog is what it was
 * sent and has not served yet (fluid). Requests: `--docs-per-request` documents drawn by Zipf(α) popularity over a
 * shuffled order, and a fraction `--repeat` repeat one of the last 1,024 contexts.
 *
 * Modes: `cache` (scoreWorkers over the workers that hold or are home to one of the request's chunks, plus the least
 * loaded one: the workers left out would score −λ × backlog, so the best of them is the least loaded one; a best
 * worker with more than --max-waiting in its backlog sends the request to the shared queue, modelled as the least loaded
 * worker), `round-robin`, `shared` (the least loaded worker takes it, of idle ones the one idle longest: BullMQ's
 * competing consumers, where Redis serves the longest-blocked worker first).
 *
 * Each (α, mode) run is its own worker thread, --threads at a time (default 2: this machine's cores).
 *
 * Writes bench/results/routing-sim.json and routing-sim.svg.
 */
import { writeFileSync } from 'node:fs';
import { isMainThread, parentPort, Worker, workerData } from 'node:worker_threads';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { DEFAULT_WEIGHTS, hash32, homeOf, scoreWorkers, type Residence } from '../shared/routing/score';
import { ROOT, machine, table, writeResult } from './common';
import { groupedBarsSvg } from './routing/chart';

type Mode = 'cache' | 'round-robin' | 'shared';

/** Walker's alias table for Zipf(α) over n ranks: O(1) per draw. */
function zipfAlias(n: number, alpha: number): { prob: Float64Array; alias: Int32Array } {
  const w = new Float64Array(n);
  let sum = 0;
  for (let i = 0; i < n; i++) sum += w[i] = 1 / Math.pow(i + 1, alpha);
  const prob = new Float64Array(n);
  const alias = new Int32Array(n);
  const small: number[] = [];
  const large: number[] = [];
  for (let i = 0; i < n; i++) {
    prob[i] = (w[i] * n) / sum;
    (prob[i] < 1 ? small : large).push(i);
  }
  while (small.length && large.length) {
    const s = small.pop()!;
    const l = large.pop()!;
    alias[s] = l;
    prob[l] = prob[l] + prob[s] - 1;
    (prob[l] < 1 ? small : large).push(l);
  }
  for (const i of [...small, ...large]) prob[i] = 1;
  return { prob, alias };
}

function xorshift(seed: number) {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) / 4294967296;
  };
}

/**
 * The memory tiers of all workers: one LRU of `cap` documents per worker, as doubly linked lists in typed arrays, and
 * each held (worker, document)'s slot in a per-worker open-addressing table (linear probing, backward-shift deletion).
 * A Map per worker was the bottleneck; a flat workers × documents array (256 MB at 64 × 1 M) made every access a miss.
 */
class Lrus {
  private readonly prev: Int32Array;
  private readonly next: Int32Array;
  private readonly key: Int32Array;
  private readonly used: Int32Array;
  /** Per worker `size` entries: the document (-1 empty) and its slot. */
  private readonly tabDoc: Int32Array;
  private readonly tabSlot: Int32Array;
  private readonly mask: number;
  private readonly size: number;
  constructor(
    workers: number,
    private readonly cap: number,
  ) {
    // Slot w*(cap+1) is worker w's sentinel; its list runs most recent first.
    const n = workers * (cap + 1);
    this.prev = new Int32Array(n);
    this.next = new Int32Array(n);
    this.key = new Int32Array(n).fill(-1);
    this.used = new Int32Array(workers);
    let size = 16;
    while (size < cap * 2) size *= 2;
    this.size = size;
    this.mask = size - 1;
    this.tabDoc = new Int32Array(workers * size).fill(-1);
    this.tabSlot = new Int32Array(workers * size);
    for (let w = 0; w < workers; w++) {
      const s = w * (cap + 1);
      this.prev[s] = this.next[s] = s;
    }
  }
  /** Where d's entry is in w's table, or the empty entry where it would go. */
  private find(w: number, d: number): number {
    const base = w * this.size;
    let h = Math.imul(d, 0x9e3779b1) >>> 0;
    for (;;) {
      const at = base + (h & this.mask);
      const k = this.tabDoc[at];
      if (k === d || k === -1) return at;
      h++;
    }
  }
  private forget(w: number, d: number): void {
    const base = w * this.size;
    const mask = this.mask;
    let i = this.find(w, d) - base;
    // Backward-shift deletion: entries after the hole that would be reached through it move into it.
    for (let j = (i + 1) & mask; ; j = (j + 1) & mask) {
      const k = this.tabDoc[base + j];
      if (k === -1) break;
      const home = (Math.imul(k, 0x9e3779b1) >>> 0) & mask;
      // k stays unless its home lies cyclically in (i, j].
      if (i <= j ? i < home && home <= j : i < home || home <= j) continue;
      this.tabDoc[base + i] = k;
      this.tabSlot[base + i] = this.tabSlot[base + j];
      i = j;
    }
    this.tabDoc[base + i] = -1;
  }
  /** A hit: the document (held by w) becomes w's most recent. */
  touch(w: number, d: number): void {
    const i = this.tabSlot[this.find(w, d)];
    const prev = this.prev;
    const next = this.next;
    next[prev[i]] = next[i];
    prev[next[i]] = prev[i];
    const s = w * (this.cap + 1);
    next[i] = next[s];
    prev[i] = s;
    prev[next[s]] = i;
    next[s] = i;
  }
  /** Inserts a document w does not hold; returns the document evicted, or -1. */
  insert(w: number, d: number): number {
    const prev = this.prev;
    const next = this.next;
    const s = w * (this.cap + 1);
    let i: number;
    let evicted = -1;
    if (this.used[w] < this.cap) i = s + 1 + this.used[w]++;
    else {
      i = prev[s];
      next[prev[i]] = next[i];
      prev[next[i]] = prev[i];
      evicted = this.key[i];
      this.forget(w, evicted);
    }
    this.key[i] = d;
    const at = this.find(w, d);
    this.tabDoc[at] = d;
    this.tabSlot[at] = i;
    next[i] = next[s];
    prev[i] = s;
    prev[next[s]] = i;
    next[s] = i;
    return evicted;
  }
}

interface SimOptions {
  workers: number;
  docs: number;
  requests: number;
  alpha: number;
  mode: Mode;
  docsPerRequest: number;
  memDocs: number;
  tokens: number;
  kvBytesPerToken: number;
  repeat: number;
  load: number;
  maxWaiting: number;
  homes: Uint8Array;
  zipf: { prob: Float64Array; alias: Int32Array };
  /** Rank → document id (popularity is not tied to the id, so not to a document's home). */
  order: Int32Array;
}

interface SimResult {
  alpha: number;
  mode: Mode;
  hit_rate: number;
  redis_bytes_per_request: number;
  compiles_per_request: number;
  load_max_over_mean: number;
  mean_backlog_at_assignment: number;
  fallback_share: number;
  seconds: number;
}

function simulate(o: SimOptions): SimResult {
  const t0 = performance.now();
  const W = o.workers;
  const K = o.docsPerRequest;
  const docs = o.docs;
  const homes = o.homes;
  // One draw reads one pair: the rank's alias probability, and its own and its alias's documents packed in one
  // float (d × 2^26 + alias document); three arrays read at random were three cache misses a draw.
  if (docs > 2 ** 26) throw new Error('--docs: at most 2^26');
  const draw = new Float64Array(2 * docs);
  for (let i = 0; i < docs; i++) {
    draw[2 * i] = o.zipf.prob[i];
    draw[2 * i + 1] = o.order[i] * 2 ** 26 + o.order[o.zipf.alias[i]];
  }
  let x = (0x9e3779b9 ^ Math.round(o.alpha * 1000)) >>> 0 || 1;
  const rnd = () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) / 4294967296;
  };
  const lru = new Lrus(W, o.memDocs);
  // Which workers hold each document in memory: 64 bits as two adjacent words (2d: workers 0-31, 2d + 1: 32-63).
  const held64 = new Uint32Array(2 * docs);
  const computed = new Uint8Array(docs);
  // Each worker's backlog drains at one request per time unit: it is kept as the time it will be idle (fin), so its
  // backlog at time t is max(0, fin - t).
  const fin = new Float64Array(W);
  const assigned = new Float64Array(W);
  const workerHashes = Array.from({ length: W }, (_, i) => hash32(`w${i}`));
  const ring = new Int32Array(1024 * K);
  let ringFill = 0;
  let ringAt = 0;
  const dt = 1 / (o.load * W);
  let t = 0;
  let hits = 0;
  let lookups = 0;
  let redisBytes = 0;
  let compiles = 0;
  let backlogSum = 0;
  let fallbacks = 0;
  const ctx = new Int32Array(K);
  const tokens = new Array<number>(K).fill(o.tokens);
  const cand = new Int32Array(W);
  const mark = new Int32Array(W).fill(-1);
  const candAt = new Int32Array(W);
  const held: Residence[][] = new Array<Residence[]>(W);
  // The row scoreWorkers reads for a candidate depends only on which of the request's chunks it holds: one read-only
  // row per bit set, made when first needed.
  const rowOf: Residence[][] = K <= 16 ? new Array<Residence[]>(1 << K) : [];
  const row = (bits: number): Residence[] => (rowOf[bits] ??= Array.from({ length: K }, (_, c): Residence => ((bits >>> c) & 1 ? 'm' : undefined)));
  const backlogs = new Float64Array(W);
  const hashes = new Uint32Array(W);
  const homesBuf = new Array<number>(K).fill(0);
  // held[w] as a bit set over the request's chunks, for the candidates: filled while collecting them.
  const heldBits = new Int32Array(W);
  const drained = (w: number) => {
    const b = fin[w] - t;
    return b > 0 ? b : 0;
  };
  /** The worker idle longest, or the one that will be idle first. */
  const leastLoaded = () => {
    let best = 0;
    for (let w = 1; w < W; w++) if (fin[w] < fin[best]) best = w;
    return best;
  };
  for (let r = 0; r < o.requests; r++) {
    t += dt;
    if (ringFill && rnd() < o.repeat) {
      const k = Math.floor(rnd() * ringFill) * K;
      for (let c = 0; c < K; c++) ctx[c] = ring[k + c];
    } else {
      for (let c = 0; c < K; c++) {
        const i = Math.floor(rnd() * docs);
        const both = draw[2 * i + 1];
        ctx[c] = rnd() < draw[2 * i] ? Math.floor(both / 2 ** 26) : both % 2 ** 26;
      }
      ring.set(ctx, ringAt * K);
      ringAt = (ringAt + 1) % 1024;
      if (ringFill < 1024) ringFill++;
    }
    let w: number;
    if (o.mode === 'round-robin') w = r % W;
    else if (o.mode === 'shared') w = leastLoaded();
    else {
      let n = 0;
      for (let c = 0; c < K; c++) {
        const d = ctx[c];
        const h = homes[d];
        if (mark[h] !== r) {
          mark[h] = r;
          candAt[h] = n;
          cand[n++] = h;
          heldBits[h] = 0;
        }
        const bitC = 1 << c;
        for (let m = held64[2 * d] | 0; m; m &= m - 1) {
          const y = 31 - Math.clz32(m & -m);
          if (mark[y] !== r) {
            mark[y] = r;
            candAt[y] = n;
            cand[n++] = y;
            heldBits[y] = 0;
          }
          heldBits[y] |= bitC;
        }
        for (let m = held64[2 * d + 1] | 0; m; m &= m - 1) {
          const y = 63 - Math.clz32(m & -m);
          if (mark[y] !== r) {
            mark[y] = r;
            candAt[y] = n;
            cand[n++] = y;
            heldBits[y] = 0;
          }
          heldBits[y] |= bitC;
        }
      }
      const ll = leastLoaded();
      if (mark[ll] !== r) {
        mark[ll] = r;
        candAt[ll] = n;
        cand[n++] = ll;
        heldBits[ll] = 0;
      }
      let ch = 0x811c9dc5;
      for (let c = 0; c < K; c++) {
        homesBuf[c] = candAt[homes[ctx[c]]];
        ch = Math.imul(ch ^ ctx[c], 0x01000193) >>> 0;
      }
      for (let i = 0; i < n; i++) {
        const y = cand[i];
        held[i] = row(heldBits[y]);
        backlogs[i] = drained(y);
        hashes[i] = workerHashes[y];
      }
      const { best } = scoreWorkers({
        tokens,
        chunkHashes: tokens,
        homes: homesBuf,
        held: held.slice(0, n),
        backlog: backlogs.subarray(0, n),
        workerHashes: hashes.subarray(0, n),
        contextHash: ch,
      });
      w = cand[best];
      if (drained(w) > o.maxWaiting) {
        w = ll;
        fallbacks++;
      }
    }
    const bw = drained(w);
    backlogSum += bw;
    fin[w] = t + bw + 1;
    assigned[w]++;
    const bit = w < 32 ? 1 << w : 1 << (w - 32);
    const half = w < 32 ? 0 : 1;
    for (let c = 0; c < K; c++) {
      const d = ctx[c];
      lookups++;
      if (held64[2 * d + half] & bit) {
        lru.touch(w, d);
        hits++;
        continue;
      }
      if (computed[d]) redisBytes += o.tokens * o.kvBytesPerToken;
      else {
        computed[d] = 1;
        compiles++;
      }
      held64[2 * d + half] |= bit;
      const old = lru.insert(w, d);
      if (old >= 0) held64[2 * old + half] &= ~bit;
    }
  }
  let max = 0;
  let sum = 0;
  for (const a of assigned) {
    max = Math.max(max, a);
    sum += a;
  }
  return {
    alpha: o.alpha,
    mode: o.mode,
    hit_rate: hits / lookups,
    redis_bytes_per_request: redisBytes / o.requests,
    compiles_per_request: compiles / o.requests,
    load_max_over_mean: max / (sum / W),
    mean_backlog_at_assignment: backlogSum / o.requests,
    fallback_share: fallbacks / o.requests,
    seconds: (performance.now() - t0) / 1000,
  };
}

type Base = Omit<SimOptions, 'alpha' | 'mode' | 'homes' | 'zipf' | 'order'>;

/** One (α, mode) run with its own copies of the homes, the popularity order and the Zipf table (a worker thread). */
function runOne(base: Base, alpha: number, mode: Mode): SimResult {
  const { workers, docs } = base;
  const workerHashes = Array.from({ length: workers }, (_, i) => hash32(`w${i}`));
  const homes = new Uint8Array(docs);
  for (let d = 0; d < docs; d++) homes[d] = homeOf(hash32(`doc${d}`), workerHashes);
  const order = new Int32Array(docs);
  for (let i = 0; i < docs; i++) order[i] = i;
  const rnd = xorshift(12345);
  for (let i = docs - 1; i > 0; i--) {
    const j = Math.floor(rnd() * (i + 1));
    [order[i], order[j]] = [order[j], order[i]];
  }
  return simulate({ ...base, alpha, mode, homes, zipf: zipfAlias(docs, alpha), order });
}

async function main() {
  const { values } = parseArgs({
    options: {
      workers: { type: 'string', default: '64' },
      docs: { type: 'string', default: '1000000' },
      requests: { type: 'string', default: '10000000' },
      alphas: { type: 'string', default: '0.6,0.9,1.1' },
      modes: { type: 'string', default: 'cache,round-robin,shared' },
      'docs-per-request': { type: 'string', default: '8' },
      'mem-docs': { type: 'string' },
      tokens: { type: 'string', default: '512' },
      'kv-bytes-per-token': { type: 'string', default: '2048' },
      repeat: { type: 'string', default: '0.2' },
      load: { type: 'string', default: '0.9' },
      'max-waiting': { type: 'string', default: '8' },
      threads: { type: 'string', default: '2' },
      out: { type: 'string', default: 'routing-sim' },
    },
  });
  const workers = Number(values.workers);
  if (!(workers >= 1 && workers <= 64)) throw new Error('--workers: 1..64');
  const docs = Number(values.docs);
  const perRequest = Number(values['docs-per-request']);
  // A request's chunks are a bit set in one 32-bit word per candidate worker.
  if (!(Number.isInteger(perRequest) && perRequest >= 1 && perRequest <= 31)) throw new Error('--docs-per-request: 1..31');
  const base: Base = {
    workers,
    docs,
    requests: Number(values.requests),
    docsPerRequest: perRequest,
    memDocs: Number(values['mem-docs'] ?? Math.floor(docs / 32)),
    tokens: Number(values.tokens),
    kvBytesPerToken: Number(values['kv-bytes-per-token']),
    repeat: Number(values.repeat),
    load: Number(values.load),
    maxWaiting: Number(values['max-waiting']),
  };
  const t0 = performance.now();
  const jobs = values.alphas!.split(',').map(Number).flatMap((alpha) => (values.modes!.split(',') as Mode[]).map((mode) => ({ alpha, mode })));
  const results: SimResult[] = new Array(jobs.length);
  let next = 0;
  const thread = async () => {
    while (next < jobs.length) {
      const k = next++;
      const { alpha, mode } = jobs[k];
      const r = await new Promise<SimResult>((resolve, reject) => {
        const w = new Worker(`require('tsx/cjs'); require(${JSON.stringify(__filename)});`, { eval: true, workerData: { base, alpha, mode } });
        w.once('message', resolve);
        w.once('error', reject);
        w.once('exit', (code) => code !== 0 && reject(new Error(`simulation thread exited with ${code}`)));
      });
      results[k] = r;
      console.log(`α=${alpha} ${mode}: hit rate ${r.hit_rate.toFixed(3)}, Redis ${(r.redis_bytes_per_request / 2 ** 20).toFixed(2)} MiB/request, load max/mean ${r.load_max_over_mean.toFixed(3)} (${r.seconds.toFixed(1)} s)`);
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Number(values.threads)) }, thread));
  const seconds = (performance.now() - t0) / 1000;
  const ratios = [...new Set(results.map((r) => r.alpha))].map((alpha) => {
    const of = (m: Mode) => results.find((r) => r.alpha === alpha && r.mode === m);
    const c = of('cache');
    const rr = of('round-robin');
    const sh = of('shared');
    return {
      alpha,
      hit_rate_ratio_cache_vs_round_robin: c && rr ? c.hit_rate / rr.hit_rate : null,
      hit_rate_ratio_cache_vs_shared: c && sh ? c.hit_rate / sh.hit_rate : null,
      redis_bytes_ratio_round_robin_vs_cache: c && rr ? rr.redis_bytes_per_request / c.redis_bytes_per_request : null,
    };
  });
  console.log(
    table(results.map((r) => ({ alpha: r.alpha, mode: r.mode, hit: r.hit_rate, 'Redis MiB/req': r.redis_bytes_per_request / 2 ** 20, 'compiles/req': r.compiles_per_request, 'max/mean load': r.load_max_over_mean, 'mean backlog': r.mean_backlog_at_assignment, fallback: r.fallback_share }))),
  );
  console.log(table(ratios.map((r) => ({ alpha: r.alpha, 'hit cache/rr': r.hit_rate_ratio_cache_vs_round_robin ?? NaN, 'hit cache/shared': r.hit_rate_ratio_cache_vs_shared ?? NaN, 'Redis bytes rr/cache': r.redis_bytes_ratio_round_robin_vs_cache ?? NaN }))));
  console.log(`total ${seconds.toFixed(1)} s`);
  const file = writeResult(values.out!, { machine: machine(), settings: { ...base, weights: DEFAULT_WEIGHTS }, seconds, results, ratios });
  const svg = groupedBarsSvg(
    [...new Set(results.map((r) => r.alpha))].map((alpha) => ({ label: `Zipf α = ${alpha}`, bars: results.filter((r) => r.alpha === alpha).map((r) => ({ series: r.mode, value: r.hit_rate })) })),
    { title: `Memory-tier hit rate by routing mode (${workers} workers, ${docs.toLocaleString('en')} docs, ${base.requests.toLocaleString('en')} requests)`, yLabel: 'hit rate', yMax: 1 },
  );
  writeFileSync(join(ROOT, 'bench', 'results', `${values.out}.svg`), svg);
  console.log(`wrote ${file}`);
}

if (isMainThread) {
  main().catch((e) => {
    console.error(e);
    process.exit(1);
  });
} else if (!isMainThread) {
  const { base, alpha, mode } = workerData as { base: Base; alpha: number; mode: Mode };
  parentPort!.postMessage(runOne(base, alpha, mode));
}
