import { copyFileSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Engine, loadModelConfig, ModelLoadError } from '../../shared/engine';
import { compileSource, link } from '../../shared/linking';
import { fixture } from '../helpers/fixtures';
import { maxAbsDiff, randomTokens } from '../helpers/model';

/**
 * An onnx-community export as it is laid out: config.json and the tokenizer files at the top, the graphs under onnx/
 * (model.onnx and its variants beside it, such as model_fp16.onnx). MODEL_DIR alone serves onnx/model.onnx;
 * MODEL_FILE (EngineOptions.graphFile) picks a variant. Built from the llama3-style fixture's stock and float16 graphs.
 */
describe('an onnx-community folder layout', () => {
  let dir: string;
  beforeAll(() => {
    const stock = fixture('llama3-style-stock');
    const fp16 = fixture('llama3-style-fp16');
    dir = mkdtempSync(join(tmpdir(), 'epic-onnx-community-'));
    mkdirSync(join(dir, 'onnx'));
    for (const f of ['config.json', 'tokenizer.json', 'tokenizer_config.json', 'generation_config.json']) copyFileSync(join(stock, f), join(dir, f));
    copyFileSync(join(stock, 'model.onnx'), join(dir, 'onnx', 'model.onnx'));
    copyFileSync(join(fp16, 'model.onnx'), join(dir, 'onnx', 'model_fp16.onnx'));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  test('the folder alone serves onnx/model.onnx; graphFile picks onnx/model_fp16.onnx', async () => {
    expect(loadModelConfig(dir).graphs).toEqual({ stock: 'onnx/model.onnx' });
    expect(loadModelConfig(dir, undefined, { graphFile: 'onnx/model_fp16.onnx' }).graphs).toEqual({ stock: 'onnx/model_fp16.onnx' });
    const f32 = await Engine.load(dir);
    const f16 = await Engine.load(dir, { graphFile: 'onnx/model_fp16.onnx' });
    const imported = await Engine.load(fixture('llama3-style'));
    expect([f32.capabilities.kvDtype, f16.capabilities.kvDtype, f32.capabilities.perLayer]).toEqual(['float32', 'float16', false]);
    const V = f32.config.vocabSize;
    const input = { prefix: f32.tokenizer.promptPrefix, chunks: [randomTokens(24, 1, 5, V), randomTokens(20, 2, 5, V)], question: randomTokens(6, 3, 5, V) };
    const mode = { mode: 'attnlink', k: 4 } as const;
    const a = await link({ engine: f32, source: compileSource(f32) }, input, mode);
    const b = await link({ engine: imported, source: compileSource(imported) }, input, mode);
    const c = await link({ engine: f16, source: compileSource(f16) }, input, mode);
    // The same weights: the export's fp32 graph gives the imported primitive graph's logits; the fp16-KV one is close.
    expect(maxAbsDiff(a.logits, b.logits)).toBeLessThan(1e-4);
    expect(maxAbsDiff(c.logits, b.logits)).toBeLessThan(5e-3);
    for (const l of [a, b, c]) l.cache.release();
  });

  test('a MODEL_FILE that is not there is a load error naming it', async () => {
    await expect(Engine.load(dir, { graphFile: 'onnx/model_q4f16.onnx' })).rejects.toThrow(ModelLoadError);
    await expect(Engine.load(dir, { graphFile: 'onnx/model_q4f16.onnx' })).rejects.toThrow(/onnx\/model_q4f16\.onnx/);
  });
});
