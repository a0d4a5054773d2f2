import { Engine } from '../../shared/engine';
import { generateAll, type GenerateEvent, type RowResult, type RowSpec } from '../../shared/engine/generate';
import { Rng, Sampler } from '../../shared/engine/sampling';
import { TINY, randomTokens } from '../helpers/model';

let engine: Engine;
beforeAll(async () => {
  engine = await Engine.load(TINY);
});

const prompt = (seed: number) => [engine.config.bosTokenId, ...randomTokens(12, seed, 5, engine.config.vocabSize)];

/** Prefill the prompts, then generate with the specs; every event is collected. */
async function run(prompts: number[][], specs: RowSpec[]): Promise<{ results: RowResult[]; events: GenerateEvent[] }> {
  const { cache, logits } = await engine.prefill(prompts, Math.max(...specs.map((s) => s.maxTokens)));
  const events: GenerateEvent[] = [];
  try {
    const results = await generateAll(engine, cache, logits, specs, (e) => events.push(e));
    return { results, events };
  } finally {
    cache.release();
  }
}

/** The row's streamed text: its events' text in order. */
const streamed = (events: GenerateEvent[], row = 0) =>
  events
    .filter((e) => e.row === row)
    .map((e) => e.text)
    .join('');

/** Greedy decoding written out here: argmax of each step's logits, one token at the next position (engine.forward). */
async function greedy(p: number[], n: number): Promise<number[]> {
  const { cache, logits } = await engine.prefill([p], n);
  const out: number[] = [];
  try {
    let last = logits[0];
    for (let i = 0; i < n; i++) {
      let best = 0;
      for (let v = 1; v < last.length; v++) if (last[v] > last[best]) best = v;
      out.push(best);
      if (out.length < n) last = (await engine.forward(cache, [{ tokens: [best], positions: [p.length + i] }])).logits[0];
    }
  } finally {
    cache.release();
  }
  return out;
}

describe('sampling', () => {
  test('a temperature too small to divide by is greedy (1/t would be Infinity and every weight NaN)', () => {
    const logits = Float32Array.from([0.1, 0.5, 3.0, 0.2]);
    for (const temperature of [1e-320, 5e-309, 1e-6]) expect(new Sampler({ temperature, seed: 1 }).pick(logits)).toBe(2);
  });

  test('temperature 0, top_k 1 and top_p 0 are greedy (an argmax decode written out, and Engine.generate)', async () => {
    const want = await greedy(prompt(1), 10);
    for (const sampling of [undefined, { temperature: 0 }, { temperature: 1.5, topK: 1, seed: 3 }, { temperature: 1, topP: 0, seed: 9 }]) {
      const { results } = await run([prompt(1)], [{ maxTokens: 10, sampling, stopIds: [] }]);
      expect(results[0].tokens).toEqual(want);
    }
    const { cache, logits } = await engine.prefill([prompt(1)], 10);
    expect((await engine.generate(cache, logits, { maxTokens: 10, stopIds: [] })).tokens[0]).toEqual(want);
    cache.release();
  });

  test('the same seed gives the same tokens; other seeds give others', async () => {
    const spec = (seed: number): RowSpec => ({ maxTokens: 12, sampling: { temperature: 1.2, topP: 0.95, topK: 50, seed }, stopIds: [] });
    const a = await run([prompt(2)], [spec(42)]);
    const b = await run([prompt(2)], [spec(42)]);
    expect(b.results[0].tokens).toEqual(a.results[0].tokens);
    expect(b.results[0].text).toBe(a.results[0].text);
    const others = await Promise.all([1, 2, 3].map(async (s) => (await run([prompt(2)], [spec(s)])).results[0].tokens.join(',')));
    expect(new Set([a.results[0].tokens.join(','), ...others]).size).toBeGreaterThan(1);
    expect(a.results[0].tokens).not.toEqual(await greedy(prompt(2), 12));
  });

  test('sampling is per row: each row of a batch equals the row alone', async () => {
    const specs: RowSpec[] = [
      { maxTokens: 8, stopIds: [] },
      { maxTokens: 6, sampling: { temperature: 0.9, seed: 7 }, stopIds: [] },
      { maxTokens: 9, sampling: { temperature: 1.4, topK: 20, seed: 8 }, stopIds: [] },
    ];
    const prompts = [prompt(3), prompt(4), prompt(5)];
    const together = await run(prompts, specs);
    for (let i = 0; i < 3; i++) {
      const alone = await run([prompts[i]], [specs[i]]);
      expect(together.results[i].tokens).toEqual(alone.results[0].tokens);
    }
  });

  test('top_k and top_p keep only their candidates; draws follow the probabilities', () => {
    const logits = Float32Array.from([Math.log(0.5), Math.log(0.3), Math.log(0.15), Math.log(0.05)]);
    const count = (s: Sampler, n = 4000) => {
      const c = [0, 0, 0, 0];
      for (let i = 0; i < n; i++) c[s.pick(logits)]++;
      return c.map((x) => x / n);
    };
    const k2 = count(new Sampler({ temperature: 1, topK: 2, seed: 1 }));
    expect(k2[2] + k2[3]).toBe(0);
    expect(k2[0]).toBeCloseTo(0.5 / 0.8, 1);
    const p7 = count(new Sampler({ temperature: 1, topP: 0.7, seed: 2 }));
    expect(p7[2] + p7[3]).toBe(0); // 0.5 + 0.3 reaches 0.7
    const all = count(new Sampler({ temperature: 1, seed: 3 }));
    [0.5, 0.3, 0.15, 0.05].forEach((p, i) => expect(Math.abs(all[i] - p)).toBeLessThan(0.03));
    // The generator: reproducible from its seed, uniform in [0, 1).
    const r1 = new Rng(5);
    const r2 = new Rng(5);
    const xs = Array.from({ length: 1000 }, () => r1.next());
    expect(xs).toEqual(Array.from({ length: 1000 }, () => r2.next()));
    expect(Math.min(...xs)).toBeGreaterThanOrEqual(0);
    expect(Math.max(...xs)).toBeLessThan(1);
  });
});

describe('stop ids and stop strings', () => {
  /** Greedy text of 16 tokens, and each token's text (the detokenizer's pieces). */
  async function reference(seed: number) {
    const { results, events } = await run([prompt(seed)], [{ maxTokens: 16, stopIds: [] }]);
    const pieces = events.filter((e) => e.kind === 'token').map((e) => e.text);
    return { tokens: results[0].tokens, text: results[0].text, pieces };
  }

  test('a stop string across a token boundary ends decoding there; no streamed piece reaches it', async () => {
    const ref = await reference(6);
    // A boundary k|k+1 whose 2 + 2 characters around it first occur there.
    let stop = '';
    let k = -1;
    let boundary = 0;
    for (let i = 0, at = 0; i < ref.pieces.length - 1; i++) {
      at += ref.pieces[i].length;
      const s = ref.text.slice(at - 2, at + 2);
      if (ref.pieces[i].length >= 2 && ref.pieces[i + 1].length >= 2 && ref.text.indexOf(s) === at - 2) {
        stop = s;
        k = i;
        boundary = at;
        break;
      }
    }
    expect(k).toBeGreaterThanOrEqual(0);
    const { results, events } = await run([prompt(6)], [{ maxTokens: 16, stopIds: [], stop: ['never-there', stop] }]);
    const r = results[0];
    expect(r.finish).toBe('stop');
    expect(r.text).toBe(ref.text.slice(0, boundary - 2));
    expect(streamed(events)).toBe(r.text);
    for (const e of events) expect(e.text).not.toContain(stop);
    // Token k's event held back its last two characters (they could start the stop string).
    const tokenEvents = events.filter((e) => e.kind === 'token');
    expect(tokenEvents.slice(0, k + 1).map((e) => e.text).join('')).toBe(ref.text.slice(0, boundary - 2));
    // Decoding stopped at the token that completed the stop string; usage counts the tokens whose text is returned.
    expect(r.generated).toBe(k + 2);
    const starts = ref.pieces.map((_, i) => ref.pieces.slice(0, i).join('').length);
    const returned = starts.filter((at) => at < boundary - 2).length;
    expect(returned).toBe(ref.pieces[k].length > 2 ? k + 1 : k);
    expect(r.tokens).toEqual(ref.tokens.slice(0, returned));
  });

  test('a partial match that never completes is held back, then sent: the stream still equals the text', async () => {
    const ref = await reference(7);
    const k = ref.pieces.findIndex((p) => p.length >= 2);
    const head = ref.pieces.slice(0, k + 1).join('');
    const stop = head.slice(-2) + '\u0001never';
    const { results, events } = await run([prompt(7)], [{ maxTokens: 16, stopIds: [], stop: [stop] }]);
    expect(results[0].finish).toBe('length');
    expect(results[0].text).toBe(ref.text);
    expect(results[0].tokens).toEqual(ref.tokens);
    expect(streamed(events)).toBe(ref.text);
    expect(events.filter((e) => e.kind === 'token')[k].text).toBe(ref.pieces[k].slice(0, -2));
  });

  test('a stop string in the first token returns nothing; a stop id ends the row without it', async () => {
    const ref = await reference(8);
    const first = await run([prompt(8)], [{ maxTokens: 16, stopIds: [], stop: [ref.pieces[0]] }]);
    expect(first.results[0]).toMatchObject({ text: '', tokens: [], finish: 'stop', generated: 1 });
    expect(streamed(first.events)).toBe('');
    const byId = await run([prompt(8)], [{ maxTokens: 16, stopIds: [ref.tokens[3]] }]);
    const cut = ref.tokens.indexOf(ref.tokens[3]);
    expect(byId.results[0].tokens).toEqual(ref.tokens.slice(0, cut));
    expect(byId.results[0].finish).toBe('stop');
    const none = await run([prompt(8)], [{ maxTokens: 0 }]);
    expect(none.results[0]).toMatchObject({ text: '', tokens: [], finish: 'length' });
  });
});
