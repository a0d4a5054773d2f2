import { existsSync, statSync } from 'node:fs';
import * as ort from 'onnxruntime-node';
import { ModelLoadError } from './errors';
import type { ModelConfig } from './config';

export type ExecutionProvider = 'cpu' | 'cuda';

export interface SessionOptions {
  executionProvider?: ExecutionProvider;
  intraOpThreads?: number;
  /**
   * Let onnxruntime's intra-op threads busy-wait between calls (its default). Off by default here: on a few shared
   * cores the spinning threads take CPU from the API, Redis and the event loop of the same machine.
   */
  spinning?: boolean;
  /**
   * Flush denormal floats to zero (onnxruntime's session.set_denormal_as_zero; default on). Attention over sink tokens
   * leaves many probabilities in the denormal range, which x86 computes with slow microcode: measured here, one
   * attnlink-16 link took 8.4-9.3 ms p50 without and 6.4-6.8 ms with. The flag sets the FTZ/DAZ bits of the thread
   * that creates the session, which in Node is the JavaScript thread: from then on that process's JavaScript also
   * computes with denormals as zero: a double below 2.2e-308 reads as 0, and so does a float32 below 1.2e-38 read
   * from or stored into a Float32Array (the keys Rope re-rotates, CacheBlend's deviations), as onnxruntime does
   * inside the graph. The job contract keeps its one float (CacheBlend's r, MIN_R) far from that range, so the API,
   * which loads no session, and the worker accept the same requests.
   */
  flushDenormals?: boolean;
  /**
   * onnxruntime's CPU memory arena (default on: one call's memory is kept for the next). Every session has its own
   * arena, which never shrinks: for models opened as many sessions (the per-layer graphs) the arenas add up. Measured
   * at the SmolLM2-135M shape (bench:shapes): one CacheBlend link over 4,129 tokens took the process past 8 GiB (and
   * 13.9 GiB in a run of every mode) with the 62 per-layer sessions' arenas on, 3.6 GiB with them off. Off, large
   * tensors are mapped fresh on every call: run the process with GLIBC_TUNABLES=glibc.malloc.hugetlb=1 (huge pages for
   * malloc's mappings; 70.5 s -> 6.8 s for that link here).
   */
  memArena?: boolean;
}

/** Which of the two graph contracts a session implements (see tools/model/export.py). */
export type GraphKind = 'primitive' | 'stock';

export interface GraphSession {
  kind: GraphKind;
  file: string;
  session: ort.InferenceSession;
}

const EXPECTED: Record<GraphKind, { inputs: string[]; past: string; out: string }> = {
  primitive: { inputs: ['input_ids', 'position_ids', 'attn_bias'], past: 'past_key_values', out: 'new_key_values' },
  // position_ids is optional: GroupQueryAttention-op graphs take rotary positions from the past length.
  stock: { inputs: ['input_ids', 'attention_mask'], past: 'past_key_values', out: 'present' },
};

export function pastInputNames(layers: number): string[] {
  const names: string[] = [];
  for (let i = 0; i < layers; i++) names.push(`past_key_values.${i}.key`, `past_key_values.${i}.value`);
  return names;
}

export function kvOutputNames(kind: GraphKind, layers: number): string[] {
  const p = EXPECTED[kind].out;
  const names: string[] = [];
  for (let i = 0; i < layers; i++) names.push(`${p}.${i}.key`, `${p}.${i}.value`);
  return names;
}

/** Open an ONNX file with the engine's session options; errors name the file. */
export async function openSession(file: string, opts: SessionOptions = {}): Promise<ort.InferenceSession> {
  if (!existsSync(file)) throw new ModelLoadError(`model graph not found: ${file}`, file);
  if (statSync(file).size === 0) throw new ModelLoadError(`model graph is empty: ${file}`, file);
  const ep = opts.executionProvider ?? 'cpu';
  try {
    return await ort.InferenceSession.create(file, {
      executionProviders: [ep],
      graphOptimizationLevel: 'all',
      intraOpNumThreads: opts.intraOpThreads ?? 0,
      logSeverityLevel: 3,
      // CPU provider: the arena keeps one call's memory for the next. Memory patterns are off: onnxruntime plans one
      // per input shape, and a serving engine sees a new shape on almost every call (rows, capacity, tokens). Measured: one
      // attnlink-16 batch of 16 rows over and over in one process: with patterns on, the first two passes over 64
      // requests ran at 57-68 jobs/s and later ones at 146-152, and a full-prefill pass in between dropped the next
      // to 114-119; with patterns off the second pass was already at 119-133, and a full pass did not slow the next.
      enableCpuMemArena: opts.memArena !== false,
      enableMemPattern: false,
      // Config keys of onnxruntime_session_options_config_keys.h (session.intra_op.allow_spinning ...).
      extra: { session: { set_denormal_as_zero: opts.flushDenormals === false ? '0' : '1', intra_op: { allow_spinning: opts.spinning ? '1' : '0' }, inter_op: { allow_spinning: opts.spinning ? '1' : '0' } } },
    });
  } catch (e) {
    const msg = (e as Error).message.split('\n')[0];
    throw new ModelLoadError(`model graph ${file} could not be loaded by onnxruntime (${ep}): ${msg}`, file);
  }
}

/** Open one graph of a model, checking the file and its I/O names against the config. */
export async function openGraph(
  config: ModelConfig,
  kind: GraphKind,
  fileName: string,
  opts: SessionOptions = {},
): Promise<GraphSession> {
  const file = `${config.dir}/${fileName}`;
  const session = await openSession(file, opts);
  const want = [...EXPECTED[kind].inputs, ...pastInputNames(config.layers)];
  const missing = want.filter((n) => !session.inputNames.includes(n));
  const outs = ['logits', ...kvOutputNames(kind, config.layers)];
  const missingOut = outs.filter((n) => !session.outputNames.includes(n));
  if (missing.length || missingOut.length) {
    const pastIn = session.inputNames.filter((n) => n.startsWith('past_key_values.')).length / 2;
    throw new ModelLoadError(
      `model graph ${file} does not match config.json (${config.layers} layers) as a ${kind} graph: ` +
        `missing inputs [${missing.join(', ')}], missing outputs [${missingOut.join(', ')}]; the graph has ${pastIn} layers of past`,
      file,
    );
  }
  return { kind, file, session };
}
