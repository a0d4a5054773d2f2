import type { KVCache } from './cache';
import type { ModelConfig } from './config';
import { IncrementalDetokenizer, type Decodes } from './detok';
import { ContextLengthError, EngineInputError } from './errors';
import { Sampler, type SamplingParams } from './sampling';

/** What generation needs of an engine: the primitive, the context length, the tokenizer and config. */
export interface Decoder {
  readonly contextLength: number;
  readonly config: Pick<ModelConfig, 'eosTokenIds'>;
  readonly tokenizer: Decodes & { readonly stopIds?: number[] };
  forward(cache: KVCache, rows: { tokens: ArrayLike<number>; positions: ArrayLike<number> }[]): Promise<{ logits: Float32Array[] }>;
}

/** One row of a generation. */
export interface RowSpec {
  /** Most tokens to generate. */
  maxTokens: number;
  sampling?: SamplingParams;
  /** Token ids that end the row, not included (default: the tokenizer's stop ids, else config.json's eos). */
  stopIds?: number[];
  /**
   * Strings that end the row as soon as one appears in its decoded text: the text is cut before it, and nothing at
   * or past it is ever emitted (a possible partial match at the end of the text is held back).
   */
  stop?: string[];
}

export type FinishReason = 'stop' | 'length';

export interface RowResult {
  /**
   * Tokens returned: with a stop string, the tokens whose text starts before it (the token that completed the stop
   * string is dropped unless part of its text is returned).
   */
  tokens: number[];
  /** The returned text: the concatenation of the row's `token` events' text. */
  text: string;
  finish: FinishReason;
  /** Tokens the model generated (≥ tokens.length: those after a stop string's start are not returned). */
  generated: number;
}

export type GenerateEvent =
  /** A token was chosen; `text` is what it adds to the row's streamable text ('' while held back). */
  | { kind: 'token'; row: number; token: number; text: string }
  /** The row ended; `text` is the rest of its text (held-back bytes or a partial stop match that did not complete). */
  | { kind: 'done'; row: number; text: string; result: RowResult };

/** The longest suffix of `text` that is a proper prefix of some stop string (held back: it may become a stop). */
function partialStop(text: string, stops: string[]): number {
  let best = 0;
  for (const s of stops) {
    for (let n = Math.min(s.length - 1, text.length); n > best; n--) {
      if (text.endsWith(s.slice(0, n))) {
        best = n;
        break;
      }
    }
  }
  return best;
}

/** Index of the earliest stop string in `text` at or after `from`, or -1. */
function findStop(text: string, stops: string[], from: number): number {
  let cut = -1;
  for (const s of stops) {
    const i = text.indexOf(s, Math.max(0, from));
    if (i >= 0 && (cut < 0 || i < cut)) cut = i;
  }
  return cut;
}

/** One row's decoding state: tokens, text, what was emitted, and why it ended. */
class Row {
  readonly detok: IncrementalDetokenizer;
  readonly sampler: Sampler;
  readonly stopIds: Set<number>;
  readonly stops: string[];
  readonly maxStop: number;
  /** Text length after each token's text was decoded (token i's text starts at ends[i-1]). */
  readonly ends: number[] = [];
  /** Characters of the text already emitted. */
  emitted = 0;
  done = false;
  finish: FinishReason = 'length';
  /** Where a stop string starts in the text, once found. */
  cut = -1;

  constructor(
    tok: Decodes,
    readonly spec: RowSpec,
    defaultStopIds: number[],
  ) {
    this.detok = new IncrementalDetokenizer(tok);
    this.sampler = new Sampler(spec.sampling);
    this.stopIds = new Set(spec.stopIds ?? defaultStopIds);
    this.stops = (spec.stop ?? []).filter((s) => s.length > 0);
    this.maxStop = Math.max(0, ...this.stops.map((s) => s.length));
  }

  /** Add a token; returns the text now safe to emit. Ends the row when a stop string appears. */
  add(token: number): string {
    const before = this.detok.text.length;
    this.detok.push(token);
    return this.afterText(before);
  }

  private afterText(before: number): string {
    const text = this.detok.text;
    this.ends.push(text.length);
    if (this.stops.length && text.length > before) {
      const at = findStop(text, this.stops, before - this.maxStop + 1);
      if (at >= 0) {
        this.cut = at;
        this.done = true;
        this.finish = 'stop';
        return this.emitUpTo(at);
      }
    }
    return this.emitUpTo(text.length - partialStop(text, this.stops));
  }

  private emitUpTo(end: number): string {
    if (end <= this.emitted) return '';
    const out = this.detok.text.slice(this.emitted, end);
    this.emitted = end;
    return out;
  }

  /** End the row: the rest of its text (flushed bytes, a partial stop match that never completed). */
  end(why?: FinishReason): { text: string; result: RowResult } {
    this.done = true;
    if (why) this.finish = why;
    let rest = '';
    if (this.cut < 0) {
      const before = this.detok.text.length;
      this.detok.flush();
      if (this.stops.length && this.detok.text.length > before) {
        const at = findStop(this.detok.text, this.stops, before - this.maxStop + 1);
        if (at >= 0) {
          this.cut = at;
          this.finish = 'stop';
        }
      }
      rest = this.emitUpTo(this.cut >= 0 ? this.cut : this.detok.text.length);
    }
    const all = this.detok.tokens;
    let n = all.length;
    if (this.cut >= 0) {
      // Tokens whose text starts before the cut.
      n = 0;
      while (n < all.length && (n === 0 ? 0 : this.ends[n - 1]) < this.cut) n++;
    }
    return {
      text: rest,
      result: { tokens: all.slice(0, n), text: this.detok.text.slice(0, this.emitted), finish: this.finish, generated: all.length },
    };
  }
}

/** Each row's next position: one past its highest cached position. */
function nextPositions(cache: KVCache): Int32Array {
  const next = new Int32Array(cache.batch);
  for (let b = 0; b < cache.batch; b++) {
    let m = -1;
    const { pos, valid } = cache.rowSlots(b);
    for (let j = 0; j < cache.capacity; j++) if (valid[j] && pos[j] > m) m = pos[j];
    next[b] = m + 1;
  }
  return next;
}

/**
 * Decode a batch from each row's last logits, one token per live row per step, each at its row's next position in the
 * next free slot (engine.forward). Yields every chosen token with the text it adds, and each row's end with its
 * result. A row ends at a stop id (not included), a stop string (the text is cut before it), or after its maxTokens.
 */
export async function* generate(engine: Decoder, cache: KVCache, lastLogits: Float32Array[], specs: RowSpec[]): AsyncGenerator<GenerateEvent, RowResult[]> {
  const B = cache.batch;
  if (lastLogits.length !== B) throw new EngineInputError(`generate needs ${B} logits rows, got ${lastLogits.length}`);
  if (specs.length !== B) throw new EngineInputError(`generate needs ${B} row specs, got ${specs.length}`);
  for (const s of specs) {
    if (!Number.isInteger(s.maxTokens) || s.maxTokens < 0) throw new EngineInputError(`maxTokens must be a non-negative integer, got ${s.maxTokens}`);
  }
  const defaultStops = engine.tokenizer.stopIds ?? engine.config.eosTokenIds;
  let rows: Row[];
  try {
    rows = specs.map((s) => new Row(engine.tokenizer, s, defaultStops));
  } catch (e) {
    throw new EngineInputError((e as Error).message);
  }
  const nextPos = nextPositions(cache);
  const results: RowResult[] = Array(B);
  const endRow = (b: number, why?: FinishReason): GenerateEvent => {
    const { text, result } = rows[b].end(why);
    results[b] = result;
    return { kind: 'done', row: b, text, result };
  };
  for (let b = 0; b < B; b++) if (specs[b].maxTokens === 0) yield endRow(b, 'length');
  let logits = lastLogits;
  while (rows.some((r) => !r.done)) {
    const inputs: { tokens: number[]; positions: number[] }[] = [];
    const ended: number[] = [];
    for (let b = 0; b < B; b++) {
      const row = rows[b];
      if (row.done) {
        inputs.push({ tokens: [], positions: [] });
        continue;
      }
      const t = row.sampler.pick(logits[b]);
      if (row.stopIds.has(t)) {
        yield endRow(b, 'stop');
        inputs.push({ tokens: [], positions: [] });
        continue;
      }
      const text = row.add(t);
      yield { kind: 'token', row: b, token: t, text };
      if (row.done || row.detok.tokens.length >= row.spec.maxTokens) {
        ended.push(b);
        inputs.push({ tokens: [], positions: [] });
        continue;
      }
      if (nextPos[b] >= engine.contextLength) throw new ContextLengthError(nextPos[b] + 1, engine.contextLength);
      inputs.push({ tokens: [t], positions: [nextPos[b]++] });
    }
    for (const b of ended) yield endRow(b);
    if (rows.every((r) => r.done)) break;
    logits = (await engine.forward(cache, inputs)).logits;
  }
  return results;
}

/** Run `generate` to the end; `onEvent` sees every event (streaming). */
export async function generateAll(
  engine: Decoder,
  cache: KVCache,
  lastLogits: Float32Array[],
  specs: RowSpec[],
  onEvent?: (e: GenerateEvent) => void,
): Promise<RowResult[]> {
  const it = generate(engine, cache, lastLogits, specs);
  for (;;) {
    const n = await it.next();
    if (n.done) return n.value;
    onEvent?.(n.value);
  }
}
