import { readFileSync } from 'node:fs';
import { z } from 'zod';
import type { Engine } from '../engine';
import { splitDocuments, splitFixed } from '../chunking';
import { link, type LinkContext, type LinkInput, type LinkOptions, type LinkStats } from '../linking';

/** One held-out question: documents kept apart (so they can be chunked and cached one by one), the gold answer. */
export const EvalItem = z.object({
  id: z.union([z.string(), z.number()]).transform(String),
  type: z.string(),
  documents: z.array(z.string()).min(1),
  question: z.string().min(1),
  answer: z.string(),
});
export type EvalItem = z.infer<typeof EvalItem>;

export function loadEvalSet(file: string, limit?: number): EvalItem[] {
  const lines = readFileSync(file, 'utf8').split('\n').filter((l) => l.trim());
  const items = lines.slice(0, limit ?? lines.length).map((l, i) => {
    const r = EvalItem.safeParse(JSON.parse(l));
    if (!r.success) throw new Error(`${file}:${i + 1}: ${r.error.issues.map((x) => `${x.path.join('.')}: ${x.message}`).join('; ')}`);
    return r.data;
  });
  if (!items.length) throw new Error(`${file} holds no questions`);
  return items;
}

/** How documents become chunks: KVSplit at semantic boundaries, or fixed token windows over the documents joined. */
export type Chunking = { kind: 'kvsplit'; targetTokens?: number } | { kind: 'fixed'; chunkTokens: number };

export function chunkingLabel(c: Chunking): string {
  if (c.kind === 'fixed') return `fixed${c.chunkTokens}`;
  return c.targetTokens ? `kvsplit${c.targetTokens}` : 'kvsplit';
}

/** The prompt of an item as link segments: BOS, the chunks, the question. */
export function itemInput(engine: Engine, item: EvalItem, chunking: Chunking = { kind: 'kvsplit' }): LinkInput {
  const tok = engine.tokenizer;
  let chunks: number[][];
  if (chunking.kind === 'kvsplit') {
    const opts = chunking.targetTokens ? { targetTokens: chunking.targetTokens } : undefined;
    chunks = splitDocuments(item.documents, tok, opts).flatMap((cs) => cs.map((c) => c.tokens));
  } else {
    // Fixed windows over the documents' tokens end to end (what a splitter blind to meaning does).
    const all = item.documents.flatMap((d) => tok.encode(d));
    chunks = [];
    for (let i = 0; i < all.length; i += chunking.chunkTokens) chunks.push(all.slice(i, i + chunking.chunkTokens));
  }
  return { prefix: [engine.config.bosTokenId], chunks, question: tok.encode(item.question) };
}

/** Exact match: the decoded answer and the gold, whitespace-trimmed, compared as strings. */
export function exactMatch(prediction: string, gold: string): boolean {
  return prediction.trim() === gold.trim();
}

export interface Answer {
  prediction: string;
  correct: boolean;
  /** The first answer token's logits (for KL against another mode). */
  firstLogits: Float32Array;
  stats: LinkStats;
}

export const MAX_ANSWER_TOKENS = 8;

/** Link an item's prompt in a mode, decode greedily to <eos> (at most 8 tokens), and grade it. */
export async function answer(ctx: LinkContext, input: LinkInput, gold: string, mode: LinkOptions): Promise<Answer> {
  const linked = await link(ctx, input, mode, MAX_ANSWER_TOKENS);
  const gen = await ctx.engine.generate(linked.cache, [linked.logits], { maxTokens: MAX_ANSWER_TOKENS });
  await linked.after();
  linked.cache.release();
  const prediction = ctx.engine.tokenizer.decode(gen.tokens[0]);
  return { prediction, correct: exactMatch(prediction, gold), firstLogits: linked.logits, stats: linked.stats };
}

/** KL(p || q) of two logit vectors' softmax distributions, in nats. */
export function klDivergence(pLogits: Float32Array, qLogits: Float32Array): number {
  const lse = (x: Float32Array) => {
    let m = -Infinity;
    for (const v of x) m = Math.max(m, v);
    let s = 0;
    for (const v of x) s += Math.exp(v - m);
    return m + Math.log(s);
  };
  const lp = lse(pLogits);
  const lq = lse(qLogits);
  let kl = 0;
  for (let i = 0; i < pLogits.length; i++) {
    const logp = pLogits[i] - lp;
    kl += Math.exp(logp) * (logp - (qLogits[i] - lq));
  }
  return Math.max(0, kl);
}

