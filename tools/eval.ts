/**
 * npm run eval -- --mode full [--limit N] [--k 16] [--r 0.15] [--model DIR] [--eval FILE] [--chunking kvsplit|fixed256]
 *
 * Exact-match accuracy of the engine over the held-out QA set in one link mode, per question type, with the overall
 * figure on the last line as `accuracy: 0.97`. `--eval FILE` (or `--data FILE`, measure.py's name for it) picks the
 * set: data/eval/qa-heldout.jsonl (default; 8 pages) or data/eval/qa-short.jsonl (1-4 documents of varied length).
 */
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { Engine } from '../shared/engine';
import { answer, chunkingLabel, itemInput, loadEvalSet, type Chunking } from '../shared/evaluation';
import { KVStore } from '../shared/kvstore';
import { LINK_MODES, storeSource, type LinkMode } from '../shared/linking';
import { defaultModelDir } from '../shared/config';

async function main() {
  const { values } = parseArgs({
    options: {
      mode: { type: 'string', default: 'full' },
      limit: { type: 'string' },
      k: { type: 'string' },
      r: { type: 'string' },
      model: { type: 'string', default: defaultModelDir() },
      eval: { type: 'string', default: join(__dirname, '..', 'data', 'eval', 'qa-heldout.jsonl') },
      data: { type: 'string' },
      chunking: { type: 'string', default: 'kvsplit' },
    },
  });
  if (!(LINK_MODES as readonly string[]).includes(values.mode!)) throw new Error(`unknown --mode ${values.mode}; one of ${LINK_MODES.join(', ')}`);
  const chunkingMatch = /^fixed(\d+)$/.exec(values.chunking!);
  if (values.chunking !== 'kvsplit' && !chunkingMatch) throw new Error(`--chunking must be kvsplit or fixedN, got ${values.chunking}`);
  const chunking: Chunking = chunkingMatch ? { kind: 'fixed', chunkTokens: Number(chunkingMatch[1]) } : { kind: 'kvsplit' };
  const engine = await Engine.load(values.model!);
  const items = loadEvalSet(values.data ?? values.eval!, values.limit ? Number(values.limit) : undefined);
  const store = await KVStore.open({ modelId: engine.id, shape: engine.shape, memory: { budgetBytes: 2 ** 30 }, disk: false, redis: false });
  const prefixStore = await KVStore.open({ modelId: engine.id, shape: engine.shape, memory: { budgetBytes: 2 ** 30 }, disk: false, redis: false });
  const ctx = { engine, source: storeSource(engine, store), prefixStore };
  const mode = { mode: values.mode as LinkMode, k: values.k ? Number(values.k) : undefined, r: values.r ? Number(values.r) : undefined };
  const byType = new Map<string, { n: number; ok: number }>();
  let ok = 0;
  for (const item of items) {
    const a = await answer(ctx, itemInput(engine, item, chunking), item.answer, mode);
    const t = byType.get(item.type) ?? { n: 0, ok: 0 };
    t.n++;
    t.ok += Number(a.correct);
    byType.set(item.type, t);
    ok += Number(a.correct);
  }
  console.log(`model ${engine.id}, mode ${a2s(mode)}, chunking ${chunkingLabel(chunking)}, ${items.length} questions`);
  for (const [type, t] of [...byType].sort()) console.log(`${type}: ${(t.ok / t.n).toFixed(4)} (${t.ok}/${t.n})`);
  console.log(`accuracy: ${(ok / items.length).toFixed(4)}`);
  await store.close();
  await prefixStore.close();
}

function a2s(m: { mode: string; k?: number; r?: number }): string {
  return m.mode + (m.k !== undefined ? ` k=${m.k}` : '') + (m.r !== undefined ? ` r=${m.r}` : '');
}

main().catch((e) => {
  console.error(`eval: ${e instanceof Error ? e.message : String(e)}`);
  process.exit(1);
});
