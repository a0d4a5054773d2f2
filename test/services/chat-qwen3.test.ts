import type { TextTokenizer } from '../../shared/engine';
import { chatPrompt } from '../../shared/engine/chat';
import { fixture } from '../helpers/fixtures';
import { completionStream, post } from '../helpers/sse';
import { startStack, type Stack } from '../helpers/stack';

/** A model whose tokenizer adds no BOS (Qwen3): prompts start with the text, or with the chat template's own head. */
describe('a model without BOS (qwen3-style)', () => {
  let s: Stack;
  let tok: TextTokenizer;
  const DOC = 'Mira lives in Lisbon and works at the harbour. She keeps bees on the roof.';

  beforeAll(async () => {
    s = await startStack(fixture('qwen3-style'));
    tok = s.engine.tokenizer;
  }, 180_000);
  afterAll(async () => {
    await s?.close();
  });

  test('completions: no BOS before the prompt, nor before the documents; attnlink with k past the chunk equals full', async () => {
    expect(tok.promptPrefix).toEqual([]);
    const plain = await post(s.base, '/v1/completions', { prompt: 'Where does Mira live?', max_tokens: 3 });
    expect(plain.status).toBe(200);
    expect(plain.json.usage.prompt_tokens).toBe(tok.encode('Where does Mira live?').length);
    // Greedy: the fixture's generation_config.json would sample, with a seed of each request's own.
    const withDoc = { prompt: ' Where does Mira live?', documents: [{ text: DOC }], max_tokens: 4, ignore_eos: true, temperature: 0 };
    const full = await post(s.base, '/v1/completions', { ...withDoc, mode: 'full' });
    expect(full.status).toBe(200);
    expect(full.json.usage.prompt_tokens).toBe(tok.encode(DOC).length + tok.encode(' Where does Mira live?').length);
    // k past the chunk's length: every token recomputed in place, so attnlink must give full's answer.
    const linked = await post(s.base, '/v1/completions', { ...withDoc, mode: 'attnlink', k: 64 });
    expect(linked.json.choices[0].text).toBe(full.json.choices[0].text);
  });

  test('chat: the template writes <|im_start|>system …; documents between its head and the rest; streamed = plain', async () => {
    const messages = [{ role: 'user', content: 'Where does Mira live?' }];
    const p = chatPrompt(tok, messages, true);
    expect(p.prefix).toBe('<|im_start|>system\n');
    const body = { messages, documents: [{ text: DOC }], max_tokens: 6, temperature: 0.8, seed: 3 };
    const plain = await post(s.base, '/v1/chat/completions', body);
    expect(plain.status).toBe(200);
    expect(plain.json.usage.prompt_tokens).toBe(tok.encode(p.prefix!).length + tok.encode(DOC).length + tok.encode(p.question).length);
    const st = completionStream((await post(s.base, '/v1/chat/completions', { ...body, stream: true })).events!);
    expect(st.pieces.join('')).toBe(plain.json.choices[0].message.content);
  });
});
