import { readFileSync } from 'node:fs';
import { Tokenizer } from '@huggingface/tokenizers';
import { ModelLoadError } from './errors';
import type { ModelConfig } from './config';

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
}

function readJson(file: string, what: string): Record<string, unknown> {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    throw new ModelLoadError(`${what} not found: ${file} (${(e as Error).message})`, file);
  }
  try {
    return JSON.parse(text) as Record<string, unknown>;
  } catch (e) {
    throw new ModelLoadError(`${what} is not valid JSON: ${file}: ${(e as Error).message}`, file);
  }
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
  return {
    vocabSize,
    maxTokenChars,
    encode: (text: string) => tok.encode(text, { add_special_tokens: false }).ids,
    // The library refuses an empty list; no tokens (max_tokens 0, or a stop token first) is the empty text.
    decode: (ids: ArrayLike<number>) => (ids.length ? tok.decode(Array.from(ids), { skip_special_tokens: true }) : ''),
  };
}
