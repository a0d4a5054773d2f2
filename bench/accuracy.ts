/**
 * npm run bench:accuracy [-- --limit N --model DIR --eval FILE]
 *
 * Every link mode over the held-out QA set, side by side in one run (modes interleaved per question, so load on the
 * machine falls on all of them alike): exact-match accuracy (overall and per question type), mean KL divergence of
 * the first answer token's distribution from `full`, fraction of prompt tokens computed, TTFT p50/p90 with chunks hot
 * in memory and compile excluded (as in the paper), and the TTFT ratio full ÷ mode. Sweeps AttnLink k and CacheBlend
 * r; compares KVSplit chunks with fixed 256-token windows. Prefix mode is warmed with the same documents in another
 * order — the RAG case where prefix caches miss.
 *
 * Writes bench/results/accuracy.json, accuracy.md and accuracy.svg, and prints the table.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { SingleBar, Presets } from 'cli-progress';
import { Engine, LayeredModel } from '../shared/engine';
import { answer, chunkingLabel, itemInput, klDivergence, loadEvalSet, MAX_ANSWER_TOKENS, type Chunking } from '../shared/evaluation';
import { KVStore } from '../shared/kvstore';
import { link, LINK_DEFAULTS, modeLabel, storeSource, type LinkInput, type LinkOptions } from '../shared/linking';
import { ROOT, machine, modelDirFromArgs, quantile, shuffled, table, writeResult } from './common';
import { scatterSvg } from './chart';

interface Variant {
  label: string;
  mode: LinkOptions;
  chunking: Chunking;
}

const KVSPLIT: Chunking = { kind: 'kvsplit' };
const FIXED: Chunking = { kind: 'fixed', chunkTokens: 256 };
const KVSPLIT_128: Chunking = { kind: 'kvsplit', targetTokens: 128 };
const KVSPLIT_512: Chunking = { kind: 'kvsplit', targetTokens: 512 };

function variants(): Variant[] {
  const v = (mode: LinkOptions, chunking = KVSPLIT): Variant => ({
    label: modeLabel(mode) + (chunking === KVSPLIT ? '' : `@${chunkingLabel(chunking)}`),
    mode,
    chunking,
  });
  return [
    v({ mode: 'full' }),
    v({ mode: 'prefix' }),
    v({ mode: 'naive' }),
    v({ mode: 'attnlink0' }),
    ...[1, 2, 4, 8, 16, 32].map((k) => v({ mode: 'attnlink', k })),
    ...[0.05, 0.15, 0.3].map((r) => v({ mode: 'cacheblend', r })),
    v({ mode: 'naive' }, FIXED),
    v({ mode: 'attnlink', k: 16 }, FIXED),
    // KVSplit's target size: half and double the default (documents are ~200-256 tokens).
    v({ mode: 'attnlink', k: 16 }, KVSPLIT_128),
    v({ mode: 'attnlink', k: 16 }, KVSPLIT_512),
  ];
}

interface Acc {
  n: number;
  ok: number;
  byType: Map<string, { n: number; ok: number }>;
  kl: number[];
  computed: number[];
  ttft: number[];
  chunks: number[];
}

async function main() {
  const { values } = parseArgs({
    options: { limit: { type: 'string' }, model: { type: 'string' }, eval: { type: 'string' }, 'standard-prompts': { type: 'string' } },
  });
  const stdQuestions = Number(values['standard-prompts'] ?? 40);
  const dir = values.model ?? modelDirFromArgs([]);
  const evalFile = values.eval ?? join(ROOT, 'data', 'eval', 'qa-heldout.jsonl');
  const engine = await Engine.load(dir);
  const layered = await LayeredModel.load(engine.config, engine.sessionOptions);
  const items = loadEvalSet(evalFile, values.limit ? Number(values.limit) : undefined);
  const mem = () => KVStore.open({ modelId: engine.id, shape: engine.shape, memory: { budgetBytes: 2 ** 31 }, disk: false, redis: false });
  const chunkStore = await mem();
  const prefixStore = await mem();
  const ctx = { engine, layered, source: storeSource(engine, chunkStore), prefixStore };
  const vs = variants();
  const acc = new Map<string, Acc>(vs.map((v) => [v.label, { n: 0, ok: 0, byType: new Map(), kl: [], computed: [], ttft: [], chunks: [] }]));
  const types = new Set<string>();
  const bar = new SingleBar({ format: 'bench:accuracy {bar} {value}/{total} questions | {eta_formatted} left', stream: process.stderr }, Presets.shades_classic);
  bar.start(items.length, 0);
  const t0 = Date.now();
  for (let q = 0; q < items.length; q++) {
    const item = items[q];
    types.add(item.type);
    const inputs = new Map<string, LinkInput>([KVSPLIT, FIXED, KVSPLIT_128, KVSPLIT_512].map((c) => [chunkingLabel(c), itemInput(engine, item, c)]));
    // Warm: every chunk compiled (both variants) and the prefix store holding this question's documents in another
    // order — all outside the timed path.
    for (const input of inputs.values()) {
      for (const c of input.chunks) {
        await ctx.source.chunk(c, { kind: 'plain' });
        await ctx.source.chunk(c, { kind: 'sink', sinkTokens: LINK_DEFAULTS.sinkTokens });
      }
    }
    const base = inputs.get(chunkingLabel(KVSPLIT))!;
    const warm = await link(ctx, { ...base, chunks: shuffled(base.chunks, q + 1) }, { mode: 'prefix' });
    await warm.after();
    // full first (the KL reference), then the rest in a rotating order.
    const rest = vs.slice(1);
    const order = [vs[0], ...rest.slice(q % rest.length), ...rest.slice(0, q % rest.length)];
    let fullLogits: Float32Array | undefined;
    for (const v of order) {
      const a = await answer(ctx, inputs.get(chunkingLabel(v.chunking))!, item.answer, v.mode);
      if (v.label === 'full') fullLogits = a.firstLogits;
      const r = acc.get(v.label)!;
      r.n++;
      r.ok += Number(a.correct);
      const t = r.byType.get(item.type) ?? { n: 0, ok: 0 };
      t.n++;
      t.ok += Number(a.correct);
      r.byType.set(item.type, t);
      r.kl.push(klDivergence(fullLogits!, a.firstLogits));
      r.computed.push(a.stats.computedFraction);
      r.ttft.push(a.stats.ttftMs);
      r.chunks.push(inputs.get(chunkingLabel(v.chunking))!.chunks.length);
    }
    bar.increment();
  }
  bar.stop();
  // The standard workload (8 chunks of 256 tokens + the question): TTFT only, modes side by side, chunks hot.
  // Chunks are 256-token windows over the documents of consecutive held-out items.
  const std = new Map<string, number[]>();
  const stdModes: LinkOptions[] = [{ mode: 'full' }, { mode: 'prefix' }, { mode: 'naive' }, { mode: 'attnlink0' }, { mode: 'attnlink', k: 16 }, { mode: 'cacheblend', r: 0.15 }];
  const stdN = Math.min(stdQuestions, items.length);
  // Its own prefix pool: prompts of the first phase share leading tokens with these and must not count as hits.
  const stdPrefix = await mem();
  const stdCtx = { ...ctx, prefixStore: stdPrefix };
  const sbar = new SingleBar({ format: 'standard workload {bar} {value}/{total} prompts', stream: process.stderr }, Presets.shades_classic);
  sbar.start(stdN, 0);
  for (let q = 0; q < stdN; q++) {
    const stream: number[] = [];
    for (let j = q; stream.length < 8 * 256; j = (j + 1) % items.length) for (const d of items[j].documents) stream.push(...engine.tokenizer.encode(d));
    const input: LinkInput = {
      prefix: [engine.config.bosTokenId],
      chunks: Array.from({ length: 8 }, (_, i) => stream.slice(i * 256, (i + 1) * 256)),
      question: engine.tokenizer.encode(items[q].question),
    };
    for (const c of input.chunks) {
      await ctx.source.chunk(c, { kind: 'plain' });
      await ctx.source.chunk(c, { kind: 'sink', sinkTokens: LINK_DEFAULTS.sinkTokens });
    }
    const warm = await link(stdCtx, { ...input, chunks: shuffled(input.chunks, q + 7) }, { mode: 'prefix' });
    await warm.after();
    warm.cache.release();
    const order = [...stdModes.slice(q % stdModes.length), ...stdModes.slice(0, q % stdModes.length)];
    for (const m of order) {
      const l = await link(stdCtx, input, m, MAX_ANSWER_TOKENS);
      await l.after();
      l.cache.release();
      const arr = std.get(l.stats.mode) ?? [];
      arr.push(l.stats.ttftMs);
      std.set(l.stats.mode, arr);
    }
    sbar.increment();
  }
  sbar.stop();
  const stdFull = quantile(std.get('full')!, 0.5);
  const standard = {
    prompts: stdN,
    prompt_tokens: 1 + 8 * 256,
    rows: [...std].map(([mode, xs]) => ({ mode, ttft_ms_p50: quantile(xs, 0.5), ttft_ms_p90: quantile(xs, 0.9), ttft_ratio_vs_full: stdFull / quantile(xs, 0.5) })),
  };
  const stdGet = (m: string) => standard.rows.find((r) => r.mode === m)!;

  const fullP50 = quantile(acc.get('full')!.ttft, 0.5);
  const typeList = [...types].sort();
  const rows = vs.map((v) => {
    const r = acc.get(v.label)!;
    const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
    const p50 = quantile(r.ttft, 0.5);
    return {
      mode: v.label,
      chunking: chunkingLabel(v.chunking),
      chunks_per_prompt: r.chunks.reduce((a, b) => a + b, 0) / r.chunks.length,
      n: r.n,
      accuracy: r.ok / r.n,
      accuracy_by_type: Object.fromEntries(typeList.map((t) => [t, r.byType.get(t) ? r.byType.get(t)!.ok / r.byType.get(t)!.n : null])),
      kl: mean(r.kl),
      computed_fraction: mean(r.computed),
      ttft_ms_p50: p50,
      ttft_ms_p90: quantile(r.ttft, 0.9),
      ttft_ratio_vs_full: fullP50 / p50,
    };
  });
  const get = (m: string) => rows.find((r) => r.mode === m)!;
  const summary = {
    attnlink16_minus_full_accuracy: get('attnlink-16').accuracy - get('full').accuracy,
    naive_minus_full_accuracy: get('naive').accuracy - get('full').accuracy,
    ttft_full_over_attnlink16: get('full').ttft_ms_p50 / get('attnlink-16').ttft_ms_p50,
    ttft_cacheblend15_over_attnlink16: get('cacheblend-15').ttft_ms_p50 / get('attnlink-16').ttft_ms_p50,
    kvsplit_minus_fixed_attnlink16_accuracy: get('attnlink-16').accuracy - get('attnlink-16@fixed256').accuracy,
    kvsplit_minus_fixed_naive_accuracy: get('naive').accuracy - get('naive@fixed256').accuracy,
    standard_ttft_full_over_attnlink16: stdGet('full').ttft_ms_p50 / stdGet('attnlink-16').ttft_ms_p50,
    standard_ttft_cacheblend15_over_attnlink16: stdGet('cacheblend-15').ttft_ms_p50 / stdGet('attnlink-16').ttft_ms_p50,
    attnlink16_accuracy_by_kvsplit_target: {
      128: get('attnlink-16@kvsplit128').accuracy,
      256: get('attnlink-16').accuracy,
      512: get('attnlink-16@kvsplit512').accuracy,
    },
  };
  const printable = rows.map((r) => ({
    mode: r.mode,
    accuracy: r.accuracy.toFixed(4),
    ...Object.fromEntries(typeList.map((t) => [t, r.accuracy_by_type[t] === null ? '-' : (r.accuracy_by_type[t] as number).toFixed(3)])),
    kl: r.kl.toExponential(2),
    chunks: r.chunks_per_prompt.toFixed(1),
    computed: r.computed_fraction.toFixed(3),
    'ttft p50 ms': r.ttft_ms_p50.toFixed(2),
    'ttft p90 ms': r.ttft_ms_p90.toFixed(2),
    'full÷mode': r.ttft_ratio_vs_full.toFixed(2),
  }));
  const stdTable = table(standard.rows.map((r) => ({ mode: r.mode, 'ttft p50 ms': r.ttft_ms_p50.toFixed(2), 'ttft p90 ms': r.ttft_ms_p90.toFixed(2), 'full÷mode': r.ttft_ratio_vs_full.toFixed(2) })));
  const md = table(printable);
  const elapsed = (Date.now() - t0) / 1000;
  const head = `model ${engine.id} (${dir}), ${items.length} questions from ${evalFile}, ${elapsed.toFixed(0)} s`;
  console.log(head);
  console.log(md);
  console.log(`\nstandard workload: ${stdN} prompts of 8 chunks × 256 tokens + question (TTFT only)`);
  console.log(stdTable);
  console.log(
    `attnlink-16 vs full: accuracy ${(summary.attnlink16_minus_full_accuracy * 100).toFixed(2)} points, TTFT full÷attnlink-16 ${summary.ttft_full_over_attnlink16.toFixed(2)}x; ` +
      `cacheblend-15÷attnlink-16 ${summary.ttft_cacheblend15_over_attnlink16.toFixed(2)}x; naive vs full ${(summary.naive_minus_full_accuracy * 100).toFixed(2)} points; ` +
      `kvsplit vs fixed256 (attnlink-16) ${(summary.kvsplit_minus_fixed_attnlink16_accuracy * 100).toFixed(2)} points; ` +
      `standard workload TTFT full÷attnlink-16 ${summary.standard_ttft_full_over_attnlink16.toFixed(2)}x, cacheblend-15÷attnlink-16 ${summary.standard_ttft_cacheblend15_over_attnlink16.toFixed(2)}x`,
  );
  const file = writeResult('accuracy', { model: dir, eval: evalFile, questions: items.length, seconds: elapsed, machine: machine(), rows, standard_workload: standard, summary });
  writeFileSync(
    join(ROOT, 'bench', 'results', 'accuracy.md'),
    `# bench:accuracy\n\n${head}\n\n${md}\n\n## Standard workload (8 × 256-token chunks + question), TTFT\n\n${stdTable}\n`,
  );
  writeFileSync(
    join(ROOT, 'bench', 'results', 'accuracy.svg'),
    scatterSvg(
      rows.map((r) => ({ label: r.mode, x: r.ttft_ratio_vs_full, y: r.accuracy })),
      { title: `Accuracy vs TTFT speedup (${engine.id}, ${items.length} questions)`, xLabel: 'TTFT full ÷ mode (log)', yLabel: 'exact match', logX: true },
    ),
  );
  console.log(`wrote ${file}, accuracy.md, accuracy.svg`);
  await chunkStore.close();
  await prefixStore.close();
  await stdPrefix.close();
}

main().catch((e) => {
  console.error(`bench:accuracy: ${e instanceof Error ? e.stack : String(e)}`);
  process.exit(1);
});
