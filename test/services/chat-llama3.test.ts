import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { TextTokenizer } from '../../shared/engine';
import { chatPrompt } from '../../shared/engine/chat';
import { fixture } from '../helpers/fixtures';
import { startStack, type Stack } from '../helpers/stack';
import { completionStream, post } from '../helpers/sse';

/**
 * Chat through the API with the llama3-style fixture (random weights, Llama 3.1's real tokenizer and chat template):
 * the template rendered, documents as chunks between its head and the rest, streaming equal to the plain reply byte
 * for byte on CJK and emoji, seeded sampling reproduced.
 */
describe('chat with a real chat template (llama3-style)', () => {
  let s: Stack;
  let tok: TextTokenizer;
  let docId: string;
  const DOC = 'Mira lives in Lisbon and works at the harbour. 東京の友達は毎年リスボンを訪れる。\n\nShe keeps bees 🐝 on the roof.';
  const messages = [
    { role: 'system', content: 'Answer from the documents.' },
    { role: 'user', content: 'Where does Mira live?' },
  ];

  beforeAll(async () => {
    s = await startStack(fixture('llama3-style'));
    tok = s.engine.tokenizer;
    const r = await post(s.base, '/v1/documents', { text: DOC });
    expect(r.status).toBeLessThan(300);
    docId = r.json.id;
    // Until the precompute worker has compiled every chunk into the store.
    for (let i = 0; ; i++) {
      const d = (await (await fetch(`${s.base}/v1/documents/${docId}`)).json()) as { warm_chunks: number; chunks: number };
      if (d.warm_chunks === d.chunks) break;
      if (i > 600) throw new Error('document never warm');
      await new Promise((res) => setTimeout(res, 50));
    }
  }, 180_000);
  afterAll(async () => {
    await s?.close();
  });

  const chat = (extra: object) => post(s.base, '/v1/chat/completions', { messages, documents: [docId], mode: 'attnlink', max_tokens: 12, ...extra });

  /** A chat stream's content pieces joined, its finish reason and usage. */
  const streamText = async (extra: object) => {
    const r = await chat({ ...extra, stream: true, stream_options: { include_usage: true } });
    expect(r.status).toBe(200);
    return completionStream(r.events!);
  };

  test('the template is rendered around the documents: prompt = template head + chunks + the rest; warm documents are cached', async () => {
    const p = chatPrompt(tok, messages, true);
    expect(p.prefix!.startsWith('<|begin_of_text|><|start_header_id|>system<|end_header_id|>')).toBe(true);
    const doc = (await (await fetch(`${s.base}/v1/documents/${docId}`)).json()) as { tokens: number };
    // Greedy (temperature 0), so the same request gives the same reply; without it the fixture's generation_config.json
    // samples (the last test).
    const plain = await chat({ temperature: 0 });
    expect(plain.status).toBe(200);
    // BOS comes from the template (once), the documents' tokens as stored, then the rest of the conversation.
    expect(plain.json.usage.prompt_tokens).toBe(tok.encode(p.prefix!).length + doc.tokens + tok.encode(p.question).length);
    expect(plain.json.usage.prompt_tokens_details.cached_tokens).toBeGreaterThan(0);
    const again = await chat({ temperature: 0 });
    expect(again.json.choices[0].message.content).toBe(plain.json.choices[0].message.content);
    expect(again.json.usage.prompt_tokens_details.cached_tokens).toBeGreaterThan(0);
    const st = await streamText({ temperature: 0 });
    expect(st.pieces.join('')).toBe(plain.json.choices[0].message.content);
    expect(st.usage.completion_tokens).toBe(plain.json.usage.completion_tokens);
    // Without documents: the whole rendered conversation, BOS once.
    const bare = await post(s.base, '/v1/chat/completions', { messages, max_tokens: 2 });
    expect(bare.json.usage.prompt_tokens).toBe(tok.encode(chatPrompt(tok, messages, false).question).length);
  });

  test('a streamed reply with CJK and emoji split across tokens equals the plain reply byte for byte', async () => {
    // Random weights rarely choose an emoji (25 of 128,256 tokens are one), so the reply is steered with logit_bias
    // toward the tokens of a few CJK characters and emoji, several of which are split into byte tokens (🎉 is three),
    // and sampled with a seed; seeds are tried until the reply holds CJK, an emoji and a character split across tokens.
    const pieces = ['🎉', '龘', '東京', ' 😀', '🐝'].flatMap((t) => tok.encode(t));
    const logit_bias = Object.fromEntries(pieces.map((id) => [String(id), 100]));
    let found: { seed: number; text: string } | undefined;
    for (let seed = 1; seed <= 40 && !found; seed++) {
      const r = await chat({ temperature: 1, seed, logit_bias, max_tokens: 24 });
      expect(r.status).toBe(200);
      const text: string = r.json.choices[0].message.content;
      // A character split across tokens: this seed's tokens, decoded one by one, hold a broken byte sequence.
      if (/\p{Script=Han}/u.test(text) && /\p{Extended_Pictographic}/u.test(text) && /🎉|龘|🐝/u.test(text)) found = { seed, text };
    }
    expect(found).toBeDefined();
    const st = await streamText({ temperature: 1, seed: found!.seed, logit_bias, max_tokens: 24 });
    // Byte for byte. A piece that had sent part of a character a later token completes would hold U+FFFD where the
    // reply has the character: the join would differ.
    expect(Buffer.from(st.pieces.join('')).equals(Buffer.from(found!.text))).toBe(true);
    console.log(`seed ${found!.seed}: ${JSON.stringify(found!.text)} in ${st.pieces.length} streamed pieces`);
  });

  test('a seeded sampled reply is reproduced exactly, plain and streamed', async () => {
    const a = await chat({ temperature: 1, top_p: 0.95, seed: 2024 });
    const b = await chat({ temperature: 1, top_p: 0.95, seed: 2024 });
    expect(a.status).toBe(200);
    expect(b.json.choices[0].message.content).toBe(a.json.choices[0].message.content);
    expect(b.json.usage.completion_tokens).toBe(a.json.usage.completion_tokens);
    const st = await streamText({ temperature: 1, top_p: 0.95, seed: 2024 });
    expect(st.pieces.join('')).toBe(a.json.choices[0].message.content);
    const other = await chat({ temperature: 1, top_p: 0.95, seed: 2025 });
    expect(other.json.choices[0].message.content).not.toBe(a.json.choices[0].message.content);
  });

  test("sampling a request leaves out comes from the model's generation_config.json (do_sample, temperature 0.6, top_p 0.9)", async () => {
    const gen = JSON.parse(readFileSync(join(s.engine.config.dir, 'generation_config.json'), 'utf8'));
    expect(gen).toMatchObject({ do_sample: true, temperature: 0.6, top_p: 0.9 });
    const text = (r: { status: number; json?: { choices: { message: { content: string } }[] } }) => {
      expect(r.status).toBe(200);
      return r.json!.choices[0].message.content;
    };
    const greedy = text(await chat({ temperature: 0 }));
    // Seeds 1..4 with the file's defaults, each equal to the same seed with those values sent; at least one differs
    // from greedy (random weights: a temperature-0.6 draw over 128,256 tokens rarely follows the argmax 12 times).
    let sampledOtherThanGreedy = 0;
    for (let seed = 1; seed <= 4; seed++) {
      const byDefault = text(await chat({ seed }));
      expect(byDefault).toBe(text(await chat({ seed, temperature: 0.6, top_p: 0.9 })));
      if (byDefault !== greedy) sampledOtherThanGreedy++;
    }
    expect(sampledOtherThanGreedy).toBeGreaterThan(0);
    // A field sent as null is left out too; a temperature sent wins over the file's.
    expect(text(await chat({ seed: 1, temperature: null, top_p: null }))).toBe(text(await chat({ seed: 1 })));
    expect(text(await chat({ seed: 1, temperature: 0 }))).toBe(greedy);
  });
});
