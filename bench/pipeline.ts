/**
 * npm run bench:pipeline [-- --model DIR --requests N --overhead-runs N --reps N --modes attnlink-16,prefix,full]
 *
 * Starts the whole system (npm start's processes: API, inference worker, precompute worker) on free ports with its own
 * queue prefix, ingests a corpus, and measures, in one run:
 *  1. API + queue overhead per job: sequential /v1/completions; each response's Server-Timing says what the worker
 *     spent (link/prefill + decode), the rest of the client's latency is overhead (and where it went: api, queue,
 *     worker, reply). The client is node:http with a keep-alive connection; the same requests are then sent with
 *     Node's fetch, whose own cost is reported beside it. Then the same requests called on the engine directly in
 *     this process, side by side.
 *  2. Batch throughput through the API (POST /v1/jobs, wait for completion) in jobs/s for attnlink-16, prefix and full
 *     (64 documents of ~256 tokens) on the same requests: RAG-style, each request takes 8 documents drawn from the
 *     corpus in its own order. Each mode's batch runs --reps times (default 3, other document orders each time, the
 *     modes interleaved); the median is the figure. The time a batch's POST takes (validation, documents resolved,
 *     every job enqueued) is reported apart, as part of the batch's time.
 *  3. The transport floor (bench/transport.ts): the same HTTP → BullMQ → worker → reply path with a job of the same
 *     size and a worker that spins as long as the real one computed, but no model, documents or validation: what
 *     HTTP, Redis and BullMQ alone cost on this machine, beside the overhead of 1.
 * Writes bench/results/pipeline.json.
 */
import { Agent, request as httpRequest } from 'node:http';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { SingleBar, Presets } from 'cli-progress';
import { Engine } from '../shared/engine';
import { KVStore } from '../shared/kvstore';
import { link, storeSource } from '../shared/linking';
import { ROOT, machine, modelDirFromArgs, quantile, startOwnStack, table, writeResult } from './common';
import { measureTransportFloor } from './transport';

function rng(seed: number) {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

async function post(url: string, body: unknown): Promise<{ status: number; json: any; timing: string | null }> {
  const r = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  return { status: r.status, json: await r.json(), timing: r.headers.get('server-timing') };
}

/**
 * The same POST over node:http with a keep-alive agent: a lean client, so the overhead figure is the server's and not
 * the client library's (Node's fetch, undici, costs more per call; both are measured).
 */
const keepAlive = new Agent({ keepAlive: true, maxSockets: 1 });
function postHttp(url: string, body: unknown): Promise<{ status: number; json: any; timing: string | null }> {
  const data = Buffer.from(JSON.stringify(body));
  return new Promise((resolve, reject) => {
    const req = httpRequest(url, { method: 'POST', agent: keepAlive, headers: { 'content-type': 'application/json', 'content-length': data.length } }, (res) => {
      const parts: Buffer[] = [];
      res.on('data', (d: Buffer) => parts.push(d));
      res.on('end', () => {
        try {
          const t = res.headers['server-timing'];
          resolve({ status: res.statusCode ?? 0, json: JSON.parse(Buffer.concat(parts).toString('utf8')), timing: Array.isArray(t) ? t.join(', ') : (t ?? null) });
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

/** GET over the same keep-alive client: the HTTP round trip alone, the floor under every request's overhead. */
function getHttp(url: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(url, { agent: keepAlive }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end();
  });
}

/** One Server-Timing metric's duration (ms), 0 when absent. */
function timing(header: string | null, name: string): number {
  const m = new RegExp(`(?:^|,\\s*)${name};dur=([\\d.]+)`).exec(header ?? '');
  return m ? Number(m[1]) : 0;
}

/** What the worker spent computing (link + prefill, decode): the rest of the client's latency is overhead. */
function workerMs(header: string | null): number {
  return timing(header, 'prefill') + timing(header, 'decode');
}

async function main() {
  const { values } = parseArgs({ options: { model: { type: 'string' }, requests: { type: 'string' }, 'overhead-runs': { type: 'string' }, reps: { type: 'string' }, modes: { type: 'string' } } });
  const modelDir = values.model ?? modelDirFromArgs([]);
  // 192 requests: enough that throughput is measured in steady state, not in the ramp-up of the first batch.
  const nReq = Number(values.requests ?? 192);
  const overheadRuns = Number(values['overhead-runs'] ?? 100);
  const reps = Math.max(1, Number(values.reps ?? 3));
  const allModes = [
    { label: 'attnlink-16', mode: 'attnlink', k: 16 },
    { label: 'prefix', mode: 'prefix' },
    { label: 'full', mode: 'full' },
  ];
  // --modes picks some (profiling one mode); the ratios need all three.
  const wanted = values.modes?.split(',') ?? allModes.map((m) => m.label);
  const unknown = wanted.filter((w) => !allModes.some((m) => m.label === w));
  if (unknown.length) throw new Error(`--modes: unknown ${unknown.join(', ')}; one of ${allModes.map((m) => m.label).join(', ')}`);
  const modes = allModes.filter((m) => wanted.includes(m.label));
  const evalFile = join(ROOT, 'data', 'eval', 'qa-heldout.jsonl');
  const trained = modelDir.endsWith('epic-qa') && existsSync(evalFile);
  // Corpus: the documents of the first 8 held-out items (64 documents of ~256 tokens) for the trained model.
  let corpus: string[];
  let questions: string[];
  if (trained) {
    // The standard workload: documents of ~256 tokens (two consecutive held-out documents joined; each is ~100-128),
    // so a request's 8 documents make ~2,000 prompt tokens.
    const items = readFileSync(evalFile, 'utf8').split('\n').filter(Boolean).slice(0, 16).map((l) => JSON.parse(l));
    corpus = items.flatMap((i: { documents: string[] }) => [0, 2, 4, 6].map((k) => `${i.documents[k]} ${i.documents[k + 1]}`));
    questions = readFileSync(evalFile, 'utf8').split('\n').filter(Boolean).slice(0, nReq).map((l) => JSON.parse(l).question);
  } else {
    const words = 'the a an of to in and is was on for with by at from as it that this he she they his her their what where who when which lives works born city company'.split(' ');
    const r = rng(1);
    const sent = () => Array.from({ length: 10 }, () => words[Math.floor(r() * words.length)]).join(' ') + ' .';
    corpus = Array.from({ length: 64 }, () => Array.from({ length: 25 }, sent).join(' '));
    questions = Array.from({ length: nReq }, () => `Q : ${sent()} ? A :`);
  }

  const tag = `${process.pid}`;
  const queueRedis = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
  const stack = await startOwnStack('pipeline', modelDir);
  const stop = stack.stop;
  try {
    await stack.up(60_000);
    const base = stack.base;

    // Ingest and wait until every chunk is warm (precompute is not part of the timed runs).
    const ids: string[] = [];
    for (const [i, text] of corpus.entries()) {
      const r = await post(`${base}/v1/documents`, { text, id: `bench-${i}` });
      if (r.status !== 201) throw new Error(`ingest failed: ${JSON.stringify(r.json)}`);
      ids.push(r.json.id);
    }
    for (const id of ids) {
      for (let t = 0; t < 600; t++) {
        const d = (await (await fetch(`${base}/v1/documents/${id}`)).json()) as any;
        if (d.warm_chunks === d.chunks) break;
        await new Promise((r) => setTimeout(r, 100));
      }
    }
    // A batch of requests, each taking 8 documents in its own order; every seed gives other orders (so a repetition
    // is not served from prefix mode's cached blocks of the one before).
    const batchOf = (seed: number) => {
      const r = rng(seed);
      const pick = () => {
        const a = [...ids];
        for (let i = a.length - 1; i > 0; i--) {
          const j = Math.floor(r() * (i + 1));
          [a[i], a[j]] = [a[j], a[i]];
        }
        return a.slice(0, 8);
      };
      return questions.map((question) => ({ documents: pick(), question, max_tokens: 4 }));
    };
    const requests = batchOf(7);

    // 1. Overhead: sequential single completions (attnlink-16, chunks warm in the worker after the first pass).
    const engine = await Engine.load(modelDir);
    const store = await KVStore.open({ modelId: engine.id, shape: engine.shape, memory: { budgetBytes: 2 ** 31 }, disk: false, redis: false });
    const ctx = { engine, source: storeSource(engine, store, 'tenant:default') };
    const docTokens = new Map<string, number[][]>();
    const chunksOf = async (docs: string[]) => {
      const out: number[][] = [];
      for (const d of docs) {
        if (!docTokens.has(d)) {
          const text = corpus[Number(d.split('-')[1])];
          docTokens.set(d, (await import('../shared/chunking')).splitDocument(text, engine.tokenizer).map((c) => c.tokens));
        }
        out.push(...docTokens.get(d)!);
      }
      return out;
    };
    const e2e: number[] = [];
    const overhead: number[] = [];
    const overheadFetch: number[] = [];
    // What the worker computed per request (Server-Timing prefill + decode): the floor's worker spins as long.
    const computeMs: number[] = [];
    const direct: number[] = [];
    // Server-Timing parts; `http` is the client's latency minus the server's `total` (the round trip, both HTTP stacks).
    const parts = { api: [] as number[], queue: [] as number[], worker: [] as number[], reply: [] as number[], http: [] as number[] };
    const floor: number[] = [];
    for (let i = 0; i < overheadRuns + 5; i++) {
      const t0 = performance.now();
      if ((await getHttp(`${base}/healthz`)) !== 200) throw new Error('/healthz did not answer 200');
      if (i >= 5) floor.push(performance.now() - t0);
    }
    const bar = new SingleBar({ format: 'overhead {bar} {value}/{total}', stream: process.stderr }, Presets.shades_classic);
    bar.start(3 * overheadRuns, 0);
    // Phase A, through the API (node:http keep-alive client, then fetch); phase B, the same requests on the engine in
    // this process. Not interleaved: the engine's allocations in this process would otherwise put its garbage
    // collection inside the API's timings.
    for (const client of ['http', 'fetch'] as const) {
      for (let i = 0; i < overheadRuns + 5; i++) {
        const req = requests[i % requests.length];
        const body = { prompt: req.question, documents: req.documents, max_tokens: 4, mode: 'attnlink', k: 16 };
        const t0 = performance.now();
        const res = client === 'http' ? await postHttp(`${base}/v1/completions`, body) : await post(`${base}/v1/completions`, body);
        const ms = performance.now() - t0;
        if (res.status !== 200) throw new Error(JSON.stringify(res.json));
        if (i < 5) continue; // warm-up: first touches of chunks in the worker's memory tier
        if (client === 'fetch') {
          overheadFetch.push(ms - workerMs(res.timing));
        } else {
          e2e.push(ms);
          computeMs.push(workerMs(res.timing));
          overhead.push(ms - workerMs(res.timing));
          for (const k of ['api', 'queue', 'worker', 'reply'] as const) parts[k].push(timing(res.timing, k));
          parts.http.push(ms - timing(res.timing, 'total'));
        }
        bar.increment();
      }
    }
    for (let i = 0; i < overheadRuns + 5; i++) {
      const req = requests[i % requests.length];
      const chunks = await chunksOf(req.documents);
      const question = engine.tokenizer.encode(req.question);
      const input = { prefix: [engine.config.bosTokenId], chunks, question };
      (await link(ctx, input, { mode: 'attnlink', k: 16 }, 4)).cache.release(); // warm: chunks compiled
      const d0 = performance.now();
      const l = await link(ctx, input, { mode: 'attnlink', k: 16 }, 4);
      await engine.generate(l.cache, [l.logits], { maxTokens: 4 });
      const dms = performance.now() - d0;
      l.cache.release();
      if (i < 5) continue;
      direct.push(dms);
      bar.increment();
    }
    bar.stop();
    await store.close();
    process.stderr.write('transport floor (HTTP + BullMQ + reply, no model)...\n');
    const floorMs = await measureTransportFloor({
      redisUrl: queueRedis,
      runs: overheadRuns,
      warmup: 20,
      spinMs: quantile(computeMs, 0.5),
      // The real job's size: its chunks' and question's token ids.
      tokens: (await chunksOf(requests[0].documents)).reduce((n, c) => n + c.length, 0) + engine.tokenizer.encode(requests[0].question).length,
      tag,
    });

    // 2. Throughput: the same batch in each mode, `reps` times with other document orders, the modes interleaved
    // (attnlink-16's batch takes ~2 s, so one run of it is at the mercy of the machine's moment); the median counts.
    const perRep: Record<string, number[]> = Object.fromEntries(modes.map((m) => [m.label, []]));
    // How long POST /v1/jobs took (validate, resolve documents, enqueue every request): part of each batch's time.
    const submitMs: Record<string, number[]> = Object.fromEntries(modes.map((m) => [m.label, []]));
    for (let rep = 0; rep < reps; rep++) {
      const batch = rep === 0 ? requests : batchOf(7 + rep);
      for (const m of modes) {
        const t0 = performance.now();
        const sub = await post(`${base}/v1/jobs`, { requests: batch.map((q) => ({ ...q, mode: m.mode, k: m.k })) });
        submitMs[m.label].push(performance.now() - t0);
        if (sub.status !== 202) throw new Error(JSON.stringify(sub.json));
        for (;;) {
          const j = (await (await fetch(`${base}/v1/jobs/${sub.json.id}`)).json()) as any;
          if (j.status === 'completed') {
            if (j.failed) throw new Error(`${j.failed} requests failed`);
            break;
          }
          await new Promise((r) => setTimeout(r, 20));
        }
        const s = (performance.now() - t0) / 1000;
        perRep[m.label].push(batch.length / s);
        process.stderr.write(`throughput ${m.label} (repetition ${rep + 1}/${reps}): ${(batch.length / s).toFixed(2)} jobs/s\n`);
      }
    }
    const jobsPerS: Record<string, number> = Object.fromEntries(modes.map((m) => [m.label, quantile(perRep[m.label], 0.5)]));
    const result = {
      model: modelDir,
      machine: machine(),
      corpus_documents: corpus.length,
      requests: requests.length,
      overhead_runs: overheadRuns,
      overhead_ms_p50: quantile(overhead, 0.5),
      overhead_ms_p90: quantile(overhead, 0.9),
      // The same requests sent with Node's fetch (undici) instead of node:http: the client library's own cost.
      overhead_ms_p50_fetch_client: quantile(overheadFetch, 0.5),
      // The same path (HTTP, BullMQ, worker, reply) with no model, documents or validation, and a worker busy as long
      // as the real one: what the transport alone costs on this machine (bench/transport.ts).
      transport_floor_ms_p50: floorMs.p50,
      transport_floor_ms_p90: floorMs.p90,
      overhead_above_floor_ms_p50: quantile(overhead, 0.5) - floorMs.p50,
      // GET /healthz over the same client: the HTTP round trip that every request pays, with no work behind it.
      http_floor_ms_p50: quantile(floor, 0.5),
      // Where the overhead goes (Server-Timing): validate+resolve+enqueue, queue wait, worker bookkeeping, result back to
      // the API, and http: the client's latency minus the server's total (both HTTP stacks and the wire).
      overhead_breakdown_ms_p50: Object.fromEntries(Object.entries(parts).map(([k, v]) => [k, quantile(v, 0.5)])),
      e2e_ms_p50: quantile(e2e, 0.5),
      direct_engine_ms_p50: quantile(direct, 0.5),
      e2e_minus_direct_ms_p50: quantile(e2e, 0.5) - quantile(direct, 0.5),
      throughput_repetitions: reps,
      // median over the repetitions; every repetition's figure beside it
      throughput_jobs_per_s: jobsPerS,
      throughput_jobs_per_s_each: perRep,
      // POST /v1/jobs of the whole batch (median per mode): the part of a batch's time before every job is queued
      submit_ms_p50: Object.fromEntries(modes.map((m) => [m.label, quantile(submitMs[m.label], 0.5)])),
      throughput_ratio_attnlink_vs_full: jobsPerS['attnlink-16'] && jobsPerS.full ? jobsPerS['attnlink-16'] / jobsPerS.full : null,
      throughput_ratio_attnlink_vs_prefix: jobsPerS['attnlink-16'] && jobsPerS.prefix ? jobsPerS['attnlink-16'] / jobsPerS.prefix : null,
    };
    console.log(`model ${modelDir}; ${corpus.length} documents; ${requests.length} requests of 8 documents each`);
    console.log(
      table([
        {
          'overhead p50 ms': result.overhead_ms_p50,
          'overhead p90 ms': result.overhead_ms_p90,
          'overhead p50 ms (fetch client)': result.overhead_ms_p50_fetch_client,
          'transport floor p50 ms': result.transport_floor_ms_p50,
          'HTTP floor p50 ms': result.http_floor_ms_p50,
          'API e2e p50 ms': result.e2e_ms_p50,
          'direct engine p50 ms': result.direct_engine_ms_p50,
        },
      ]),
    );
    console.log(`overhead p50 by part (ms): ${Object.entries(result.overhead_breakdown_ms_p50).map(([k, v]) => `${k} ${v.toFixed(2)}`).join(', ')}`);
    console.log(
      table(
        modes.map((m) => ({
          mode: m.label,
          'jobs/s (median)': jobsPerS[m.label],
          'each repetition': perRep[m.label].map((v) => v.toFixed(1)).join(' / '),
          'submit ms (median)': quantile(submitMs[m.label], 0.5),
        })),
      ),
    );
    console.log(
      `attnlink-16 vs full: ${result.throughput_ratio_attnlink_vs_full?.toFixed(2) ?? '-'}x jobs/s; vs prefix: ${result.throughput_ratio_attnlink_vs_prefix?.toFixed(2) ?? '-'}x; API+queue overhead p50 ${result.overhead_ms_p50.toFixed(2)} ms`,
    );
    // The committed result is a whole run's: a partial one (--modes) is printed, not written.
    if (modes.length === allModes.length) console.log(`wrote ${writeResult('pipeline', result)}`);
  } finally {
    keepAlive.destroy();
    await stop();
  }
}

main().catch((e) => {
  console.error(`bench:pipeline: ${e instanceof Error ? e.message : String(e)}`);
  process.exit(1);
});
