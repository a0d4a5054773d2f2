/**
 * generation_config.json (shared/engine/generation.ts): stop ids, and sampling defaults only where the file says
 * do_sample, with the keys it gives; how a request's fields and those defaults combine (shared/serving/request.ts).
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadGenerationConfig, ModelLoadError } from '../../shared/engine';
import { samplingFrom } from '../../shared/serving/request';
import { fixture } from '../helpers/fixtures';

const dirs: string[] = [];
function withGen(gen: unknown): string {
  const dir = mkdtempSync(join(tmpdir(), 'epic-gen-'));
  dirs.push(dir);
  writeFileSync(join(dir, 'generation_config.json'), typeof gen === 'string' ? gen : JSON.stringify(gen));
  return dir;
}
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

test("the real models' files: Qwen3 and Llama 3.1 Instruct sample by default", () => {
  expect(loadGenerationConfig(fixture('hf-qwen3'))).toEqual({ eosTokenIds: [151645, 151643], sampling: { temperature: 0.6, topP: 0.95, topK: 20 } });
  expect(loadGenerationConfig(fixture('hf-llama3'))).toEqual({ eosTokenIds: [128001, 128008, 128009], sampling: { temperature: 0.6, topP: 0.9 } });
});

test('no file, or do_sample not true: stop ids only, no sampling defaults (transformers decodes greedily then)', () => {
  expect(loadGenerationConfig(mkdtempSync(join(tmpdir(), 'epic-gen-none-')))).toEqual({ eosTokenIds: [] });
  expect(loadGenerationConfig(withGen({ eos_token_id: 2, temperature: 0.7 }))).toEqual({ eosTokenIds: [2] });
  expect(loadGenerationConfig(withGen({ do_sample: false, temperature: 0.7, top_k: 5 }))).toEqual({ eosTokenIds: [] });
  // do_sample alone: no values are made up.
  expect(loadGenerationConfig(withGen({ do_sample: true, top_p: null }))).toEqual({ eosTokenIds: [], sampling: {} });
});

test('a broken file is refused, naming the file and the field', () => {
  const bad = (gen: unknown, field: RegExp) => {
    const dir = withGen(gen);
    expect(() => loadGenerationConfig(dir)).toThrow(ModelLoadError);
    expect(() => loadGenerationConfig(dir)).toThrow(field);
  };
  bad('{ not json', /generation config is not valid JSON: .*generation_config\.json/);
  bad({ eos_token_id: [1, -2] }, /generation_config\.json is invalid: eos_token_id/);
  bad({ do_sample: true, top_p: 0 }, /top_p/);
  bad({ do_sample: true, temperature: 3 }, /temperature above 2/);
});

test('sampling keys are checked only where they are used: do_sample true, and sampling wanted', () => {
  // transformers ignores them without do_sample, and so does loading: the model still loads.
  expect(loadGenerationConfig(withGen({ eos_token_id: 2, do_sample: false, temperature: 3, top_p: 0 }))).toEqual({ eosTokenIds: [2] });
  expect(loadGenerationConfig(withGen({ eos_token_id: 2, do_sample: null, temperature: 3 }))).toEqual({ eosTokenIds: [2] });
  // The tokenizer (stop ids only) and GENERATION_CONFIG=none read eos_token_id alone.
  const odd = withGen({ eos_token_id: [2, 5], do_sample: true, temperature: 3 });
  expect(loadGenerationConfig(odd, { sampling: false })).toEqual({ eosTokenIds: [2, 5] });
  expect(() => loadGenerationConfig(odd)).toThrow(/GENERATION_CONFIG=none/);
  expect(() => loadGenerationConfig(withGen({ eos_token_id: 'x' }), { sampling: false })).toThrow(/eos_token_id/);
});

test("a request's fields win; absent or null ones come from the defaults; nothing at all is greedy", () => {
  const d = { temperature: 0.6, topP: 0.95, topK: 20 };
  expect(samplingFrom({}, d)).toEqual(d);
  expect(samplingFrom({ temperature: null, top_p: null, top_k: null }, d)).toEqual(d);
  expect(samplingFrom({ temperature: 0, top_k: 0, seed: 9 }, d)).toEqual({ temperature: 0, topP: 0.95, topK: 0, seed: 9 });
  expect(samplingFrom({ temperature: 1 })).toEqual({ temperature: 1 });
  expect(samplingFrom({})).toBeUndefined();
  expect(samplingFrom({}, {})).toBeUndefined();
});
