import { mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Engine } from '../../shared/engine';
import { blobBytes, KVStore } from '../../shared/kvstore';
import { compileSource, link, linkBatch, type BlockStore, type LinkInput, type LinkOptions } from '../../shared/linking';
import { fixture } from '../helpers/fixtures';
import { MapStore, maxAbsDiff, randomTokens } from '../helpers/model';

/**
 * Real model families (random weights, real architectures and tokenizers; tools/model/fixtures.py): every link mode but
 * CacheBlend served from the stock graph gives what the primitive graph of the same folder gives, and so does a
 * GroupQueryAttention-op export (no position_ids) and a float16-KV export.
 */
const MODES: LinkOptions[] = [{ mode: 'full' }, { mode: 'prefix' }, { mode: 'naive' }, { mode: 'attnlink', k: 4 }, { mode: 'attnlink', k: 16 }, { mode: 'attnlink0' }];
const label = (o: LinkOptions) => (o.k !== undefined ? `${o.mode}-${o.k}` : o.mode);
const NEW = 4;

function prompt(e: Engine, seed: number, chunks = 3): LinkInput {
  // ordinary ids (the tokenizers' special tokens sit at the top of the vocabulary)
  const lo = 1000;
  const hi = 100_000;
  return {
    prefix: [e.config.bosTokenId],
    chunks: Array.from({ length: chunks }, (_, i) => randomTokens(18 + ((seed * 7 + i * 13) % 15), seed * 10 + i, lo, hi)),
    question: randomTokens(5, seed * 10 + 9, lo, hi),
  };
}

/** Link in a mode, then greedy-decode NEW tokens (no stop ids): the first token's logits and the tokens. */
async function serve(e: Engine, input: LinkInput, o: LinkOptions, store: BlockStore) {
  const r = await link({ engine: e, source: compileSource(e), prefixStore: store }, input, o, NEW);
  try {
    const g = await e.generate(r.cache, [r.logits], { maxTokens: NEW, stopIds: [] });
    await r.after();
    return { logits: r.logits, tokens: g.tokens[0] };
  } finally {
    r.cache.release();
  }
}

describe.each(['llama3-style', 'qwen3-style'] as const)('%s: the stock graph serves every mode but CacheBlend as the primitive graph does', (name) => {
  let prim: Engine;
  let stock: Engine;
  beforeAll(async () => {
    const dir = fixture(name);
    prim = await Engine.load(dir, { graph: 'primitive' });
    stock = await Engine.load(dir, { graph: 'stock' });
  }, 120_000);

  test('capabilities say what each graph can do', () => {
    expect(prim.capabilities).toMatchObject({ positionMasked: true, pastSlots: true, perLayer: true, kvDtype: 'float32' });
    expect(stock.capabilities).toMatchObject({ positionMasked: false, pastSlots: false, positionIds: true, kvDtype: 'float32' });
  });

  test.each(MODES.map((o) => [label(o), o] as const))('%s: same logits (1e-4) and greedy tokens', async (_l, o) => {
    const a = new MapStore();
    const b = new MapStore();
    for (const seed of [1, 2]) {
      // two prompts sharing their first chunk: prefix mode's second request hits the cache
      const input = prompt(prim, seed);
      if (seed === 2) input.chunks[0] = prompt(prim, 1).chunks[0];
      const p = await serve(prim, input, o, a);
      const s = await serve(stock, input, o, b);
      expect(maxAbsDiff(p.logits, s.logits)).toBeLessThan(1e-4);
      expect(s.tokens).toEqual(p.tokens);
    }
  });
});

describe('a GroupQueryAttention-op export (llama3-style-gqa: rotary inside the op, no position_ids)', () => {
  let prim: Engine;
  let gqa: Engine;
  beforeAll(async () => {
    prim = await Engine.load(fixture('llama3-style'), { graph: 'primitive' });
    gqa = await Engine.load(fixture('llama3-style-gqa'));
  }, 120_000);

  test('loads on the stock runner without position ids, passing the RoPE self-check (llama3 scaling)', () => {
    expect(gqa.capabilities).toMatchObject({ positionMasked: false, positionIds: false, perLayer: false });
  });

  test.each(MODES.map((o) => [label(o), o] as const))('%s: the primitive graph greedy tokens', async (_l, o) => {
    const a = new MapStore();
    const b = new MapStore();
    for (const seed of [3, 4]) {
      const input = prompt(prim, seed);
      if (seed === 4) input.chunks[0] = prompt(prim, 3).chunks[0];
      const p = await serve(prim, input, o, a);
      const g = await serve(gqa, input, o, b);
      expect(maxAbsDiff(p.logits, g.logits)).toBeLessThan(1e-3);
      expect(g.tokens).toEqual(p.tokens);
    }
  });

  test('a batch of prompts of different lengths: prefill (right-padded) and batched decode equal the primitive graph', async () => {
    const prompts = [5, 6, 7].map((seed, i) => randomTokens(10 + 9 * i, seed, 1000, 100_000));
    const run = async (e: Engine) => {
      const { cache, logits } = await e.prefill(prompts, NEW);
      try {
        return { logits, tokens: (await e.generate(cache, logits, { maxTokens: [NEW, 2, NEW], stopIds: [] })).tokens };
      } finally {
        cache.release();
      }
    };
    const p = await run(prim);
    const g = await run(gqa);
    for (let b = 0; b < 3; b++) expect(maxAbsDiff(p.logits[b], g.logits[b])).toBeLessThan(1e-3);
    expect(g.tokens).toEqual(p.tokens);
  });

  test('a call that does not continue its row contiguously is refused, naming the rule', async () => {
    const cache = gqa.newCache(1, 16);
    await expect(gqa.forward(cache, [{ tokens: [1000, 1001], positions: [5, 6] }])).rejects.toThrow(/takes no position_ids .* continue its cache contiguously/);
    expect(cache.length[0]).toBe(0); // refused before any slot was taken
    cache.release();
  });
});

describe('a float16-KV export (llama3-style-fp16)', () => {
  let f32: Engine;
  let f16: Engine;
  beforeAll(async () => {
    f32 = await Engine.load(fixture('llama3-style'), { graph: 'stock' });
    f16 = await Engine.load(fixture('llama3-style-fp16'));
  }, 120_000);

  test('the cache stays float32; the boundary converts (counted)', async () => {
    expect(f16.capabilities.kvDtype).toBe('float16');
    const cache = f16.newCache(1, 32);
    const r1 = await f16.forward(cache, [{ tokens: randomTokens(10, 1, 1000, 100_000), positions: Array.from({ length: 10 }, (_, i) => i) }]);
    // first call: nothing cached goes in; 10 tokens' KV (2 x layers x kvHeads x headDim each) come out
    const { layers, kvHeads, headDim } = f16.shape;
    const perToken = 2 * layers * kvHeads * headDim;
    expect(r1.floatsConverted).toBe(10 * perToken);
    const r2 = await f16.forward(cache, [{ tokens: [1234], positions: [10] }]);
    expect(r2.floatsConverted).toBe(10 * perToken + perToken); // the 10 cached in, the new one out
    // the cache's float16 mirror keeps what was converted: the next step converts only the token written since
    const r3 = await f16.forward(cache, [{ tokens: [1235], positions: [11] }]);
    expect(r3.floatsConverted).toBe(perToken + perToken);
    expect(cache.keys[0]).toBeInstanceOf(Float32Array);
    cache.release();
    const c32 = f32.newCache(1, 32);
    expect((await f32.forward(c32, [{ tokens: [1000], positions: [0] }])).floatsConverted).toBe(0);
    c32.release();
  });

  /**
   * Greedy decoding with each step's float32 margin (top-1 minus top-2 logit). Random weights over a 128k vocabulary
   * give flat logits: a step whose margin is below what float16 KV moves a logit by (~3e-4 measured) is a tie either
   * precision may break its own way, after which the continuations legitimately differ.
   */
  async function trace(e: Engine, input: LinkInput, o: LinkOptions) {
    const r = await link({ engine: e, source: compileSource(e), prefixStore: new MapStore() }, input, o, NEW);
    const tokens: number[] = [];
    const margins: number[] = [];
    let logits = r.logits;
    for (let s = 0; s < NEW; s++) {
      let t = 0;
      for (let i = 1; i < logits.length; i++) if (logits[i] > logits[t]) t = i;
      let second = -Infinity;
      for (let i = 0; i < logits.length; i++) if (i !== t && logits[i] > second) second = logits[i];
      tokens.push(t);
      margins.push(logits[t] - second);
      if (s + 1 < NEW) logits = (await e.forward(r.cache, [{ tokens: [t], positions: [r.stats.promptTokens + s] }])).logits[0];
    }
    r.cache.release();
    return { first: r.logits, tokens, margins };
  }
  const TIE = 2e-3;

  test('its chunks are stored as float16 blobs, exactly, at half the bytes of a float32 model', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'kv16-'));
    try {
      const open = (e: Engine, sub: string) =>
        KVStore.open({ modelId: e.id, shape: e.shape, dtype: e.capabilities.kvDtype, memory: false, disk: { dir: join(dir, sub), budgetBytes: 2 ** 26 }, redis: false });
      const tokens = randomTokens(24, 7, 1000, 100_000);
      const sizes: number[] = [];
      for (const [e, sub] of [[f16, 'a'], [f32, 'b']] as const) {
        const store = await open(e, sub);
        const compiled = await e.compile(tokens);
        await store.lookupOrCompute('k', () => compiled);
        await store.close();
        const again = await open(e, sub); // a fresh process's view: the disk blob
        const read = await again.get('k');
        await again.close();
        for (let l = 0; l < e.shape.layers; l++) expect([maxAbsDiff(read!.keys[l], compiled.keys[l]), maxAbsDiff(read!.values[l], compiled.values[l])]).toEqual([0, 0]);
        sizes.push(readdirSync(join(dir, sub), { recursive: true, withFileTypes: true }).filter((f) => f.isFile()).reduce((n, f) => n + statSync(join(f.parentPath, f.name)).size, 0));
      }
      // 2 bytes a float vs 4 (the headers differ by the model ids' lengths)
      expect(sizes).toEqual([blobBytes(f16.id, f16.shape, 24, 'float16'), blobBytes(f32.id, f32.shape, 24, 'float32')]);
      expect(sizes[0]).toBeLessThan(0.6 * sizes[1]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test.each([{ mode: 'naive' }, { mode: 'attnlink', k: 16 }] as LinkOptions[])('$mode: the same greedy tokens as float32 on 20 prompts (up to a float32 near-tie)', async (o) => {
    let identical = 0;
    const ties: string[] = [];
    for (let seed = 1; seed <= 20; seed++) {
      const input = prompt(f32, 100 + seed, 2);
      const a = await trace(f32, input, o);
      const b = await trace(f16, input, o);
      expect(maxAbsDiff(a.first, b.first)).toBeLessThan(TIE);
      const s = a.tokens.findIndex((t, i) => t !== b.tokens[i]);
      if (s < 0) identical++;
      else {
        // a divergence only where float32 itself was within float16's error of choosing otherwise
        expect({ seed, step: s, margin: a.margins[s] < TIE }).toEqual({ seed, step: s, margin: true });
        ties.push(`seed ${seed} step ${s}: margin ${a.margins[s].toExponential(1)}`);
      }
    }
    // With 4 tokens from 20 prompts, at most a couple of steps land on such a tie (measured: one, margin 1.6e-4).
    expect({ identical, ties }).toEqual({ identical: expect.any(Number), ties: expect.any(Array) });
    expect(identical).toBeGreaterThanOrEqual(18);
  });
});

describe('cross-request batches (linkBatch) on a stock graph', () => {
  test.each(['llama3-style', 'llama3-style-gqa'] as const)('%s: each row equals the primitive graph serving it alone', async (name) => {
    const prim = await Engine.load(fixture('llama3-style'), { graph: 'primitive' });
    const stock = await Engine.load(fixture(name), { graph: 'stock' });
    const opts: LinkOptions[] = [{ mode: 'naive' }, { mode: 'attnlink', k: 4 }, { mode: 'attnlink0' }, { mode: 'attnlink', k: 16 }];
    const inputs = opts.map((_, i) => prompt(prim, 30 + i, 2 + (i % 3)));
    const batch = await linkBatch({ engine: stock, source: compileSource(stock) }, inputs.map((input, i) => ({ input, options: opts[i], maxNewTokens: NEW })));
    try {
      const tokens = (await stock.generate(batch.cache, batch.logits, { maxTokens: NEW, stopIds: [] })).tokens;
      for (let i = 0; i < inputs.length; i++) {
        const alone = await serve(prim, inputs[i], opts[i], new MapStore());
        expect(maxAbsDiff(batch.logits[i], alone.logits)).toBeLessThan(1e-3);
        expect(tokens[i]).toEqual(alone.tokens);
        expect(batch.stats[i].computedTokens).toBe(1 + inputs[i].chunks.reduce((s, c) => s + Math.min(opts[i].mode === 'attnlink' ? opts[i].k! : 0, c.length), 0) + inputs[i].question.length);
      }
    } finally {
      batch.cache.release();
    }
  }, 60_000);
});
