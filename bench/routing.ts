/**
 * npm run bench:routing [-- --model DIR --requests 2000 --docs 512 --alpha 0.9 --concurrency 32 --modes shared,round-robin,cache]
 *
 * Cache-aware routing measured on the real stack: per routing mode, `WORKERS=4 ROUTING=<mode> npm start` (API, four
 * inference workers, precompute) on free ports under the bench's own Redis prefixes, each worker's memory tier capped
 * to a quarter of the chunk pool (KV_MEMORY_BYTES; no disk tier, so a memory miss reads Redis), the documents ingested
 * (precompute puts every chunk in Redis), then one trace:
 *   --requests (2,000) requests over --docs (512) documents of ~256 tokens, each request --per-request (8) distinct
 *   documents drawn by Zipf(--alpha, 0.9) popularity, a fraction --repeat (0.2) repeating one of the last 64
 *   contexts; sent by --concurrency (32) clients in a closed loop as /v1/completions (max_tokens 8).
 * The same trace, in the same order, for every mode. Per mode: memory-tier hit rate (chunk lookups the worker's own
 * memory served, over all its lookups), Redis reads, compiles (every worker's metrics), TTFT p50/p90 (Server-Timing:
 * api + queue + prefill), jobs/s, and max/mean jobs per worker. Writes bench/results/routing.json with the ratios
 * hit_rate_ratio_cache_vs_round_robin, ttft_p50_ratio_round_robin_vs_cache and jobs_per_s_ratio_cache_vs_shared.
 */
import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { Agent, request as httpRequest } from 'node:http';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { splitDocument } from '../shared/chunking';
import { loadModelConfig, loadTokenizer } from '../shared/engine';
import { ROOT, machine, modelDirFromArgs, quantile, startStack, table, writeResult } from './common';
import { dropKeys, ownPrefixes } from '../test/helpers/redis';
import { freePort } from '../test/helpers/net';

const MODES = ['shared', 'round-robin', 'cache'] as const;
type Mode = (typeof MODES)[number];
const WORKERS = 4;

function rng(seed: number) {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

const agent = new Agent({ keepAlive: true, maxSockets: 256 });
function postJson(url: string, body: unknown): Promise<{ status: number; json: any; timing: string }> {
  const data = Buffer.from(JSON.stringify(body));
  return new Promise((resolve, reject) => {
    const req = httpRequest(url, { method: 'POST', agent, headers: { 'content-type': 'application/json', 'content-length': data.length } }, (res) => {
      const parts: Buffer[] = [];
      res.on('data', (d: Buffer) => parts.push(d));
      res.on('end', () => {
        try {
          const t = res.headers['server-timing'];
          resolve({ status: res.statusCode ?? 0, json: JSON.parse(Buffer.concat(parts).toString('utf8')), timing: Array.isArray(t) ? t.join(', ') : (t ?? '') });
        } catch (e) {
          reject(e);
        }
      });
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(data);
  });
}

function timing(header: string, name: string): number {
  const m = new RegExp(`(?:^|,\\s*)${name};dur=([\\d.]+)`).exec(header);
  return m ? Number(m[1]) : 0;
}

/** Sum of a metric's samples whose labels contain every `match` pair. */
function metricSum(text: string, name: string, match: Record<string, string> = {}): number {
  let sum = 0;
  for (const line of text.split('\n')) {
    const m = /^([a-zA-Z_:][\w:]*)(\{[^}]*\})?\s+(\S+)/.exec(line);
    if (!m || m[1] !== name) continue;
    if (Object.entries(match).every(([k, v]) => (m[2] ?? '').includes(`${k}="${v}"`))) sum += Number(m[3]);
  }
  return sum;
}

/** Four ports in a row, all free a moment ago (the workers' metrics ports: npm start gives worker i the base + i). */
async function freeRun(avoid: number[]): Promise<number> {
  for (let attempt = 0; attempt < 50; attempt++) {
    const base = 20000 + Math.floor(Math.random() * 40000);
    const ports = Array.from({ length: WORKERS + 2 }, (_, i) => base + i);
    if (ports.some((p) => avoid.includes(p))) continue;
    const ok = await Promise.all(
      ports.map(
        (p) =>
          new Promise<boolean>((resolve) => {
            const s = require('node:net').createServer();
            s.once('error', () => resolve(false));
            s.listen(p, '127.0.0.1', () => s.close(() => resolve(true)));
          }),
      ),
    );
    if (ok.every(Boolean)) return base;
  }
  throw new Error('no run of free ports found');
}

interface ModeResult {
  mode: Mode;
  requests: number;
  errors: number;
  seconds: number;
  jobs_per_s: number;
  ttft_p50_ms: number;
  ttft_p90_ms: number;
  e2e_p50_ms: number;
  memory_hit_rate: number;
  memory_hits: number;
  chunk_lookups: number;
  redis_reads: number;
  compiles: number;
  jobs_per_worker: number[];
  load_max_over_mean: number;
  decisions: Record<string, number>;
  load_average: number[];
}

async function runMode(
  mode: Mode,
  o: { modelDir: string; docs: string[]; trace: { docs: number[]; question: string }[]; memoryBytes: number; concurrency: number; kvPrefix: string },
): Promise<ModeResult> {
  const api = await freePort();
  const pm = await freePort();
  const wm = await freeRun([api, pm]);
  const tStart = performance.now();
  // Queue and catalog under the mode's own prefixes; the KV store's Redis tier shared by the modes (its chunks are
  // precomputed once, so every mode starts with every chunk in Redis and each worker's memory empty).
  const prefixes = { ...ownPrefixes(`epic-bench-routing-${process.pid}-${mode}`), KV_REDIS_PREFIX: o.kvPrefix };
  const kvDir = mkdtempSync(join(tmpdir(), 'epic-bench-routing-'));
  const env = {
    ...process.env,
    ...prefixes,
    API_PORT: String(api),
    WORKER_METRICS_PORT: String(wm),
    PRECOMPUTE_METRICS_PORT: String(pm),
    WORKERS: String(WORKERS),
    ROUTING: mode,
    KV_MEMORY_BYTES: String(o.memoryBytes),
    KV_DISK_BYTES: '0',
    KV_DISK_DIR: kvDir,
    MODEL_DIR: o.modelDir,
    ORT_THREADS: '1',
    LOG_LEVEL: 'warn',
  };
  const stack = startStack(env, kvDir, () => dropKeys(process.env.REDIS_URL ?? 'redis://127.0.0.1:6379', [prefixes.QUEUE_PREFIX, prefixes.CATALOG_PREFIX]));
  const stop = stack.stop;
  try {
    await stack.up(180_000);
    const base = `http://127.0.0.1:${api}`;
    const workerPorts = Array.from({ length: WORKERS }, (_, i) => {
      let p = wm;
      for (let k = 0; k < i; k++) do p++; while (p === api || p === pm);
      return p;
    });
    // Ingest, and wait until every chunk is in Redis (precompute is not part of the measured run).
    const tUp = performance.now();
    const ids: string[] = new Array(o.docs.length);
    let at = 0;
    await Promise.all(
      Array.from({ length: 16 }, async () => {
        while (at < o.docs.length) {
          const i = at++;
          const r = await postJson(`${base}/v1/documents`, { text: o.docs[i], id: `rt-${i}` });
          if (r.status !== 201) throw new Error(`ingest failed: ${JSON.stringify(r.json)}`);
          ids[i] = r.json.id;
        }
      }),
    );
    for (const id of ids) {
      for (let t = 0; t < 1200; t++) {
        const d = (await (await fetch(`${base}/v1/documents/${id}`)).json()) as any;
        if (d.warm_chunks === d.chunks) break;
        await new Promise((r) => setTimeout(r, 100));
      }
    }
    console.log(`${mode}: stack up in ${((tUp - tStart) / 1000).toFixed(0)} s, documents ingested and warm in Redis in ${((performance.now() - tUp) / 1000).toFixed(0)} s`);
    const ttft: number[] = [];
    const e2e: number[] = [];
    let errors = 0;
    let next = 0;
    const t0 = performance.now();
    const client = async () => {
      while (next < o.trace.length) {
        const q = o.trace[next++];
        const s = performance.now();
        const r = await postJson(`${base}/v1/completions`, { prompt: q.question, documents: q.docs.map((d) => ids[d]), max_tokens: 8 });
        if (r.status !== 200) {
          errors++;
          continue;
        }
        e2e.push(performance.now() - s);
        ttft.push(timing(r.timing, 'api') + timing(r.timing, 'queue') + timing(r.timing, 'prefill'));
      }
    };
    await Promise.all(Array.from({ length: o.concurrency }, client));
    const seconds = (performance.now() - t0) / 1000;
    const scraped = await Promise.all(workerPorts.map(async (p) => (await fetch(`http://127.0.0.1:${p}/metrics`)).text()));
    const apiMetrics = await (await fetch(`${base}/metrics`)).text();
    const sum = (name: string, match: Record<string, string> = {}) => scraped.reduce((a, t) => a + metricSum(t, name, match), 0);
    const memoryHits = sum('epic_kv_chunk_lookups_total', { tier: 'memory', result: 'hit' });
    const lookups = memoryHits + sum('epic_kv_chunk_lookups_total', { tier: 'memory', result: 'miss' });
    const jobs = scraped.map((t) => metricSum(t, 'epic_requests_total'));
    const mean = jobs.reduce((a, b) => a + b, 0) / jobs.length;
    const decisions: Record<string, number> = {};
    for (const d of ['best', 'fallback', 'round_robin', 'shared']) decisions[d] = metricSum(apiMetrics, 'epic_routing_decisions_total', { decision: d });
    for (const d of ['stolen', 'adopted']) decisions[d] = sum('epic_routing_decisions_total', { decision: d });
    return {
      mode,
      requests: o.trace.length,
      errors,
      seconds,
      jobs_per_s: (o.trace.length - errors) / seconds,
      ttft_p50_ms: quantile(ttft, 0.5),
      ttft_p90_ms: quantile(ttft, 0.9),
      e2e_p50_ms: quantile(e2e, 0.5),
      memory_hit_rate: lookups ? memoryHits / lookups : 0,
      memory_hits: memoryHits,
      chunk_lookups: lookups,
      redis_reads: sum('epic_kv_chunk_lookups_total', { tier: 'redis', result: 'hit' }),
      compiles: sum('epic_kv_compiles_total'),
      jobs_per_worker: jobs,
      load_max_over_mean: mean ? Math.max(...jobs) / mean : 0,
      decisions,
      load_average: loadavg().map((x) => Math.round(x * 100) / 100),
    };
  } finally {
    await stop();
  }
}

async function main() {
  const { values } = parseArgs({
    options: {
      model: { type: 'string' },
      requests: { type: 'string', default: '2000' },
      docs: { type: 'string', default: '512' },
      'per-request': { type: 'string', default: '8' },
      alpha: { type: 'string', default: '0.9' },
      repeat: { type: 'string', default: '0.2' },
      concurrency: { type: 'string', default: '32' },
      modes: { type: 'string', default: MODES.join(',') },
    },
  });
  const modelDir = values.model ?? modelDirFromArgs([]);
  const nDocs = Number(values.docs);
  const nReq = Number(values.requests);
  const per = Number(values['per-request']);
  const alpha = Number(values.alpha);
  const modes = values.modes!.split(',') as Mode[];
  for (const m of modes) if (!MODES.includes(m)) throw new Error(`--modes: unknown ${m}`);
  const evalFile = join(ROOT, 'data', 'eval', 'qa-heldout.jsonl');
  if (!existsSync(evalFile)) throw new Error(`bench:routing needs ${evalFile} (the held-out documents)`);
  const items = readFileSync(evalFile, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l) as { documents: string[]; question: string });
  // Documents of ~256 tokens: two consecutive held-out documents joined (as bench:pipeline's), distinct texts.
  const docs: string[] = [];
  for (const it of items) {
    for (let k = 0; k + 1 < it.documents.length && docs.length < nDocs; k += 2) docs.push(`${it.documents[k]} ${it.documents[k + 1]}`);
    if (docs.length >= nDocs) break;
  }
  if (docs.length < nDocs) throw new Error(`only ${docs.length} documents in ${evalFile}`);
  // The chunk pool's bytes in a worker's memory (float32 KV, as the memory tier charges a block).
  const model = loadModelConfig(modelDir);
  const tokenizer = loadTokenizer(model);
  const perToken = model.layers * 2 * model.kvHeads * model.headDim * 4 + 8;
  let chunks = 0;
  let poolBytes = 0;
  for (const d of docs) {
    for (const c of splitDocument(d, tokenizer)) {
      chunks++;
      poolBytes += c.tokens.length * perToken + 256;
    }
  }
  const memoryBytes = Math.floor(poolBytes / 4);
  // The trace: Zipf(alpha) popularity over a seeded order of the documents; repeated contexts.
  const r = rng(20);
  const weights = docs.map((_, i) => 1 / Math.pow(i + 1, alpha));
  const total = weights.reduce((a, b) => a + b, 0);
  const cdf: number[] = [];
  weights.reduce((a, w, i) => (cdf[i] = a + w / total), 0);
  const order = docs.map((_, i) => i);
  for (let i = order.length - 1; i > 0; i--) {
    const j = Math.floor(r() * (i + 1));
    [order[i], order[j]] = [order[j], order[i]];
  }
  const draw = () => {
    const u = r();
    let lo = 0;
    let hi = cdf.length - 1;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (cdf[mid] < u) lo = mid + 1;
      else hi = mid;
    }
    return order[lo];
  };
  const trace: { docs: number[]; question: string }[] = [];
  const recent: number[][] = [];
  let repeated = 0;
  for (let i = 0; i < nReq; i++) {
    let ctx: number[];
    if (recent.length && r() < Number(values.repeat)) {
      ctx = recent[Math.floor(r() * recent.length)];
      repeated++;
    } else {
      const set = new Set<number>();
      while (set.size < per) set.add(draw());
      ctx = [...set];
      recent.push(ctx);
      if (recent.length > 64) recent.shift();
    }
    trace.push({ docs: ctx, question: items[i % items.length].question });
  }
  console.log(
    `bench:routing: ${WORKERS} workers, ${docs.length} documents (${chunks} chunks, pool ${(poolBytes / 2 ** 20).toFixed(1)} MiB, memory tier ${(memoryBytes / 2 ** 20).toFixed(1)} MiB a worker), ${nReq} requests (${repeated} repeat a context), Zipf ${alpha}, ${per} documents a request, ${values.concurrency} clients; load average ${loadavg()
      .map((x) => x.toFixed(2))
      .join(' ')}`,
  );
  const results: ModeResult[] = [];
  const kvPrefix = `epic-bench-routing-${process.pid}:kv`;
  for (const mode of modes) {
    const res = await runMode(mode, { modelDir, docs, trace, memoryBytes, concurrency: Number(values.concurrency), kvPrefix }).catch(async (e) => {
      await dropKeys(process.env.KV_REDIS_URL ?? process.env.REDIS_URL ?? 'redis://127.0.0.1:6379', [kvPrefix]);
      throw e;
    });
    results.push(res);
    console.log(
      `${mode}: memory hit rate ${res.memory_hit_rate.toFixed(3)}, Redis reads ${res.redis_reads}, compiles ${res.compiles}, TTFT p50 ${res.ttft_p50_ms.toFixed(1)} ms p90 ${res.ttft_p90_ms.toFixed(1)} ms, ${res.jobs_per_s.toFixed(2)} jobs/s, jobs per worker ${res.jobs_per_worker.join('/')} (max/mean ${res.load_max_over_mean.toFixed(2)}), errors ${res.errors}, load average ${res.load_average.join(' ')}`,
    );
  }
  await dropKeys(process.env.KV_REDIS_URL ?? process.env.REDIS_URL ?? 'redis://127.0.0.1:6379', [kvPrefix]);
  const of = (m: Mode) => results.find((x) => x.mode === m);
  const c = of('cache');
  const rr = of('round-robin');
  const sh = of('shared');
  const ratios = {
    hit_rate_ratio_cache_vs_round_robin: c && rr ? c.memory_hit_rate / rr.memory_hit_rate : null,
    ttft_p50_ratio_round_robin_vs_cache: c && rr ? rr.ttft_p50_ms / c.ttft_p50_ms : null,
    jobs_per_s_ratio_cache_vs_shared: c && sh ? c.jobs_per_s / sh.jobs_per_s : null,
    hit_rate_ratio_cache_vs_shared: c && sh ? c.memory_hit_rate / sh.memory_hit_rate : null,
  };
  console.log(
    table(
      results.map((x) => ({
        mode: x.mode,
        'mem hit': x.memory_hit_rate,
        'Redis reads': x.redis_reads,
        compiles: x.compiles,
        'TTFT p50 ms': x.ttft_p50_ms,
        'TTFT p90 ms': x.ttft_p90_ms,
        'jobs/s': x.jobs_per_s,
        'max/mean load': x.load_max_over_mean,
      })),
    ),
  );
  console.log(JSON.stringify(ratios));
  const file = writeResult('routing', {
    machine: machine(),
    settings: { workers: WORKERS, documents: docs.length, chunks, pool_bytes: poolBytes, memory_tier_bytes: memoryBytes, requests: nReq, repeated_contexts: repeated, zipf_alpha: alpha, documents_per_request: per, concurrency: Number(values.concurrency), model: modelDir },
    ...ratios,
    modes: results,
  });
  console.log(`wrote ${file}`);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
