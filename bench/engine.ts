/**
 * npm run bench:engine [-- --model DIR --runs N]
 *
 * Prefill tokens/s at 256, 1024 and 2048 tokens; decode ms/token over a 2048-token context; a 16-token step over a
 * 2048-token past. Both graphs side by side in one run: the primitive graph (cache passed in place, only new KV
 * returned) and the stock Optimum graph (dense past copied in, whole cache returned each step).
 */
import { Engine } from '../shared/engine';
import { argNumber, machine, modelDirFromArgs, quantile, table, timeIt, writeResult } from './common';

function tokens(n: number, vocab: number, seed: number, bos: number): number[] {
  let s = seed;
  const out = [bos];
  while (out.length < n) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out.push(5 + (s % (vocab - 5)));
  }
  return out;
}

async function main() {
  const dir = modelDirFromArgs();
  const runs = argNumber('--runs', 5);
  const decodeSteps = argNumber('--decode-steps', 32);
  const rows: Record<string, string | number>[] = [];
  const results: Record<string, unknown>[] = [];
  for (const graph of ['primitive', 'stock'] as const) {
    const engine = await Engine.load(dir, { graph });
    const V = engine.config.vocabSize;
    const bos = engine.config.bosTokenId;
    const r: Record<string, number | string> = { graph };
    for (const n of [256, 1024, 2048]) {
      const prompt = tokens(n, V, n, bos);
      const ms = await timeIt(() => engine.prefill([prompt]), runs);
      r[`prefill_${n}_tok_s`] = n / (quantile(ms, 0.5) / 1000);
      r[`prefill_${n}_ms`] = quantile(ms, 0.5);
    }
    // Decode: one token at a time over a 2048-token prompt.
    const prompt = tokens(2048, V, 7, bos);
    const decodeMs: number[] = [];
    let kvOut = 0;
    for (let rep = 0; rep < Math.max(1, Math.floor(runs / 2)); rep++) {
      const { cache } = await engine.prefill([prompt], decodeSteps);
      let pos = prompt.length;
      for (let i = 0; i < decodeSteps; i++) {
        const t0 = performance.now();
        const res = await engine.forward(cache, [{ tokens: [9], positions: [pos++] }]);
        decodeMs.push(performance.now() - t0);
        kvOut = res.kvFloatsOut;
      }
    }
    r.decode_ms_per_token = quantile(decodeMs, 0.5);
    r.decode_kv_bytes_returned_per_token = kvOut * 4;
    // 16 tokens over a 2048-token past.
    const step: number[] = [];
    for (let i = 0; i < runs; i++) {
      const { cache } = await engine.prefill([prompt], 16);
      const t0 = performance.now();
      await engine.forward(cache, [{ tokens: tokens(16, V, 3 + i, 9), positions: Array.from({ length: 16 }, (_, k) => 2048 + k) }]);
      step.push(performance.now() - t0);
    }
    r.step16_over_2048_ms = quantile(step, 0.5);
    rows.push(r);
    results.push({ graph, ...r });
  }
  const prim = results[0] as Record<string, number>;
  const stock = results[1] as Record<string, number>;
  const summary = {
    decode_speedup_primitive_vs_stock: stock.decode_ms_per_token / prim.decode_ms_per_token,
    decode_kv_bytes_returned_ratio_stock_vs_primitive: stock.decode_kv_bytes_returned_per_token / prim.decode_kv_bytes_returned_per_token,
  };
  console.log(`model ${dir}`);
  const cols = (keys: string[]) => rows.map((r) => Object.fromEntries(['graph', ...keys].map((k) => [k, r[k]])));
  console.log(table(cols(['prefill_256_tok_s', 'prefill_1024_tok_s', 'prefill_2048_tok_s', 'prefill_2048_ms'])));
  console.log(table(cols(['decode_ms_per_token', 'decode_kv_bytes_returned_per_token', 'step16_over_2048_ms'])));
  console.log(`decode at 2048 context: primitive is ${summary.decode_speedup_primitive_vs_stock.toFixed(2)}x faster per token; ` +
    `stock returns ${summary.decode_kv_bytes_returned_ratio_stock_vs_primitive.toFixed(0)}x more KV bytes per token`);
  const file = writeResult('engine', { model: dir, runs, machine: machine(), results, summary });
  console.log(`wrote ${file}`);
}

main().catch((e) => {
  console.error(e instanceof Error ? e.message : e);
  process.exit(1);
});
