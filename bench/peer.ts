/**
 * npm run bench:peer [-- --threads 2 --prompts 20 --prompts-q8 5 --cold-prompts 3 --pool 64 --decode-tokens 16
 *                       --engines ours,f32,q8_0 --out peer --from ENGINE=FILE]
 *
 * Our engine beside llama.cpp (node-llama-cpp 3.21.1's prebuilt CPU addon), on the same machine, the same model and
 * the same tokens, single request at a time, the same thread count. The model: bench:shapes' SmolLM2-135M shape
 * (.cache/shapes/smollm2-135m, random weights, seed 19); llama.cpp runs it from GGUF files written by
 * tools/model/gguf.py from the same seeded weights (.cache/peer/, F32, and Q8_0 as llama.cpp users run it).
 *
 * The workload (bench/shapes/workload.ts): EPIC's RAG prompt, `<bos>` + 8 chunks × 512 tokens + a 32-token question
 * (4,129 tokens), chunks drawn from a pool of 64 in a shuffled order per prompt; prompt 0 warms up and is not counted.
 * Per prompt, in this order:
 *   reordered chunks, warm: ours attnlink-16 with the prompt's chunks in the KV store's memory tier (compiled before
 *     the clock starts; the tier holds the whole pool); llama.cpp on its one context sequence, which still holds the
 *     previous prompt and answer and keeps the prefix the new prompt shares with it (llama-server's prompt cache);
 *   same order repeated: the same chunks in the same order with a follow-up question; ours prefix mode (16-token
 *     blocks, its store warmed with the first question's prompt before the clock starts), llama.cpp the same sequence
 *     (it holds that prompt: only the new question is evaluated);
 *   cold prefill (the first --cold-prompts prompts): ours full mode, llama.cpp from an emptied sequence; then
 *     --decode-tokens greedy tokens.
 * Every prompt is followed by 8 greedy answer tokens. TTFT: from the call to the first token's logits (ours: link's
 * ttftMs; llama.cpp: the prefix check, KV erase, evaluation and its greedy pick). Decode: ms per token after a prompt
 * (a ~4.1k-token context), the median over every answer. Each engine runs in its own child process (peak RSS is
 * its own: VmHWM at the end), all loaded at once and taking turns prompt by prompt (ours, F32, Q8_0 on prompt q, then
 * q + 1), so load from elsewhere on a shared machine falls on all alike. llama.cpp's defaults otherwise (float16 KV
 * cache, flash attention 'auto', batch 512).
 *
 * Writes bench/results/<out>.json (the ratios issue #24 names: prefill_tps_ratio_ours_vs_llamacpp,
 * ttft_ratio_llamacpp_vs_attnlink16_reordered, ttft_ratio_llamacpp_vs_prefix_repeated, decode_ratio_llamacpp_vs_ours)
 * and <out>.svg. Run it under `flock /tmp/epic-heavy.lock` on a shared machine.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { parseArgs } from 'node:util';
import { Engine } from '../shared/engine';
import { KVStore } from '../shared/kvstore';
import { link, storeSource, type LinkContext, type LinkInput } from '../shared/linking';
import { ROOT, machine, quantile, table, writeResult } from './common';
import { peerSvg } from './peer/chart';
import { LlamaCppPeer } from './peer/llamacpp';
import { ANSWER_TOKENS, CHUNK_TOKENS, CHUNKS, ChunkPool, QUESTION_TOKENS, ids, promptTokens, vmHWM } from './shapes/workload';

const SHAPE = 'smollm2-135m';
const SHAPE_DIR = join(ROOT, '.cache', 'shapes', SHAPE);
const GGUF_DIR = join(ROOT, '.cache', 'peer');
const SEED = 19; // bench/shapes/build.py's random_weights seed (its config.json says "random (seed 19)")
const N = 1 + CHUNKS * CHUNK_TOKENS + QUESTION_TOKENS;
type EngineName = 'ours' | 'f32' | 'q8_0';
const LABEL: Record<EngineName, string> = { ours: 'ours (onnxruntime)', f32: 'llama.cpp F32', q8_0: 'llama.cpp Q8_0' };

interface Options {
  threads: number;
  prompts: number;
  cold: number;
  pool: number;
  decodeTokens: number;
}

interface ChildResult {
  engine: EngineName;
  prompts: number;
  threads: number;
  load_ms: number;
  rss_after_load_bytes: number;
  peak_rss_bytes: number;
  cold: { ttft_ms: number[]; prefill_tok_s: number; tokens: number[][] };
  reordered: { mode: string; ttft_ms: number[]; ttft_ms_p50: number; computed_tokens: number[] };
  repeated: { mode: string; ttft_ms: number[]; ttft_ms_p50: number; computed_tokens: number[] };
  decode_ms_per_token: number;
  decode_samples: number[];
  extra: Record<string, unknown>;
  /** ours: log-probabilities after the check prompt; llama.cpp F32: its top 10 (token, log-probability). */
  check_logprobs?: number[];
  check_top?: [number, number][];
}

const median = (xs: number[]) => quantile(xs, 0.5);

/** The shape's bos id and vocabulary size (config.json): both engines draw the same ids (above the 3 specials). */
function shapeIds(): { bos: number; vocab: number } {
  const c = JSON.parse(readFileSync(join(SHAPE_DIR, 'config.json'), 'utf8')) as { bos_token_id: number; vocab_size: number };
  return { bos: c.bos_token_id, vocab: c.vocab_size };
}

function ggufPath(type: 'f32' | 'q8_0'): string {
  return join(GGUF_DIR, `${SHAPE}.${type}.gguf`);
}

/** The shape (bench/shapes/build.py) and its GGUF files, (re)written when the writer, the weights code or the shape changed. */
function ensureModels(): void {
  const r = spawnSync('/usr/bin/python3', [join(ROOT, 'bench', 'shapes', 'build.py'), '--only', SHAPE, '--if-missing'], { stdio: 'inherit' });
  if (r.status !== 0) throw new Error(`bench/shapes/build.py --only ${SHAPE} failed (exit ${r.status})`);
  const h = createHash('sha256');
  for (const f of ['tools/model/gguf.py', 'tools/model/fixtures.py', `.cache/shapes/${SHAPE}/.shape-stamp`]) h.update(readFileSync(join(ROOT, f)));
  h.update(String(SEED));
  const stamp = h.digest('hex');
  const stampFile = join(GGUF_DIR, `${SHAPE}.stamp`);
  if (existsSync(stampFile) && readFileSync(stampFile, 'utf8').trim() === stamp && existsSync(ggufPath('f32')) && existsSync(ggufPath('q8_0'))) return;
  mkdirSync(GGUF_DIR, { recursive: true });
  const g = spawnSync('/usr/bin/python3', [join(ROOT, 'tools', 'model', 'gguf.py'), '--config', join(SHAPE_DIR, 'config.json'), '--random-seed', String(SEED),
    '--out', join(GGUF_DIR, `${SHAPE}.gguf`), '--type', 'f32', '--type', 'q8_0', '--name', `shape-${SHAPE}`], { stdio: 'inherit' });
  if (g.status !== 0) throw new Error(`tools/model/gguf.py failed (exit ${g.status})`);
  writeFileSync(stampFile, stamp + '\n');
}

/** One engine in a child process: prompt q's runs on the parent's turn, the result at the end. */
interface Runner {
  prompt(q: number): Promise<void>;
  result(): Promise<ChildResult>;
}

async function oursRunner(o: Options): Promise<Runner> {
  const t0 = performance.now();
  const engine = await Engine.load(SHAPE_DIR, { intraOpThreads: o.threads });
  const loadMs = performance.now() - t0;
  const rssAfterLoad = process.memoryUsage().rss;
  const { layers, kvHeads, headDim } = engine.shape;
  const kvPerToken = layers * 2 * kvHeads * headDim * 4;
  const { bos, vocab } = shapeIds();
  if (bos !== engine.config.bosTokenId || vocab !== engine.config.vocabSize) throw new Error('config.json and the engine disagree on bos/vocab');
  const pool = new ChunkPool(o.pool, 3, vocab);
  // The memory tier holds the whole pool (plain variant), so a prompt's chunks are hot once compiled.
  const store = await KVStore.open({ modelId: engine.id, shape: engine.shape, memory: { budgetBytes: Math.ceil(1.1 * o.pool * CHUNK_TOKENS * kvPerToken) }, disk: false, redis: false });
  const source = storeSource(engine, store);
  const r: ChildResult = emptyResult('ours', o, loadMs, rssAfterLoad, 'attnlink-16', 'prefix');
  let compileMs = 0;
  const answer = async (ctx: LinkContext, inp: LinkInput, opts: Parameters<typeof link>[2], n: number) => {
    const l = await link(ctx, inp, opts, n);
    const t = performance.now();
    const gen = await engine.generate(l.cache, [l.logits], { maxTokens: n, stopIds: [] });
    const perTok = (performance.now() - t) / Math.max(1, gen.tokens[0].length - 1);
    await l.after();
    l.cache.release();
    return { stats: l.stats, perTok, tokens: gen.tokens[0] };
  };
  return {
    async prompt(q) {
      const p = pool.prompt(q);
      const input: LinkInput = { prefix: [bos], chunks: p.chunks, question: p.question };
      const tc = performance.now();
      for (const c of p.chunks) await source.chunk(c, { kind: 'plain' });
      compileMs += performance.now() - tc;
      // reordered chunks, warm: attnlink-16
      const a = await answer({ engine, source }, input, { mode: 'attnlink', k: 16 }, ANSWER_TOKENS);
      // same order repeated: prefix mode, its store warmed with the first question's prompt (not timed)
      const prefixStore = await KVStore.open({ modelId: engine.id, shape: engine.shape, memory: { budgetBytes: Math.ceil(1.2 * (N + o.decodeTokens) * kvPerToken) }, disk: false, redis: false });
      const pctx = { engine, source, prefixStore };
      const warm = await link(pctx, input, { mode: 'prefix' });
      await warm.after();
      warm.cache.release();
      const b = await answer(pctx, { ...input, question: p.followUp }, { mode: 'prefix' }, ANSWER_TOKENS);
      await prefixStore.close();
      let line = `[ours] prompt ${q}/${o.prompts}${q === 0 ? ' (warm-up)' : ''}: attnlink-16 ${a.stats.ttftMs.toFixed(0)} ms, prefix (repeated) ${b.stats.ttftMs.toFixed(0)} ms (${b.stats.computedTokens} computed)`;
      if (q > 0) {
        r.reordered.ttft_ms.push(a.stats.ttftMs);
        r.reordered.computed_tokens.push(a.stats.computedTokens);
        r.repeated.ttft_ms.push(b.stats.ttftMs);
        r.repeated.computed_tokens.push(b.stats.computedTokens);
        r.decode_samples.push(a.perTok, b.perTok);
      }
      // cold prefill: full mode
      if (q > 0 && q <= o.cold) {
        const c = await answer({ engine, source }, input, { mode: 'full' }, o.decodeTokens);
        r.cold.ttft_ms.push(c.stats.ttftMs);
        r.cold.tokens.push(c.tokens);
        r.decode_samples.push(c.perTok);
        line += `, full (cold) ${c.stats.ttftMs.toFixed(0)} ms, decode ${c.perTok.toFixed(1)} ms/token`;
      }
      process.stderr.write(line + '\n');
    },
    async result() {
      await store.close();
      const res = finish(r);
      // The same-weights check: log-probabilities after a short prompt (compared with llama.cpp's in the parent).
      const { cache, logits } = await engine.prefill([checkPrompt(bos, vocab)]);
      cache.release();
      res.check_logprobs = Array.from(logSoftmax(logits[0]));
      res.extra = { chunk_compile_ms_total: compileMs, kv_bytes_per_token: kvPerToken, pool_kv_bytes: o.pool * CHUNK_TOKENS * kvPerToken, kv_dtype: 'float32' };
      return res;
    },
  };
}

async function llamaRunner(type: 'f32' | 'q8_0', o: Options): Promise<Runner> {
  const t0 = performance.now();
  const peer = await LlamaCppPeer.load(ggufPath(type), { threads: o.threads, contextSize: N + Math.max(o.decodeTokens, ANSWER_TOKENS) + 64 });
  const loadMs = performance.now() - t0;
  const rssAfterLoad = process.memoryUsage().rss;
  const { bos, vocab } = shapeIds();
  const pool = new ChunkPool(o.pool, 3, vocab);
  const r: ChildResult = emptyResult(type, o, loadMs, rssAfterLoad, 'prefix reuse (one sequence)', 'prefix reuse (one sequence)');
  const answer = async (tokens: number[], n: number) => {
    const s = await peer.prompt(tokens);
    const t = performance.now();
    const out = await peer.decode(s.token, n);
    return { s, perTok: (performance.now() - t) / Math.max(1, n - 1), tokens: out };
  };
  return {
    async prompt(q) {
      const p = pool.prompt(q);
      // reordered chunks: the sequence holds the previous prompt and its answer
      const a = await answer(promptTokens(bos, p.chunks, p.question), ANSWER_TOKENS);
      // same order repeated: it holds this prompt and its answer
      const b = await answer(promptTokens(bos, p.chunks, p.followUp), ANSWER_TOKENS);
      let line = `[${type}] prompt ${q}/${o.prompts}${q === 0 ? ' (warm-up)' : ''}: reordered ${a.s.ms.toFixed(0)} ms (${a.s.evaluated} evaluated), repeated ${b.s.ms.toFixed(0)} ms (${b.s.evaluated} evaluated)`;
      if (q > 0) {
        r.reordered.ttft_ms.push(a.s.ms);
        r.reordered.computed_tokens.push(a.s.evaluated);
        r.repeated.ttft_ms.push(b.s.ms);
        r.repeated.computed_tokens.push(b.s.evaluated);
        r.decode_samples.push(a.perTok, b.perTok);
      }
      if (q > 0 && q <= o.cold) {
        await peer.clear();
        const c = await answer(promptTokens(bos, p.chunks, p.question), o.decodeTokens);
        r.cold.ttft_ms.push(c.s.ms);
        r.cold.tokens.push(c.tokens);
        r.decode_samples.push(c.perTok);
        line += `, cold ${c.s.ms.toFixed(0)} ms, decode ${c.perTok.toFixed(1)} ms/token`;
      }
      process.stderr.write(line + '\n');
    },
    async result() {
      r.extra = {
        gguf: ggufPath(type),
        gguf_bytes: statSync(ggufPath(type)).size,
        llama_cpp: peer.llama.llamaCppRelease,
        build: peer.llama.buildType,
        gpu: peer.llama.gpu,
        context_size: peer.context.contextSize,
        batch_size: peer.context.batchSize,
        flash_attention: peer.context.flashAttention,
        kv_cache: 'F16 (llama.cpp default)',
      };
      await peer.dispose();
      const res = finish(r);
      if (type === 'f32') {
        // The same-weights check, after the peak RSS reading: a short prompt on a float32 KV cache without flash
        // attention (test/import/gguf.test.ts's settings), top-10 log-probabilities.
        const check = await LlamaCppPeer.load(ggufPath(type), { threads: o.threads, contextSize: 256, kvType: 'F32', flashAttention: false });
        res.check_top = (await check.prompt(checkPrompt(bos, vocab), 10)).top;
        await check.dispose();
      }
      return res;
    },
  };
}

/** `<bos>` + 63 seeded ids: the same-weights check's prompt. */
function checkPrompt(bos: number, vocab: number): number[] {
  return [bos, ...ids(63, 4242, 3, vocab)];
}

function logSoftmax(l: Float32Array): Float64Array {
  let m = -Infinity;
  for (const v of l) m = Math.max(m, v);
  let s = 0;
  for (const v of l) s += Math.exp(v - m);
  const lse = m + Math.log(s);
  return Float64Array.from(l, (v) => v - lse);
}

function emptyResult(engine: EngineName, o: Options, loadMs: number, rss: number, reorderedMode: string, repeatedMode: string): ChildResult {
  return {
    engine,
    prompts: o.prompts,
    threads: o.threads,
    load_ms: loadMs,
    rss_after_load_bytes: rss,
    peak_rss_bytes: 0,
    cold: { ttft_ms: [], prefill_tok_s: 0, tokens: [] },
    reordered: { mode: reorderedMode, ttft_ms: [], ttft_ms_p50: 0, computed_tokens: [] },
    repeated: { mode: repeatedMode, ttft_ms: [], ttft_ms_p50: 0, computed_tokens: [] },
    decode_ms_per_token: 0,
    decode_samples: [],
    extra: {},
  };
}

function finish(r: ChildResult): ChildResult {
  r.cold.prefill_tok_s = N / (median(r.cold.ttft_ms) / 1000);
  r.reordered.ttft_ms_p50 = median(r.reordered.ttft_ms);
  r.repeated.ttft_ms_p50 = median(r.repeated.ttft_ms);
  r.decode_ms_per_token = median(r.decode_samples);
  r.peak_rss_bytes = vmHWM();
  return r;
}

/** A child process of this script spoken to by lines: stdin takes commands, stdout answers (its logs go to stderr). */
class Child {
  private readonly proc: ChildProcess;
  private readonly lines: string[] = [];
  private waiter: (() => void) | null = null;
  readonly exit: Promise<number | null>;

  constructor(args: string[]) {
    this.proc = spawn(process.execPath, ['--import', 'tsx', join(ROOT, 'bench', 'peer.ts'), ...args], { stdio: ['pipe', 'pipe', 'inherit'], cwd: ROOT });
    createInterface({ input: this.proc.stdout! }).on('line', (l) => {
      this.lines.push(l);
      this.waiter?.();
    });
    this.exit = new Promise((resolve) => this.proc.on('exit', (code) => {
      resolve(code);
      this.waiter?.();
    }));
  }

  send(line: string): void {
    this.proc.stdin!.write(line + '\n');
  }

  close(): void {
    this.proc.stdin!.end();
  }

  /** Wait for the line `want` (other lines are skipped); fails if the child exits first. */
  async expect(want: string): Promise<void> {
    for (;;) {
      const i = this.lines.indexOf(want);
      if (i >= 0) {
        this.lines.splice(0, i + 1);
        return;
      }
      if (this.proc.exitCode !== null || this.proc.signalCode !== null) throw new Error(`bench:peer: a child exited (${this.proc.exitCode ?? this.proc.signalCode}) before "${want}"`);
      await new Promise<void>((resolve) => (this.waiter = resolve));
      this.waiter = null;
    }
  }
}

async function main() {
  const { values } = parseArgs({
    options: {
      child: { type: 'string' },
      'child-out': { type: 'string' },
      threads: { type: 'string' },
      prompts: { type: 'string' },
      'prompts-q8': { type: 'string' },
      'cold-prompts': { type: 'string' },
      pool: { type: 'string' },
      'decode-tokens': { type: 'string' },
      engines: { type: 'string' },
      out: { type: 'string' },
      from: { type: 'string' },
    },
  });
  const o: Options = {
    threads: Number(values.threads ?? cpus().length),
    prompts: Number(values.prompts ?? 20),
    cold: Number(values['cold-prompts'] ?? 3),
    pool: Number(values.pool ?? 64),
    decodeTokens: Number(values['decode-tokens'] ?? 16),
  };
  if (values.child) {
    // Turn-taking with the parent: "ready" once loaded; a line q runs prompt q and answers "done q"; "end" writes the result.
    const e = values.child as EngineName;
    const runner = e === 'ours' ? await oursRunner(o) : await llamaRunner(e, o);
    process.stdout.write('ready\n');
    for await (const line of createInterface({ input: process.stdin })) {
      if (line === 'end') break;
      await runner.prompt(Number(line));
      process.stdout.write(`done ${line}\n`);
    }
    writeFileSync(values['child-out']!, JSON.stringify(await runner.result()));
    process.exit(0); // onnxruntime's and llama.cpp's thread pools would keep the process alive
  }
  const engines = (values.engines ?? 'ours,f32,q8_0').split(',').map((s) => s.trim()) as EngineName[];
  for (const e of engines) if (!(e in LABEL)) throw new Error(`unknown engine ${e}; one of ${Object.keys(LABEL).join(', ')}`);
  const promptsQ8 = Number(values['prompts-q8'] ?? Math.max(2, Math.ceil(o.prompts / 4)));
  const from = new Map((values.from ?? '').split(',').filter(Boolean).map((kv) => kv.split('=') as [EngineName, string]));
  ensureModels();
  const started = Date.now();
  const startLoad = loadavg();
  const results = new Map<EngineName, ChildResult & { load_average_at_end: number[] }>();
  // Every engine in its own process (its own peak RSS), all loaded at once and taking turns prompt by prompt, so load
  // from elsewhere on a shared machine falls on all of them alike.
  const children: { e: EngineName; child: Child; outFile: string; n: number }[] = [];
  for (const e of engines) {
    if (from.has(e)) {
      results.set(e, { load_average_at_end: [], ...(JSON.parse(readFileSync(from.get(e)!, 'utf8')) as ChildResult) });
      continue;
    }
    const outFile = join(tmpdir(), `bench-peer-${process.pid}-${e}.json`);
    const n = e === 'q8_0' ? promptsQ8 : o.prompts;
    const child = new Child(['--child', e, '--child-out', outFile, '--threads', String(o.threads), '--prompts', String(n),
      '--cold-prompts', String(Math.min(o.cold, n)), '--pool', String(o.pool), '--decode-tokens', String(o.decodeTokens)]);
    await child.expect('ready');
    children.push({ e, child, outFile, n });
  }
  for (let q = 0; q <= o.prompts; q++) {
    for (const c of children) {
      if (q > c.n) continue;
      c.child.send(String(q));
      await c.child.expect(`done ${q}`);
    }
  }
  for (const c of children) {
    c.child.send('end');
    c.child.close();
    const code = await c.child.exit;
    if (code !== 0 || !existsSync(c.outFile)) throw new Error(`bench:peer: the ${c.e} child failed (exit ${code})`);
    process.stderr.write(`bench:peer: ${c.e}'s result kept in ${c.outFile} (--from ${c.e}=${c.outFile} reuses it)\n`);
    results.set(c.e, { ...(JSON.parse(readFileSync(c.outFile, 'utf8')) as ChildResult), load_average_at_end: loadavg() });
  }
  const ours = results.get('ours');
  const f32 = results.get('f32');
  const q8 = results.get('q8_0');
  const ratio = (a: number | undefined, b: number | undefined) => (a != null && b != null ? a / b : null);
  // The same weights in both engines: the cold prompts' greedy tokens (full computation on both sides).
  const agreement = ours && f32 ? ours.cold.tokens.map((t, i) => ({ prompt: i + 1, ours: t, llamacpp: f32.cold.tokens[i], same_leading_tokens: leadingSame(t, f32.cold.tokens[i] ?? []) })) : [];
  // The same weights in both engines, measured: llama.cpp F32's top-10 log-probabilities after the check prompt vs ours.
  const sameWeights = ours?.check_logprobs && f32?.check_top
    ? { prompt_tokens: 64, max_abs_logprob_diff_top10: Math.max(...f32.check_top.map(([t, lp]) => Math.abs(ours.check_logprobs![t] - lp))), llamacpp_top1: f32.check_top[0][0],
        ours_top1: ours.check_logprobs.indexOf(Math.max(...ours.check_logprobs)), settings: 'llama.cpp with a float32 KV cache and flash attention off' }
    : null;
  for (const r of results.values()) delete r.check_logprobs;
  const data = {
    machine: { ...machine(), threads: o.threads, load_average_at_start: startLoad },
    model: { shape: SHAPE, weights: `random, seed ${SEED} (bench/shapes/build.py)`, onnx: SHAPE_DIR, gguf: { f32: ggufPath('f32'), q8_0: ggufPath('q8_0') } },
    workload: { chunks: CHUNKS, chunk_tokens: CHUNK_TOKENS, question_tokens: QUESTION_TOKENS, prompt_tokens: N, answer_tokens: ANSWER_TOKENS,
      pool_chunks: o.pool, prompts: o.prompts, prompts_q8_0: promptsQ8, cold_prompts: o.cold, decode_tokens: o.decodeTokens, token_ids: 'seeded random ids' },
    seconds: (Date.now() - started) / 1000,
    prefill_tps_ratio_ours_vs_llamacpp: ratio(ours?.cold.prefill_tok_s, f32?.cold.prefill_tok_s),
    prefill_tps_ratio_ours_vs_llamacpp_q8_0: ratio(ours?.cold.prefill_tok_s, q8?.cold.prefill_tok_s),
    ttft_ratio_llamacpp_vs_attnlink16_reordered: ratio(f32?.reordered.ttft_ms_p50, ours?.reordered.ttft_ms_p50),
    ttft_ratio_llamacpp_q8_0_vs_attnlink16_reordered: ratio(q8?.reordered.ttft_ms_p50, ours?.reordered.ttft_ms_p50),
    ttft_ratio_llamacpp_vs_prefix_repeated: ratio(f32?.repeated.ttft_ms_p50, ours?.repeated.ttft_ms_p50),
    decode_ratio_llamacpp_vs_ours: ratio(f32?.decode_ms_per_token, ours?.decode_ms_per_token),
    decode_ratio_llamacpp_q8_0_vs_ours: ratio(q8?.decode_ms_per_token, ours?.decode_ms_per_token),
    targets: {
      prefill: 'ours ≥ 0.8 × llama.cpp F32 tokens/s (prefill_tps_ratio_ours_vs_llamacpp ≥ 0.8)',
      reordered: 'llama.cpp TTFT ÷ attnlink-16 TTFT ≥ 8',
      repeated: 'ours prefix TTFT within 1.25× of llama.cpp (ttft_ratio_llamacpp_vs_prefix_repeated ≥ 0.8)',
      decode: 'ours ms/token within 1.5× of llama.cpp F32 (decode_ratio_llamacpp_vs_ours ≥ 0.667)',
    },
    // Per prompt (the two engines measured one right after the other, so under the same load), then the median: steadier
    // than the ratio of medians when load from elsewhere comes and goes during the run.
    paired_ttft_ratio_p50: {
      llamacpp_vs_attnlink16_reordered: paired(f32?.reordered.ttft_ms, ours?.reordered.ttft_ms),
      llamacpp_vs_prefix_repeated: paired(f32?.repeated.ttft_ms, ours?.repeated.ttft_ms),
    },
    same_weights_check: sameWeights,
    greedy_agreement_cold: agreement,
    engines: Object.fromEntries([...results].map(([k, v]) => [k, { label: LABEL[k], ...v }])),
  };
  const file = writeResult(values.out ?? 'peer', data);
  const engs = [...results.keys()];
  writeFileSync(file.replace(/\.json$/, '.svg'), peerSvg([
    { group: 'cold prefill TTFT', unit: `${N} tokens`, bars: engs.map((e) => ({ label: LABEL[e], value: median(results.get(e)!.cold.ttft_ms) })) },
    { group: 'reordered chunks, warm TTFT', unit: 'ours: attnlink-16', bars: engs.map((e) => ({ label: LABEL[e], value: results.get(e)!.reordered.ttft_ms_p50 })) },
    { group: 'same order repeated TTFT', unit: 'ours: prefix', bars: engs.map((e) => ({ label: LABEL[e], value: results.get(e)!.repeated.ttft_ms_p50 })) },
    { group: 'decode', unit: 'ms/token at 4.1k context', bars: engs.map((e) => ({ label: LABEL[e], value: results.get(e)!.decode_ms_per_token })) },
  ], {
    title: `Ours vs llama.cpp (node-llama-cpp 3.21.1), SmolLM2-135M shape, ${o.threads} threads, ${machine().cpu}`,
    subtitle: `p50 over ${o.prompts} prompts (Q8_0: ${promptsQ8}; cold: ${o.cold}) of 8 × 512-token chunks + 32-token question, one request at a time`,
  }));
  console.log(`\nbench:peer: ${SHAPE} shape, ${N}-token prompts, ${o.threads} threads, ${machine().cpu}; load average ${startLoad.map((x) => x.toFixed(2)).join(' ')} at start`);
  console.log(table(engs.map((e) => {
    const r = results.get(e)!;
    return {
      engine: LABEL[e],
      prompts: r.prompts,
      'cold TTFT ms': num(median(r.cold.ttft_ms), 0),
      'prefill tok/s': num(r.cold.prefill_tok_s, 0),
      'reordered TTFT p50 ms': num(r.reordered.ttft_ms_p50, 0),
      'repeated TTFT p50 ms': num(r.repeated.ttft_ms_p50, 0),
      'decode ms/tok': num(r.decode_ms_per_token, 1),
      'peak RSS GiB': (r.peak_rss_bytes / 2 ** 30).toFixed(2),
    };
  })));
  const f = num;
  console.log(`prefill tok/s ours ÷ llama.cpp F32 ${f(data.prefill_tps_ratio_ours_vs_llamacpp)} (≥ 0.8), ÷ Q8_0 ${f(data.prefill_tps_ratio_ours_vs_llamacpp_q8_0)}; ` +
    `reordered llama.cpp F32 ÷ attnlink-16 TTFT ${f(data.ttft_ratio_llamacpp_vs_attnlink16_reordered, 1)} (≥ 8), Q8_0 ${f(data.ttft_ratio_llamacpp_q8_0_vs_attnlink16_reordered, 1)}; ` +
    `repeated llama.cpp ÷ prefix TTFT ${f(data.ttft_ratio_llamacpp_vs_prefix_repeated)} (≥ 0.8); decode llama.cpp F32 ÷ ours ms/token ${f(data.decode_ratio_llamacpp_vs_ours)} (≥ 0.667), Q8_0 ${f(data.decode_ratio_llamacpp_q8_0_vs_ours)}`);
  console.log(`per-prompt pairs, median: reordered llama.cpp F32 ÷ attnlink-16 ${f(data.paired_ttft_ratio_p50.llamacpp_vs_attnlink16_reordered, 1)}, repeated llama.cpp F32 ÷ prefix ${f(data.paired_ttft_ratio_p50.llamacpp_vs_prefix_repeated)}`);
  if (sameWeights) console.log(`same weights: after a 64-token prompt, llama.cpp F32's top-10 log-probabilities within ${sameWeights.max_abs_logprob_diff_top10.toExponential(2)} of ours (top-1 ${sameWeights.llamacpp_top1} vs ${sameWeights.ours_top1}; float32 KV, flash attention off)`);
  if (agreement.length) console.log(`greedy tokens after the cold prompts, ours vs llama.cpp F32: ${agreement.map((a) => `${a.same_leading_tokens}/${a.ours.length}`).join(', ')} leading tokens the same`);
  console.log(`wrote ${file} and ${file.replace(/\.json$/, '.svg')} in ${data.seconds.toFixed(0)} s`);
}

/** The median of a[i] / b[i] over the prompts both have. */
function paired(a: number[] | undefined, b: number[] | undefined): number | null {
  if (!a || !b) return null;
  const n = Math.min(a.length, b.length);
  return n ? median(Array.from({ length: n }, (_, i) => a[i] / b[i])) : null;
}

/** A figure for the printout: '-' for a missing one (NaN became null in a child's JSON). */
function num(x: number | null | undefined, digits = 2): string {
  return x == null || !Number.isFinite(x) ? '-' : x.toFixed(digits);
}

function leadingSame(a: number[], b: number[]): number {
  let i = 0;
  while (i < a.length && i < b.length && a[i] === b[i]) i++;
  return i;
}

main().catch((e) => {
  console.error(`bench:peer: ${e instanceof Error ? e.stack : String(e)}`);
  process.exit(1);
});
