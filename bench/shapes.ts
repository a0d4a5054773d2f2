/**
 * npm run bench:shapes [-- --threads N --prompts N --prompts-large N --shapes smollm2-135m,qwen2.5-0.5b --modes full,attnlink-16
 *                         --out NAME --layer-arena on|off --rebuild --no-hugetlb --max-rss-gib 6 --call-budget FLOATS
 *                         --from SHAPE:WORKER=FILE]
 *
 * EPIC's RAG workload at real model shapes with random weights (timing does not depend on trained weights):
 * 8 chunks of 512 tokens + a 32-token question after `<bos>`, ≤ 8 answer tokens, chunks hot in the KV store's memory
 * tier, TTFT excluding compile (as in the paper). The models are built once by bench/shapes/build.py into
 * .cache/shapes/<shape>/ (git-ignored). Token ids are seeded random ids (SmolLM2's tokenizer is not packaged here, and
 * timing does not depend on which ids they are).
 *
 * Each shape runs in two child processes, one after the other: the EPIC modes (full, prefix, naive, attnlink-16,
 * attnlink0) on the primitive graph alone — what a worker holds that serves no CacheBlend request, since serving loads
 * the per-layer graphs on the first one — and CacheBlend beside attnlink-16 with both graph sets loaded. So each
 * worker's peak RSS is its own. Within a process, modes are interleaved per prompt in a rotating order (machine load
 * falls on all modes alike). Per mode: TTFT p50/p90, tokens computed, FLOPs computed (below),
 * decode ms/token (7 steps after the first token), peak RSS while the mode ran (VmHWM, reset through
 * /proc/self/clear_refs before each run). Per shape: compile tokens/s against plain prefill tokens/s at 512 tokens.
 *
 * FLOP model (per computed token, counted from the shape; `flops` in the results):
 *   matmuls: 2 × (per-layer weights q, k, v, o, gate, up, down × layers) per computed token, and lm_head on the
 *            last token only (the primitive graph's logits_index; a chunked prefill's ≤ 17 calls each compute it on
 *            their last token, < 0.1%, not counted); the embedding is a lookup (0);
 *   attention: 4 × heads × head_dim × (keys the token sees) per layer — QK and PV, the keys being every position up
 *            to and including its own (causal);
 *   CacheBlend-r: the layers before its check layer for every token, the check layer's K/V projection for every
 *            token, then the selected tokens through the remaining layers; the selected chunk tokens are taken at
 *            the mean chunk position (which tokens deviate most is not reported by the linker).
 * `flop_ratio_vs_full` = full's FLOPs ÷ the mode's: the most TTFT can gain from computing less.
 */
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, readFileSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { Engine, LayeredModel } from '../shared/engine';
import { KVStore } from '../shared/kvstore';
import { link, LINK_DEFAULTS, modeLabel, storeSource, type LinkInput, type LinkOptions } from '../shared/linking';
import { ROOT, machine, quantile, shuffled, table, writeResult } from './common';
import { barsSvg } from './shapes/chart';
import { ANSWER_TOKENS, CHUNK_TOKENS, CHUNKS, QUESTION_TOKENS, ids, resetHWM, vmHWM } from './shapes/workload';

const SHAPES = ['smollm2-135m', 'qwen2.5-0.5b'] as const;
const ALL_MODES: LinkOptions[] = [{ mode: 'full' }, { mode: 'prefix' }, { mode: 'naive' }, { mode: 'attnlink', k: 16 }, { mode: 'attnlink0' }, { mode: 'cacheblend', r: 0.15 }];

/** The figures the FLOP model needs, from config.json. */
interface Dims {
  layers: number;
  hidden: number;
  heads: number;
  kvHeads: number;
  headDim: number;
  ffn: number;
  vocab: number;
  qkvBias: boolean;
}

function dimsOf(raw: Record<string, number | boolean | string[]>): Dims {
  const heads = raw.num_attention_heads as number;
  return {
    layers: raw.num_hidden_layers as number,
    hidden: raw.hidden_size as number,
    heads,
    kvHeads: (raw.num_key_value_heads as number) ?? heads,
    headDim: (raw.head_dim as number) ?? (raw.hidden_size as number) / heads,
    ffn: raw.intermediate_size as number,
    vocab: raw.vocab_size as number,
    qkvBias: (raw.architectures as string[])[0] === 'Qwen2ForCausalLM',
  };
}

/** Multiply-adds ×2 per token, per layer, of the weight matmuls. */
function layerMatmulFlops(d: Dims): number {
  const q = d.heads * d.headDim;
  const kv = d.kvHeads * d.headDim;
  return 2 * (d.hidden * q + 2 * d.hidden * kv + q * d.hidden + 3 * d.hidden * d.ffn);
}

/** Attention FLOPs (QK and PV) of one token seeing `keys` keys, per layer. */
function attnFlops(d: Dims, keys: number): number {
  return 4 * d.heads * d.headDim * keys;
}

/** FLOPs of tokens at `positions` through every layer (causal keys: position + 1), and the head on the last one. */
function tokenFlops(d: Dims, positions: number[]): number {
  let f = 0;
  for (const p of positions) f += d.layers * (layerMatmulFlops(d) + attnFlops(d, p + 1));
  return f + headFlops(d);
}

/** The head (lm_head) on one token: the graphs compute it for each row's last token (logits_index). */
function headFlops(d: Dims): number {
  return 2 * d.hidden * d.vocab;
}

const FLOP_MODEL =
  'per computed token: 2×(q,k,v,o,gate,up,down weights × layers) + per layer 4×heads×head_dim×(keys it sees, causal); the head (2×hidden×vocab) on the last token only (the primitive graph computes logits for the tokens logits_index names; a chunked prefill computes it on each call\'s last token, ≤ 17 times a prompt, < 0.1% of its FLOPs, not counted); CacheBlend: layers before the check layer and its K/V projection for every token, selected tokens (chunk ones at the mean chunk position) through the rest, head on the last token';

const range = (a: number, n: number) => Array.from({ length: n }, (_, i) => a + i);

/** What each mode computes for the workload, as positions (CacheBlend: its own count). */
function modeFlops(d: Dims, mode: string, N: number, computedTokens: number, checkLayer = LINK_DEFAULTS.checkLayer): number {
  const qStart = 1 + CHUNKS * CHUNK_TOKENS;
  const question = range(qStart, QUESTION_TOKENS);
  if (mode === 'full') return tokenFlops(d, range(0, N));
  if (mode === 'prefix') return tokenFlops(d, range(N - computedTokens, computedTokens));
  if (mode === 'naive' || mode === 'attnlink0') return tokenFlops(d, [0, ...question]);
  if (mode.startsWith('attnlink-')) {
    const k = Number(mode.slice('attnlink-'.length));
    const link = Array.from({ length: CHUNKS }, (_, i) => range(1 + i * CHUNK_TOKENS, Math.min(k, CHUNK_TOKENS))).flat();
    return tokenFlops(d, [0, ...link, ...question]);
  }
  if (mode.startsWith('cacheblend-')) {
    // computedTokens = (check·N + (L − check)·S) / L  →  S selected tokens after the check layer.
    const L = d.layers;
    const S = Math.round((computedTokens * L - checkLayer * N) / (L - checkLayer));
    let f = 0;
    for (let p = 0; p < N; p++) f += checkLayer * (layerMatmulFlops(d) + attnFlops(d, p + 1));
    f += N * 2 * (2 * d.hidden * d.kvHeads * d.headDim); // the check layer's K/V projection for every token
    const uncached = 1 + QUESTION_TOKENS; // <bos> and the question: always selected
    const meanChunkPos = 1 + (CHUNKS * CHUNK_TOKENS) / 2;
    const positions = [0, ...question, ...Array<number>(Math.max(0, S - uncached)).fill(meanChunkPos)];
    for (const p of positions) f += (L - checkLayer) * (layerMatmulFlops(d) + attnFlops(d, p + 1));
    return f + headFlops(d); // head on the last token
  }
  throw new Error(`no FLOP model for mode ${mode}`);
}

function parseModes(s: string | undefined): LinkOptions[] {
  if (!s) return ALL_MODES;
  return s.split(',').map((m) => {
    const found = ALL_MODES.find((o) => modeLabel(o) === m.trim());
    if (found) return found;
    const a = /^attnlink-(\d+)$/.exec(m.trim());
    if (a) return { mode: 'attnlink', k: Number(a[1]) };
    const c = /^cacheblend-(\d+)$/.exec(m.trim());
    if (c) return { mode: 'cacheblend', r: Number(c[1]) / 100 };
    throw new Error(`unknown mode ${m}; one of ${ALL_MODES.map(modeLabel).join(', ')} (or attnlink-K, cacheblend-R)`);
  });
}



function filesBytes(dir: string, pick: (f: string) => boolean): number {
  let n = 0;
  for (const f of readdirSync(dir, { recursive: true }) as string[]) {
    const p = join(dir, f);
    if (pick(f) && statSync(p).isFile()) n += statSync(p).size;
  }
  return n;
}

interface ChildResult {
  shape: string;
  dir: string;
  parameters: number;
  prompts: number;
  prompt_tokens: number;
  threads: number;
  load_ms: number;
  weights_bytes: { primitive: number; layers: number };
  kv_bytes_per_token: number;
  compile: { tokens: number; compile_tok_s: number; prefill_tok_s: number; compile_ms_p50: number; prefill_ms_p50: number; ratio: number };
  rows: {
    mode: string;
    ttft_ms_p50: number;
    ttft_ms_p90: number;
    decode_ms_per_token: number;
    peak_rss_bytes: number;
    tokens_computed: number;
    flops: number;
    ttft_ms: number[];
  }[];
  process_peak_rss_bytes: number;
  rss_after_load_bytes: number;
  /** Most bytes the memory tiers (hot chunks, prefix cache) held after a mode's run. */
  store_memory_bytes: number;
  call_budget: number;
  hwm_reset: boolean;
}

/** One worker process's result. */
type WorkerPart = ChildResult & { worker: 'epic' | 'cacheblend'; load_average_at_end: number[]; from_file?: string };

/** The two worker processes a shape runs in (see the file's comment). */
function workerGroups(modes: LinkOptions[]): { worker: 'epic' | 'cacheblend'; modes: LinkOptions[] }[] {
  const blend = modes.filter((m) => m.mode === 'cacheblend');
  const epic = modes.filter((m) => m.mode !== 'cacheblend');
  const groups: { worker: 'epic' | 'cacheblend'; modes: LinkOptions[] }[] = [];
  if (epic.length) groups.push({ worker: 'epic', modes: epic });
  if (blend.length) {
    const beside = epic.filter((m) => m.mode === 'attnlink');
    groups.push({ worker: 'cacheblend', modes: [...beside, ...blend] });
  }
  return groups;
}

/** A shape's result from its worker processes: rows, per-worker memory, the issue's targets. */
function combine(parts: WorkerPart[]) {
  const epic = parts.find((p) => p.worker === 'epic');
  const blend = parts.find((p) => p.worker === 'cacheblend');
  const base = epic ?? blend!;
  const full = epic?.rows.find((r) => r.mode === 'full');
  const fromBlend = blend ? blend.rows.filter((r) => r.mode.startsWith('cacheblend') || !epic) : [];
  const rows = [...(epic?.rows ?? []), ...fromBlend].map((r) => ({
    mode: r.mode,
    ttft_ms_p50: r.ttft_ms_p50,
    ttft_ms_p90: r.ttft_ms_p90,
    ttft_ratio_vs_full: full ? full.ttft_ms_p50 / r.ttft_ms_p50 : null,
    flop_ratio_vs_full: full ? full.flops / r.flops : null,
    decode_ms_per_token: r.decode_ms_per_token,
    peak_rss_bytes: r.peak_rss_bytes,
    worker: epic?.rows.includes(r) ? 'epic' : 'cacheblend',
    tokens_computed: r.tokens_computed,
    flops: r.flops,
    ttft_ms: r.ttft_ms.map((x) => Math.round(x * 100) / 100),
  }));
  const al = epic?.rows.find((r) => r.mode === 'attnlink-16');
  const alB = blend?.rows.find((r) => r.mode === 'attnlink-16');
  const cb = blend?.rows.find((r) => r.mode === 'cacheblend-15');
  const inFlight = (base.prompt_tokens + ANSWER_TOKENS) * base.kv_bytes_per_token;
  const paramBytes = base.parameters * 4;
  const workers = parts.map((p) => {
    const weights = p.weights_bytes.primitive + p.weights_bytes.layers;
    return {
      worker: p.worker,
      modes: p.rows.map((r) => r.mode),
      weights_bytes: weights,
      rss_after_load_bytes: p.rss_after_load_bytes,
      process_peak_rss_bytes: p.process_peak_rss_bytes,
      store_memory_bytes: p.store_memory_bytes,
      kv_in_flight_bytes: inFlight,
      peak_rss_over_weights_plus_kv: p.process_peak_rss_bytes / (weights + inFlight),
      peak_rss_over_weights_plus_kv_and_stores: p.process_peak_rss_bytes / (weights + inFlight + p.store_memory_bytes),
      call_budget: p.call_budget,
      load_average_at_end: p.load_average_at_end,
      ...(p.from_file ? { from_file: p.from_file } : {}),
    };
  });
  const w = workers.find((x) => x.worker === 'epic');
  const targets = {
    full_over_attnlink16_ttft: full && al ? full.ttft_ms_p50 / al.ttft_ms_p50 : null,
    full_over_attnlink16_flops: full && al ? full.flops / al.flops : null,
    ttft_ratio_share_of_flop_ratio: full && al ? full.ttft_ms_p50 / al.ttft_ms_p50 / (full.flops / al.flops) : null,
    cacheblend15_over_attnlink16_ttft: cb && alB ? cb.ttft_ms_p50 / alB.ttft_ms_p50 : null,
    compile_over_prefill_tok_s: base.compile.compile_tok_s / base.compile.prefill_tok_s,
    // the EPIC worker: weights = its graph's bytes (a tied embedding is stored twice in it); also against parameters × 4
    peak_rss_bytes: w?.process_peak_rss_bytes ?? null,
    weights_bytes: w?.weights_bytes ?? null,
    parameter_bytes: paramBytes,
    kv_in_flight_bytes: inFlight,
    peak_rss_over_weights_plus_kv: w?.peak_rss_over_weights_plus_kv ?? null,
    peak_rss_over_parameters_plus_kv: w ? w.process_peak_rss_bytes / (paramBytes + inFlight) : null,
    peak_rss_over_weights_plus_kv_and_stores: w?.peak_rss_over_weights_plus_kv_and_stores ?? null,
  };
  return {
    shape: base.shape, parameters: base.parameters, prompts: base.prompts, prompt_tokens: base.prompt_tokens, load_ms: base.load_ms,
    kv_bytes_per_token: base.kv_bytes_per_token, per_mode_peak_rss: base.hwm_reset ? 'VmHWM reset before each mode run' : 'process peak so far (VmHWM could not be reset)',
    compile: base.compile, rows, workers, targets,
  };
}

async function child(shape: string, prompts: number, threads: number, modes: LinkOptions[], outFile: string, layerArena: boolean, callBudget?: number): Promise<void> {
  const dir = join(ROOT, '.cache', 'shapes', shape);
  const t0 = performance.now();
  const engine = await Engine.load(dir, { intraOpThreads: threads, callBudget });
  const needLayers = modes.some((m) => m.mode === 'cacheblend');
  // The per-layer graphs are 2 + 2 × layers sessions, each with its own memory arena that never shrinks: off by
  // default here (see SessionOptions.memArena); --layer-arena on measures them with it.
  const layered = needLayers ? await LayeredModel.load(engine.config, { ...engine.sessionOptions, memArena: layerArena }) : undefined;
  const loadMs = performance.now() - t0;
  const rssAfterLoad = process.memoryUsage().rss;
  const raw = engine.config.raw as Record<string, number | boolean | string[]>;
  const d = dimsOf(raw);
  const { layers, kvHeads, headDim } = engine.shape;
  const kvPerToken = layers * 2 * kvHeads * headDim * 4;
  // Ordinary ids: below the first special token (Qwen's start at 151643), above SmolLM2 placeholders' specials.
  const hi = shape.startsWith('qwen') ? 151643 : engine.config.vocabSize;
  const lo = 3;
  const N = 1 + CHUNKS * CHUNK_TOKENS + QUESTION_TOKENS;
  // Memory tier: the prompt in flight's chunks in the compile variants the modes read (plain; attnlink0's sink
  // variant), 5% over for the blobs' headers; an earlier prompt's chunks are evicted, as a worker's bounded tier would.
  const variants = (modes.some((m) => m.mode !== 'full' && m.mode !== 'prefix' && m.mode !== 'attnlink0') ? 1 : 0) + (modes.some((m) => m.mode === 'attnlink0') ? 1 : 0);
  const budget = Math.ceil(1.05 * Math.max(1, variants) * CHUNKS * CHUNK_TOKENS * kvPerToken);
  const store = await KVStore.open({ modelId: engine.id, shape: engine.shape, memory: { budgetBytes: budget }, disk: false, redis: false });
  const source = storeSource(engine, store);

  // Compile vs plain prefill at 512 tokens (alternating, after one of each to warm up).
  const cTimes: number[] = [];
  const pTimes: number[] = [];
  const reps = Math.max(3, Math.min(8, prompts));
  for (let i = 0; i <= reps; i++) {
    const toks = ids(CHUNK_TOKENS, 1000 + i, lo, hi);
    let t = performance.now();
    await engine.compile(toks, 0);
    const c = performance.now() - t;
    t = performance.now();
    const { cache } = await engine.prefill([toks]);
    const p = performance.now() - t;
    cache.release();
    if (i > 0) {
      cTimes.push(c);
      pTimes.push(p);
    }
  }
  const compile = {
    tokens: CHUNK_TOKENS,
    compile_ms_p50: quantile(cTimes, 0.5),
    prefill_ms_p50: quantile(pTimes, 0.5),
    compile_tok_s: CHUNK_TOKENS / (quantile(cTimes, 0.5) / 1000),
    prefill_tok_s: CHUNK_TOKENS / (quantile(pTimes, 0.5) / 1000),
    ratio: quantile(pTimes, 0.5) / quantile(cTimes, 0.5),
  };
  process.stderr.write(`[${shape}] loaded in ${(loadMs / 1000).toFixed(1)} s; compile ${compile.compile_tok_s.toFixed(0)} tok/s, prefill ${compile.prefill_tok_s.toFixed(0)} tok/s at 512\n`);

  const acc = new Map<string, { ttft: number[]; decode: number[]; peak: number; computed: number }>();
  let hwmReset = false;
  // VmHWM is reset before each mode run, so the process's peak is the largest reading (and the one before the first reset).
  let processPeak = vmHWM();
  let storeBytes = 0;
  // Prompt 0 warms every mode up and is not counted.
  for (let q = 0; q <= prompts; q++) {
    const chunks = Array.from({ length: CHUNKS }, (_, i) => ids(CHUNK_TOKENS, 7919 * (q + 1) + i, lo, hi));
    const input: LinkInput = { prefix: [engine.config.bosTokenId], chunks, question: ids(QUESTION_TOKENS, 31 * (q + 1) + 5, lo, hi) };
    for (const c of chunks) {
      await source.chunk(c, { kind: 'plain' });
      if (modes.some((m) => m.mode === 'attnlink0')) await source.chunk(c, { kind: 'sink', sinkTokens: LINK_DEFAULTS.sinkTokens });
    }
    // Prefix mode sees the same documents retrieved in another order (the RAG case prefix caches miss), as bench:accuracy.
    const prefixStore = modes.some((m) => m.mode === 'prefix')
      ? await KVStore.open({ modelId: engine.id, shape: engine.shape, memory: { budgetBytes: Math.ceil(1.2 * N * kvPerToken) }, disk: false, redis: false })
      : undefined;
    const ctx = { engine, layered, source, prefixStore };
    if (prefixStore) {
      const warm = await link(ctx, { ...input, chunks: shuffled(chunks, q + 7) }, { mode: 'prefix' });
      await warm.after();
      warm.cache.release();
    }
    // The warm-up prompt skips the modes that compute the whole prompt: they take most of the time, and one call that
    // size is no warm-up for the others.
    const rot = [...modes.slice(q % modes.length), ...modes.slice(0, q % modes.length)];
    const order = q === 0 && rot.some((m) => m.mode !== 'full' && m.mode !== 'prefix') ? rot.filter((m) => m.mode !== 'full' && m.mode !== 'prefix') : rot;
    for (const m of order) {
      hwmReset = resetHWM();
      const l = await link(ctx, input, m, ANSWER_TOKENS);
      const t = performance.now();
      const gen = await engine.generate(l.cache, [l.logits], { maxTokens: ANSWER_TOKENS, stopIds: [] });
      const decodeMs = performance.now() - t;
      await l.after();
      l.cache.release();
      const peak = vmHWM();
      // bytes the KV stores' memory tiers held when the mode ended (the hot chunks, the prefix cache)
      storeBytes = Math.max(storeBytes, (store.stats().tiers.memory?.bytes ?? 0) + (prefixStore?.stats().tiers.memory?.bytes ?? 0));
      processPeak = Math.max(processPeak, peak);
      if (q === 0) continue;
      const label = l.stats.mode;
      const a = acc.get(label) ?? { ttft: [], decode: [], peak: 0, computed: l.stats.computedTokens };
      a.ttft.push(l.stats.ttftMs);
      a.decode.push(decodeMs / Math.max(1, gen.tokens[0].length - 1));
      a.peak = Math.max(a.peak, peak);
      acc.set(label, a);
    }
    await prefixStore?.close();
    process.stderr.write(`[${shape}] prompt ${q}/${prompts}${q === 0 ? ' (warm-up)' : ''}: ` + [...acc].map(([k, v]) => `${k} ${v.ttft.at(-1)?.toFixed(0)}`).join(', ') + ' ms\n');
  }
  await store.close();
  const rows = modes.map((m) => {
    const label = modeLabel(m);
    const a = acc.get(label)!;
    return {
      mode: label,
      ttft_ms_p50: quantile(a.ttft, 0.5),
      ttft_ms_p90: quantile(a.ttft, 0.9),
      decode_ms_per_token: quantile(a.decode, 0.5),
      peak_rss_bytes: a.peak,
      tokens_computed: a.computed,
      flops: modeFlops(d, label, N, a.computed),
      ttft_ms: a.ttft,
    };
  });
  const result: ChildResult = {
    shape,
    dir,
    parameters: Number((raw.epic as unknown as { parameters?: number })?.parameters ?? 0),
    prompts,
    prompt_tokens: N,
    threads,
    load_ms: loadMs,
    weights_bytes: {
      primitive: filesBytes(dir, (f) => f.startsWith('model_epic.onnx')),
      layers: needLayers ? filesBytes(join(dir, 'layers'), () => true) : 0,
    },
    kv_bytes_per_token: kvPerToken,
    compile,
    rows,
    process_peak_rss_bytes: Math.max(processPeak, vmHWM()),
    rss_after_load_bytes: rssAfterLoad,
    store_memory_bytes: storeBytes,
    call_budget: engine.callBudget,
    hwm_reset: hwmReset,
  };
  writeFileSync(outFile, JSON.stringify(result));
}

/** Run a child process, stopping it if its resident set passes maxRss (this machine is shared). */
function runChild(args: string[], env: NodeJS.ProcessEnv, maxRss: number): Promise<{ code: number | null; signal: NodeJS.Signals | null; killedForMemory: boolean; peak: number }> {
  return new Promise((resolve) => {
    const c = spawn(process.execPath, args, { stdio: 'inherit', cwd: ROOT, env });
    let killedForMemory = false;
    let peak = 0;
    const timer = setInterval(() => {
      try {
        const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${c.pid}/status`, 'utf8'));
        const rss = m ? Number(m[1]) * 1024 : 0;
        peak = Math.max(peak, rss);
        if (rss > maxRss && !killedForMemory) {
          killedForMemory = true;
          c.kill('SIGKILL');
        }
      } catch {
        // exited
      }
    }, 250);
    c.on('exit', (code, signal) => {
      clearInterval(timer);
      resolve({ code, signal, killedForMemory, peak });
    });
  });
}

function ensureBuilt(shape: string, rebuild: boolean): void {
  const r = spawnSync('/usr/bin/python3', [join(ROOT, 'bench', 'shapes', 'build.py'), '--only', shape, rebuild ? '--force' : '--if-missing'], { stdio: 'inherit' });
  if (r.status !== 0) throw new Error(`bench/shapes/build.py --only ${shape} failed (exit ${r.status})`);
}

async function main() {
  const { values } = parseArgs({
    options: {
      child: { type: 'string' },
      'child-out': { type: 'string' },
      threads: { type: 'string' },
      prompts: { type: 'string' },
      'prompts-large': { type: 'string' },
      shapes: { type: 'string' },
      modes: { type: 'string' },
      out: { type: 'string' },
      from: { type: 'string' },
      'layer-arena': { type: 'string' },
      rebuild: { type: 'boolean' },
      'no-hugetlb': { type: 'boolean' },
      'max-rss-gib': { type: 'string' },
      'call-budget': { type: 'string' },
    },
  });
  const threads = Number(values.threads ?? cpus().length);
  const modes = parseModes(values.modes);
  if (values.child) {
    await child(values.child, Number(values.prompts ?? 5), threads, modes, values['child-out']!, values['layer-arena'] === 'on', values['call-budget'] ? Number(values['call-budget']) : undefined);
    return;
  }
  const shapes = (values.shapes ?? SHAPES.join(',')).split(',').map((s) => s.trim());
  for (const s of shapes) if (!(SHAPES as readonly string[]).includes(s)) throw new Error(`unknown shape ${s}; one of ${SHAPES.join(', ')}`);
  const prompts = Number(values.prompts ?? 10);
  const promptsLarge = Number(values['prompts-large'] ?? Math.max(2, Math.ceil(prompts / 2)));
  const started = Date.now();
  const maxRssBytes = Number(values['max-rss-gib'] ?? 6) * 2 ** 30;
  const startLoad = loadavg();
  const results: WorkerPart[][] = [];
  // --from SHAPE:WORKER=FILE: a child's result from an earlier run (its JSON), to combine runs made apart.
  const from = new Map((values.from ?? '').split(',').filter(Boolean).map((kv) => kv.split('=') as [string, string]));
  const failed: { shape: string; worker: string; error: string }[] = [];
  for (const shape of shapes) {
    const parts: WorkerPart[] = [];
    for (const group of workerGroups(modes)) {
      const key = `${shape}:${group.worker}`;
      if (from.has(key)) {
        parts.push({ ...(JSON.parse(readFileSync(from.get(key)!, 'utf8')) as ChildResult), worker: group.worker, load_average_at_end: [], from_file: from.get(key) });
        continue;
      }
      ensureBuilt(shape, !!values.rebuild);
      const n = shape === 'smollm2-135m' ? prompts : promptsLarge;
      const outFile = join(tmpdir(), `bench-shapes-${process.pid}-${shape}-${group.worker}.json`);
      const args = ['--import', 'tsx', join(ROOT, 'bench', 'shapes.ts'), '--child', shape, '--child-out', outFile, '--threads', String(threads), '--prompts', String(n)];
      args.push('--modes', group.modes.map(modeLabel).join(','));
      if (values['layer-arena']) args.push('--layer-arena', values['layer-arena']);
      if (values['call-budget']) args.push('--call-budget', values['call-budget']);
      // glibc.malloc.hugetlb=1: malloc's large mappings on transparent huge pages. The per-layer sessions run without
      // an arena (see child), so their tensors are mapped per call; with 4 KiB pages one CacheBlend link here took
      // 70.5 s, with huge pages 6.8 s (and compile 472 -> 807 tok/s). --no-hugetlb measures without.
      const env = { ...process.env };
      if (!values['no-hugetlb']) env.GLIBC_TUNABLES = [env.GLIBC_TUNABLES, 'glibc.malloc.hugetlb=1'].filter(Boolean).join(':');
      const r = await runChild(args, env, maxRssBytes);
      const error = r.killedForMemory
        ? `passed --max-rss-gib ${maxRssBytes / 2 ** 30} (RSS ${(r.peak / 2 ** 30).toFixed(2)} GiB) and was stopped`
        : r.code !== 0 || !existsSync(outFile) ? `failed (exit ${r.code}${r.signal ? `, ${r.signal}` : ''})` : null;
      if (error) {
        console.error(`bench:shapes: the ${group.worker} worker for ${shape} ${error}; the other shapes are still written`);
        failed.push({ shape, worker: group.worker, error });
        continue;
      }
      process.stderr.write(`bench:shapes: ${key}'s child result kept in ${outFile} (--from ${key}=${outFile} reuses it)\n`);
      parts.push({ ...(JSON.parse(readFileSync(outFile, 'utf8')) as ChildResult), worker: group.worker, load_average_at_end: loadavg() });
    }
    if (parts.length) results.push(parts);
  }
  const out = results.map((parts) => combine(parts));
  const seconds = (Date.now() - started) / 1000;
  const data = {
    workload: { chunks: CHUNKS, chunk_tokens: CHUNK_TOKENS, question_tokens: QUESTION_TOKENS, answer_tokens: ANSWER_TOKENS, token_ids: 'seeded random ids', chunks_hot_in: 'KV store memory tier' },
    flop_model: FLOP_MODEL,
    workers: 'per shape, one process for the EPIC modes (the primitive graph only: what a worker that serves no CacheBlend request holds, as serving loads the per-layer graphs on the first CacheBlend request) and one for CacheBlend beside attnlink-16 (both graph sets loaded); cacheblend rows come from the second, ttft_ratio_vs_full against the first one\'s full',
    machine: { ...machine(), threads, load_average_at_start: startLoad },
    seconds,
    shapes: out,
    failed,
  };
  const file = writeResult(values.out ?? 'shapes', data);
  writeFileSync(file.replace(/\.json$/, '.svg'), barsSvg(out.map((s) => ({ group: `${s.shape} (${s.prompts} prompts)`, bars: s.rows.map((r) => ({ label: r.mode, value: r.ttft_ms_p50, limit: s.rows.find((x) => x.mode === 'full') ? s.rows.find((x) => x.mode === 'full')!.ttft_ms_p50 / r.flop_ratio_vs_full! : undefined })) })), {
    title: `TTFT p50 per mode, 8 × 512-token chunks + 32-token question (${threads} threads, ${machine().cpu})`,
    yLabel: 'TTFT p50 ms (log)',
  }));
  for (const s of out) {
    console.log(`\n${s.shape}: ${s.prompts} prompts of ${s.prompt_tokens} tokens; compile ${s.compile.compile_tok_s.toFixed(0)} tok/s vs prefill ${s.compile.prefill_tok_s.toFixed(0)} tok/s at 512 (${s.targets.compile_over_prefill_tok_s.toFixed(2)}×)`);
    console.log(table(s.rows.map((r) => ({
      mode: r.mode,
      worker: r.worker,
      'ttft p50 ms': r.ttft_ms_p50.toFixed(1),
      'ttft p90 ms': r.ttft_ms_p90.toFixed(1),
      'full÷mode ttft': r.ttft_ratio_vs_full?.toFixed(2) ?? '-',
      'full÷mode flops': r.flop_ratio_vs_full?.toFixed(2) ?? '-',
      'decode ms/tok': r.decode_ms_per_token.toFixed(1),
      'peak RSS GiB': (r.peak_rss_bytes / 2 ** 30).toFixed(2),
      tokens: Math.round(r.tokens_computed),
      GFLOP: (r.flops / 1e9).toFixed(1),
    }))));
    console.log(table(s.workers.map((w) => ({
      worker: w.worker,
      'weights MB': (w.weights_bytes / 2 ** 20).toFixed(0),
      'KV in flight MB': (w.kv_in_flight_bytes / 2 ** 20).toFixed(0),
      'stores MB': (w.store_memory_bytes / 2 ** 20).toFixed(0),
      'RSS after load MB': (w.rss_after_load_bytes / 2 ** 20).toFixed(0),
      'peak RSS MB': (w.process_peak_rss_bytes / 2 ** 20).toFixed(0),
      'peak ÷ (weights + KV)': w.peak_rss_over_weights_plus_kv.toFixed(2),
      'peak ÷ (weights + KV + stores)': w.peak_rss_over_weights_plus_kv_and_stores.toFixed(2),
    }))));
    const t = s.targets;
    console.log(`targets: full÷attnlink-16 TTFT ${t.full_over_attnlink16_ttft?.toFixed(2)} = ${t.ttft_ratio_share_of_flop_ratio?.toFixed(2)} of its FLOP ratio ${t.full_over_attnlink16_flops?.toFixed(2)} (≥ 0.8); ` +
      `cacheblend-15÷attnlink-16 ${t.cacheblend15_over_attnlink16_ttft?.toFixed(2)} (≥ 3); compile÷prefill ${t.compile_over_prefill_tok_s.toFixed(2)} (≥ 0.9); ` +
      `EPIC worker peak RSS ÷ (weights + KV in flight) ${t.peak_rss_over_weights_plus_kv?.toFixed(2)}, ÷ (parameters × 4 + KV) ${t.peak_rss_over_parameters_plus_kv?.toFixed(2)} (≤ 2)`);
  }
  console.log(`\nwrote ${file} and ${file.replace(/\.json$/, '.svg')} in ${seconds.toFixed(0)} s`);
}

main().catch((e) => {
  console.error(`bench:shapes: ${e instanceof Error ? e.stack : String(e)}`);
  process.exit(1);
});
