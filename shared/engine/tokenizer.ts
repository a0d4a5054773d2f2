import { existsSync, readFileSync } from 'node:fs';
import { Tokenizer } from '@huggingface/tokenizers';
import { ModelLoadError } from './errors';
import type { ModelConfig } from './config';
import { loadGenerationConfig } from './generation';
import { readJson as readJsonFile } from './json';

const readJson = (file: string, what: string) => readJsonFile(file, what) as Record<string, unknown>;

/** A tokenizer.json loaded with @huggingface/tokenizers, checked against the model's config. */
export interface TextTokenizer {
  /** Token ids of text, without special tokens (the engine adds BOS where a prompt starts). */
  encode(text: string): number[];
  decode(ids: ArrayLike<number>): string;
  readonly vocabSize: number;
  /**
   * Most characters (UTF-16 units) one token stands for, the longest vocabulary entry: a text of n characters has
   * about n / maxTokenChars tokens at least, so an over-long text can be refused without tokenizing it.
   */
  readonly maxTokenChars?: number;
  /**
   * Tokens a prompt starts with, as the model's tokenizer adds them: `[bos]` when tokenizer_config.json's
   * `add_bos_token` is true or tokenizer.json's post-processor (TemplateProcessing) puts BOS before the text (Llama
   * 3.x), none when it says false or the post-processor adds nothing (Qwen); `[config.bos_token_id]` for a tokenizer
   * that says neither (the project's own models, which always had BOS first).
   */
  readonly promptPrefix: number[];
  /** Token ids that end generation: generation_config.json's eos_token_id merged with config.json's. */
  readonly stopIds: number[];
  /** The model's chat template (tokenizer_config.json `chat_template`, or chat_template.jinja), if it has one. */
  readonly chatTemplate?: string;
  /** Special tokens' text, for chat templates (`bos_token`, `eos_token`). */
  readonly bosToken?: string;
  readonly eosToken?: string;
}

export function loadTokenizer(config: ModelConfig): TextTokenizer {
  const file = `${config.dir}/tokenizer.json`;
  const json = readJson(file, 'tokenizer');
  const cfgFile = `${config.dir}/tokenizer_config.json`;
  let tcfg: Record<string, unknown> = {};
  try {
    tcfg = readJson(cfgFile, 'tokenizer config');
  } catch (e) {
    // tokenizer_config.json is optional; a present but broken one is an error.
    if ((e as Error).message.includes('not valid JSON')) throw e;
  }
  let tok: Tokenizer;
  try {
    tok = new Tokenizer(json, tcfg);
  } catch (e) {
    throw new ModelLoadError(`tokenizer ${file} could not be loaded: ${(e as Error).message}`, file);
  }
  const model = json.model as { vocab?: Record<string, number> | unknown[] } | undefined;
  const vocab = model?.vocab;
  const added = (json.added_tokens as { id: number }[] | undefined) ?? [];
  let maxId = -1;
  if (Array.isArray(vocab)) maxId = vocab.length - 1;
  else if (vocab && typeof vocab === 'object') for (const id of Object.values(vocab)) maxId = Math.max(maxId, id);
  for (const t of added) maxId = Math.max(maxId, t.id);
  const vocabSize = maxId + 1;
  let maxTokenChars = 1;
  const entries = Array.isArray(vocab) ? vocab.map((v) => (Array.isArray(v) ? v[0] : v)) : vocab && typeof vocab === 'object' ? Object.keys(vocab) : [];
  for (const t of [...entries, ...added.map((a) => (a as { content?: unknown }).content)]) {
    if (typeof t === 'string') maxTokenChars = Math.max(maxTokenChars, t.length);
  }
  if (vocabSize > config.vocabSize) {
    throw new ModelLoadError(
      `tokenizer ${file} has token ids up to ${maxId} but config.json says vocab_size ${config.vocabSize}: ` +
        `the tokenizer does not belong to this model`,
      file,
    );
  }
  for (const id of [config.bosTokenId, ...config.eosTokenIds]) {
    if (id >= vocabSize) {
      throw new ModelLoadError(`config.json special token id ${id} is outside tokenizer ${file} (size ${vocabSize})`, file);
    }
  }
  const special = specialTokens(config, json, tcfg, tok);
  const paragraphSafe = splitsAtParagraphs(tok);
  return {
    vocabSize,
    maxTokenChars,
    ...special,
    encode: (text: string) => encodeLong(tok, text, paragraphSafe),
    // The library refuses an empty list; no tokens (max_tokens 0, or a stop token first) is the empty text. No
    // clean-up of spaces (Llama 3.1's config asks for it): it rewrites " ." to "." across token boundaries, so the
    // text of a sequence would not be the concatenation of its tokens' texts, and streamed text could not equal the
    // reply (vLLM's detokenizer does not clean up either).
    decode: (ids: ArrayLike<number>) => (ids.length ? tok.decode(Array.from(ids), { skip_special_tokens: true, clean_up_tokenization_spaces: false }) : ''),
  };
}

/** A special token named in tokenizer_config.json: a string or an AddedToken object `{content: …}`. */
function tokenText(v: unknown): string | undefined {
  if (typeof v === 'string') return v;
  if (v && typeof v === 'object' && typeof (v as { content?: unknown }).content === 'string') return (v as { content: string }).content;
  return undefined;
}

/**
 * The special tokens a post-processor puts before the text (`$A`) of a single sequence: TemplateProcessing's head
 * (Llama 3.x: <|begin_of_text|>), Bert/Roberta's CLS; undefined for a processor that adds none (ByteLevel).
 */
function templateHead(pp: unknown): string[] | undefined {
  if (!pp || typeof pp !== 'object') return undefined;
  const o = pp as { type?: string; processors?: unknown[]; single?: unknown[] };
  if (o.type === 'Sequence') {
    for (const p of o.processors ?? []) {
      const h = templateHead(p);
      if (h) return h;
    }
    return undefined;
  }
  if (o.type === 'TemplateProcessing' && Array.isArray(o.single)) {
    const head: string[] = [];
    for (const piece of o.single as { SpecialToken?: { id: string }; Sequence?: unknown }[]) {
      if (piece.Sequence) break;
      if (piece.SpecialToken) head.push(piece.SpecialToken.id);
    }
    return head;
  }
  if (o.type === 'BertProcessing' || o.type === 'RobertaProcessing') {
    const cls = (o as { cls?: [string, number] }).cls;
    return cls ? [cls[0]] : [];
  }
  return undefined;
}

function chatTemplateOf(config: ModelConfig, tcfg: Record<string, unknown>): string | undefined {
  const t = tcfg.chat_template;
  if (typeof t === 'string') return t;
  if (Array.isArray(t)) {
    // A list of named templates (transformers): the one called 'default'.
    const named = t as { name?: string; template?: string }[];
    return (named.find((x) => x.name === 'default') ?? named[0])?.template;
  }
  const file = `${config.dir}/chat_template.jinja`;
  if (existsSync(file)) return readFileSync(file, 'utf8');
  return undefined;
}

/** Special tokens, the prompt's prefix, stop ids and the chat template (see TextTokenizer). */
function specialTokens(config: ModelConfig, json: Record<string, unknown>, tcfg: Record<string, unknown>, tok: Tokenizer) {
  const idOf = (text: string | undefined): number | undefined => {
    if (text === undefined) return undefined;
    const added = (json.added_tokens as { id: number; content: string }[] | undefined)?.find((a) => a.content === text);
    if (added) return added.id;
    const id = tok.token_to_id(text);
    return id ?? undefined;
  };
  const bosToken = tokenText(tcfg.bos_token);
  const eosToken = tokenText(tcfg.eos_token);
  const bosId = idOf(bosToken) ?? config.bosTokenId;
  let promptPrefix: number[];
  if (typeof tcfg.add_bos_token === 'boolean') promptPrefix = tcfg.add_bos_token ? [bosId] : [];
  else {
    // No post-processor at all: the project's own tokenizers, whose models were trained with BOS first. A
    // post-processor that adds nothing before the text (ByteLevel alone: Qwen): no BOS.
    const head = json.post_processor ? (templateHead(json.post_processor) ?? []) : undefined;
    if (head === undefined) promptPrefix = [config.bosTokenId];
    else promptPrefix = head.map((t) => idOf(t)).filter((id): id is number => id !== undefined);
  }
  const stop = new Set<number>(config.eosTokenIds);
  for (const id of loadGenerationConfig(config.dir, { sampling: false }).eosTokenIds) stop.add(id);
  const eosId = idOf(eosToken);
  if (eosId !== undefined) stop.add(eosId);
  return { promptPrefix, stopIds: [...stop], chatTemplate: chatTemplateOf(config, tcfg), bosToken, eosToken };
}

const encodeIds = (tok: Tokenizer, text: string): number[] => tok.encode(text, { add_special_tokens: false }).ids;

/**
 * Whether encoding a text paragraph by paragraph gives the same ids as encoding it whole: true when no token spans a
 * blank line followed by text (byte-level BPE's pre-tokenizer regexes end a token at a newline run; WordPiece splits
 * on whitespace), false for tokenizers that mark the start of a text (SentencePiece's "▁" prepended to the first
 * word). Checked on samples at load.
 */
function splitsAtParagraphs(tok: Tokenizer): boolean {
  const samples = [['One two.\n\n', 'Three four'], ['a\n\n', ' b'], ['x \n\n', 'Hello world\n\n'], ['東京\n\n', '😀 ok']];
  try {
    return samples.every(([a, b]) => {
      const whole = encodeIds(tok, a + b);
      const parts = [...encodeIds(tok, a), ...encodeIds(tok, b)];
      return whole.length === parts.length && whole.every((id, i) => id === parts[i]);
    });
  } catch {
    return false;
  }
}

/** Texts past this many characters are encoded paragraph by paragraph (when that gives the same ids). */
const LONG_TEXT = 16_384;

/**
 * Encode a text; a long one paragraph by paragraph (split after a blank line, before text), which gives the same ids
 * (splitsAtParagraphs) in less time: the library's cost on one large string is mostly garbage collection of its
 * whole-text intermediate arrays (measured here, a 1 MiB document: ~1.0 s whole, ~0.55 s split).
 */
function encodeLong(tok: Tokenizer, text: string, paragraphSafe: boolean): number[] {
  if (!paragraphSafe || text.length <= LONG_TEXT) return encodeIds(tok, text);
  const out: number[] = [];
  let part = '';
  for (const p of text.split(/(?<=\n\n)(?=\S)/)) {
    part += p;
    if (part.length < 4096) continue;
    for (const id of encodeIds(tok, part)) out.push(id);
    part = '';
  }
  if (part) for (const id of encodeIds(tok, part)) out.push(id);
  return out;
}
