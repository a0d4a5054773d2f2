import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ContextLengthError, Engine, EngineInputError, ModelLoadError } from '../../shared/engine';
import { TINY, copyModel } from '../helpers/model';

function editJson(file: string, edit: (j: Record<string, unknown>) => void) {
  const j = JSON.parse(readFileSync(file, 'utf8'));
  edit(j);
  writeFileSync(file, JSON.stringify(j));
}

async function loadError(dir: string, opts = {}): Promise<ModelLoadError> {
  try {
    await Engine.load(dir, opts);
  } catch (e) {
    expect(e).toBeInstanceOf(ModelLoadError);
    return e as ModelLoadError;
  }
  throw new Error('expected Engine.load to fail');
}

describe('bad models are refused with an error naming the file', () => {
  let m: ReturnType<typeof copyModel>;
  beforeEach(() => {
    m = copyModel(TINY);
  });
  afterEach(() => m.cleanup());

  test('missing model file', async () => {
    rmSync(join(m.dir, 'model_epic.onnx'));
    const e = await loadError(m.dir);
    expect(e.message).toContain('model_epic.onnx');
    expect(e.message).toMatch(/not found/);
  });

  test('corrupt model file', async () => {
    const f = join(m.dir, 'model.onnx');
    const bytes = readFileSync(f);
    writeFileSync(f, bytes.subarray(0, bytes.length >> 1));
    const e = await loadError(m.dir, { graph: 'stock' });
    expect(e.file).toBe(f);
    expect(e.message).toContain('could not be loaded by onnxruntime');
  });

  test('missing folder or config', async () => {
    const e = await loadError(join(m.dir, 'nope'));
    expect(e.message).toContain(join(m.dir, 'nope', 'config.json'));
  });

  test('config with a wrong field', async () => {
    editJson(join(m.dir, 'config.json'), (j) => {
      j.num_hidden_layers = 'two';
    });
    const e = await loadError(m.dir);
    expect(e.message).toContain('num_hidden_layers');
  });

  test('tokenizer that does not belong to the model (vocab larger than the config)', async () => {
    editJson(join(m.dir, 'config.json'), (j) => {
      j.vocab_size = 100;
    });
    const e = await loadError(m.dir);
    expect(e.message).toContain('tokenizer.json');
    expect(e.message).toContain('vocab_size 100');
  });

  test('config whose layer count does not match the graph', async () => {
    editJson(join(m.dir, 'config.json'), (j) => {
      j.num_hidden_layers = 3;
    });
    const e = await loadError(m.dir);
    expect(e.message).toContain('model_epic.onnx');
    expect(e.message).toContain('3 layers');
  });

  test('RoPE that re-rotation cannot reproduce (wrong rope_theta) fails the self-check', async () => {
    editJson(join(m.dir, 'config.json'), (j) => {
      j.rope_theta = 500000;
    });
    const e = await loadError(m.dir);
    expect(e.message).toContain('RoPE self-check failed');
  });

  test('rope scaling the re-rotation cannot reproduce is refused', async () => {
    editJson(join(m.dir, 'config.json'), (j) => {
      j.rope_scaling = { rope_type: 'yarn', factor: 2 };
    });
    const e = await loadError(m.dir);
    expect(e.message).toContain('rope_scaling.rope_type "yarn" is not supported');
  });

  test('rope scaling the graph does not implement fails the self-check, naming it', async () => {
    editJson(join(m.dir, 'config.json'), (j) => {
      j.rope_scaling = { type: 'linear', factor: 2 };
    });
    const e = await loadError(m.dir);
    expect(e.message).toContain('RoPE self-check failed');
    expect(e.message).toContain('rope_scaling {"type":"linear","factor":2}');
  });
});

describe('bad input is refused with an error naming the limit', () => {
  let engine: Engine;
  beforeAll(async () => {
    engine = await Engine.load(TINY);
  });

  test('a prompt longer than the context', async () => {
    const n = engine.contextLength + 1;
    const prompt = Array.from({ length: n }, () => 5);
    await expect(engine.prefill([prompt])).rejects.toThrow(ContextLengthError);
    await expect(engine.prefill([prompt])).rejects.toThrow(`context length is ${engine.contextLength}`);
  });

  test('prompt plus max tokens past the context', async () => {
    const prompt = Array.from({ length: engine.contextLength - 2 }, () => 5);
    await expect(engine.prefill([prompt], 10)).rejects.toThrow(/needs 4104 positions but the model's context length is 4096/);
  });

  test('token ids outside the vocabulary, empty prompts, bad positions', async () => {
    await expect(engine.prefill([[1, engine.config.vocabSize]])).rejects.toThrow(EngineInputError);
    await expect(engine.prefill([[]])).rejects.toThrow('empty prompt');
    await expect(engine.compile([])).rejects.toThrow('empty chunk');
    const c = engine.newCache(1, 4);
    await expect(engine.forward(c, [{ tokens: [5], positions: [-1] }])).rejects.toThrow('position -1');
  });

  test('the stock graph refuses a call that needs position-masked attention', async () => {
    const stock = await Engine.load(TINY, { graph: 'stock', selfCheck: false });
    const c = stock.newCache(1, 8);
    await stock.forward(c, [{ tokens: [5, 6, 7], positions: [4, 5, 6] }]);
    await expect(stock.forward(c, [{ tokens: [8], positions: [2] }])).rejects.toThrow(/only the primitive graph/);
  });
});
