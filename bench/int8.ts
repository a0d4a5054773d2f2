/**
 * npm run bench:int8 [-- --threads 2 --rounds 3]
 *
 * int8 weights (tools/model/quantize.py) against float32 at bench:shapes' SmolLM2-135M shape (issue #19), side by side
 * in one run. Each engine lives in its own child process (so its RSS is its own); this process hands them the same
 * steps in turn (float32 then int8, the order swapped every round), so load from elsewhere falls on both alike. After
 * one warm-up round, each round measures:
 *   - prefill of a 512-token chunk (tokens/s);
 *   - a full prefill of bench:shapes' prompt (<bos> + 8 x 512-token chunks + a 32-token question = 4,129 tokens,
 *     Engine.prefill) and decode ms/token at that context (8 greedy tokens after it);
 *   - attnlink-16 TTFT on the same prompt, its chunks hot in a KVStore memory tier (bench:shapes' workload);
 * and per engine the RSS after load and the peak RSS (VmHWM) of the whole run.
 * Builds what is missing: .cache/shapes/smollm2-135m (bench/shapes/build.py) and .cache/shapes/smollm2-135m-int8
 * (quantize.py). Writes bench/results/int8.json with the ratios (int8 over float32 for speeds and memory).
 */
import { fork, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { Engine } from '../shared/engine';
import { KVStore } from '../shared/kvstore';
import { link, storeSource, type LinkInput } from '../shared/linking';
import { ROOT, machine, quantile, table, writeResult } from './common';
import { ANSWER_TOKENS, CHUNK_TOKENS, CHUNKS, QUESTION_TOKENS, ids, vmHWM } from './shapes/workload';

const SHAPE = 'smollm2-135m';
const SHAPE_FP32 = join(ROOT, '.cache', 'shapes', SHAPE);
const SHAPE_INT8 = join(ROOT, '.cache', 'shapes', `${SHAPE}-int8`);
const PYTHON = process.env.EPIC_PYTHON ?? '/usr/bin/python3';

type Step = 'prefill512' | 'full' | 'attnlink16';
interface StepResult {
  ms: number;
  decodeMsPerToken?: number;
}
type Msg = { op: 'step'; step: Step; round: number } | { op: 'stats' } | { op: 'exit' };

// ---------- child: one engine ----------

async function child(dir: string, threads: number, nChunks: number): Promise<void> {
  const engine = await Engine.load(dir, { intraOpThreads: threads });
  const rssAfterLoad = process.memoryUsage().rss;
  const lo = 3;
  const hi = engine.config.vocabSize;
  const { layers, kvHeads, headDim } = engine.shape;
  const kvPerToken = layers * 2 * kvHeads * headDim * 4;
  // bench:shapes' prompt 1: its chunks hot in the memory tier (compiled once, before the rounds)
  const chunks = Array.from({ length: nChunks }, (_, i) => ids(CHUNK_TOKENS, 7919 * 2 + i, lo, hi));
  const input: LinkInput = { prefix: [engine.config.bosTokenId], chunks, question: ids(QUESTION_TOKENS, 31 * 2 + 5, lo, hi) };
  const prompt = [...input.prefix, ...chunks.flat(), ...input.question];
  const store = await KVStore.open({ modelId: engine.id, shape: engine.shape, memory: { budgetBytes: Math.ceil(1.05 * nChunks * CHUNK_TOKENS * kvPerToken) }, disk: false, redis: false });
  const source = storeSource(engine, store);
  for (const c of chunks) await source.chunk(c, { kind: 'plain' });

  const run = async (step: Step, round: number): Promise<StepResult> => {
    if (step === 'prefill512') {
      const toks = ids(CHUNK_TOKENS, 1000 + round, lo, hi);
      const t = performance.now();
      const { cache } = await engine.prefill([toks]);
      const ms = performance.now() - t;
      cache.release();
      return { ms };
    }
    if (step === 'full') {
      const t = performance.now();
      const { cache, logits } = await engine.prefill([prompt], ANSWER_TOKENS);
      const ms = performance.now() - t;
      const t1 = performance.now();
      const gen = await engine.generate(cache, logits, { maxTokens: ANSWER_TOKENS, stopIds: [] });
      const decodeMs = performance.now() - t1;
      cache.release();
      return { ms, decodeMsPerToken: decodeMs / Math.max(1, gen.tokens[0].length - 1) };
    }
    const l = await link({ engine, source }, input, { mode: 'attnlink', k: 16 }, ANSWER_TOKENS);
    l.cache.release();
    return { ms: l.stats.ttftMs };
  };

  process.on('message', (m: Msg) => {
    void (async () => {
      try {
        if (m.op === 'step') process.send!({ ok: true, result: await run(m.step, m.round) });
        else if (m.op === 'stats') process.send!({ ok: true, result: { rssAfterLoad, peakRss: vmHWM(), rss: process.memoryUsage().rss } });
        else {
          await store.close();
          process.exit(0);
        }
      } catch (e) {
        process.send!({ ok: false, error: e instanceof Error ? e.stack : String(e) });
      }
    })();
  });
  process.send!({ ok: true, result: 'ready' });
}

// ---------- parent ----------

class Worker {
  private readonly proc: ChildProcess;
  private pending?: { resolve: (v: unknown) => void; reject: (e: Error) => void };

  constructor(
    readonly label: string,
    dir: string,
    threads: number,
    chunks: number,
  ) {
    this.proc = fork(__filename, ['--child', dir, '--threads', String(threads), '--chunks', String(chunks)], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    this.proc.on('message', (m: { ok: boolean; result?: unknown; error?: string }) => {
      const p = this.pending;
      this.pending = undefined;
      if (m.ok) p?.resolve(m.result);
      else p?.reject(new Error(`${label}: ${m.error}`));
    });
    this.proc.on('exit', (code) => this.pending?.reject(new Error(`${label} exited with code ${code}`)));
  }

  private next<T>(): Promise<T> {
    return new Promise<T>((resolve, reject) => (this.pending = { resolve: resolve as (v: unknown) => void, reject }));
  }

  ready(): Promise<unknown> {
    return this.next();
  }

  ask<T>(m: Msg): Promise<T> {
    const p = this.next<T>();
    this.proc.send(m);
    return p;
  }

  async exit(): Promise<void> {
    const done = new Promise((r) => this.proc.once('exit', r));
    this.proc.send({ op: 'exit' } satisfies Msg);
    await done;
  }
}

function ensureModels(): void {
  const build = (args: string[], what: string) => {
    process.stderr.write(`bench:int8: ${what} ...\n`);
    const r = spawnSync(PYTHON, args, { cwd: ROOT, stdio: 'inherit' });
    if (r.status !== 0) throw new Error(`${what} failed (exit ${r.status})`);
  };
  // build.py keeps a fresh shape and rebuilds a stale one; the int8 copy is remade when the shape is newer
  const FP32 = SHAPE_FP32;
  const INT8 = SHAPE_INT8;
  build([join(ROOT, 'bench', 'shapes', 'build.py'), '--only', SHAPE], `checking ${FP32}`);
  const graph = (d: string) => join(d, 'model_epic.onnx');
  if (!existsSync(graph(INT8)) || statSync(graph(INT8)).mtimeMs < statSync(graph(FP32)).mtimeMs) {
    build([join(ROOT, 'tools', 'model', 'quantize.py'), '--model', FP32, '--out', INT8], `quantizing into ${INT8}`);
  }
}

function weightBytes(dir: string): number {
  const f = join(dir, 'model_epic.onnx');
  return statSync(f).size + (existsSync(`${f}.data`) ? statSync(`${f}.data`).size : 0);
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      threads: { type: 'string', default: '2' },
      rounds: { type: 'string', default: '3' },
      child: { type: 'string' },
      // a quick check of the bench itself on other models (e.g. models/epic-qa and its int8 copy, --chunks 2)
      fp32: { type: 'string' },
      int8: { type: 'string' },
      chunks: { type: 'string', default: String(CHUNKS) },
    },
  });
  const threads = Number(values.threads);
  const nChunks = Number(values.chunks);
  if (values.child) return child(values.child, threads, nChunks);
  const rounds = Number(values.rounds);
  if (!(rounds >= 1)) throw new Error(`--rounds must be at least 1, got ${values.rounds}`);
  const FP32 = values.fp32 ?? SHAPE_FP32;
  const INT8 = values.int8 ?? SHAPE_INT8;
  if (!values.fp32 && !values.int8) ensureModels();
  const load0 = loadavg();
  const t0 = performance.now();
  // loaded one after the other, so their loads do not share the cores
  const workers: Worker[] = [];
  for (const [label, dir] of [['float32', FP32], ['int8', INT8]] as const) {
    const w = new Worker(label, dir, threads, nChunks);
    await w.ready();
    workers.push(w);
  }
  const steps: Step[] = ['prefill512', 'full', 'attnlink16'];
  const times = new Map<string, number[]>();
  const put = (k: string, v: number) => times.set(k, [...(times.get(k) ?? []), v]);
  for (let round = 0; round <= rounds; round++) {
    for (const step of steps) {
      const order = round % 2 === 0 ? workers : [...workers].reverse();
      for (const w of order) {
        const r = await w.ask<StepResult>({ op: 'step', step, round });
        if (round === 0) continue; // warm-up
        put(`${w.label}.${step}`, r.ms);
        if (r.decodeMsPerToken !== undefined) put(`${w.label}.decode`, r.decodeMsPerToken);
      }
    }
    process.stderr.write(`bench:int8: round ${round}/${rounds}${round === 0 ? ' (warm-up)' : ''} done at ${((performance.now() - t0) / 1000).toFixed(0)} s, load ${loadavg()[0].toFixed(2)}\n`);
  }
  const stats: { rssAfterLoad: number; peakRss: number }[] = [];
  for (const w of workers) stats.push(await w.ask({ op: 'stats' }));
  for (const w of workers) await w.exit();

  const p50 = (k: string) => quantile(times.get(k)!, 0.5);
  const N = 1 + nChunks * CHUNK_TOKENS + QUESTION_TOKENS;
  const per = (label: string, i: number, dir: string) => ({
    dir: dir.replace(`${ROOT}/`, ''),
    weights_bytes: weightBytes(dir),
    prefill512_ms_p50: p50(`${label}.prefill512`),
    prefill512_tok_s: CHUNK_TOKENS / (p50(`${label}.prefill512`) / 1000),
    full_prefill_ms_p50: p50(`${label}.full`),
    full_prefill_tok_s: N / (p50(`${label}.full`) / 1000),
    decode_ms_per_token_p50: p50(`${label}.decode`),
    attnlink16_ttft_ms_p50: p50(`${label}.attnlink16`),
    rss_after_load_bytes: stats[i].rssAfterLoad,
    peak_rss_bytes: stats[i].peakRss,
    samples_ms: Object.fromEntries([...steps, 'decode'].map((s) => [s, times.get(`${label}.${s}`)])),
  });
  const f = per('float32', 0, FP32);
  const q = per('int8', 1, INT8);
  const ratios = {
    prefill512_speedup: f.prefill512_ms_p50 / q.prefill512_ms_p50,
    full_prefill_speedup: f.full_prefill_ms_p50 / q.full_prefill_ms_p50,
    decode_speedup: f.decode_ms_per_token_p50 / q.decode_ms_per_token_p50,
    attnlink16_ttft_speedup: f.attnlink16_ttft_ms_p50 / q.attnlink16_ttft_ms_p50,
    weights_int8_over_fp32: q.weights_bytes / f.weights_bytes,
    rss_after_load_int8_over_fp32: q.rss_after_load_bytes / f.rss_after_load_bytes,
    peak_rss_int8_over_fp32: q.peak_rss_bytes / f.peak_rss_bytes,
  };
  const load1 = loadavg();
  const mb = (b: number) => b / 2 ** 20;
  console.log(`bench:int8, ${values.fp32 ? `${FP32} vs ${INT8}` : `${SHAPE} shape`}, ${threads} threads, ${rounds} rounds after a warm-up; load average ${load0[0].toFixed(2)} -> ${load1[0].toFixed(2)}`);
  console.log(
    table([f, q].map((r, i) => ({
      weights: i ? 'int8' : 'float32',
      'prefill 512 tok/s': r.prefill512_tok_s,
      [`prefill ${N} ms`]: r.full_prefill_ms_p50,
      'decode ms/tok': r.decode_ms_per_token_p50,
      'attnlink-16 TTFT ms': r.attnlink16_ttft_ms_p50,
      'weights MiB': mb(r.weights_bytes),
      'RSS after load MiB': mb(r.rss_after_load_bytes),
      'peak RSS MiB': mb(r.peak_rss_bytes),
    }))),
  );
  console.log(Object.entries(ratios).map(([k, v]) => `${k} ${v.toFixed(2)}`).join(', '));
  if (values.fp32 || values.int8 || nChunks !== CHUNKS) {
    console.log('a check run (other models or chunks): bench/results/int8.json not written');
    return;
  }
  const cfg = JSON.parse(readFileSync(join(INT8, 'config.json'), 'utf8'));
  const file = writeResult('int8', {
    machine: { ...machine(), threads, load_average_start: load0, load_average_end: load1 },
    shape: values.fp32 ? undefined : SHAPE,
    quantization: { ...cfg.epic.quantization, matmuls: undefined },
    rounds,
    prompt_tokens: N,
    answer_tokens: ANSWER_TOKENS,
    wall_s: (performance.now() - t0) / 1000,
    float32: f,
    int8: q,
    ratios,
  });
  console.log(`wrote ${file}`);
}

main().catch((e) => {
  console.error(`bench:int8: ${e instanceof Error ? e.stack : String(e)}`);
  process.exit(1);
});
