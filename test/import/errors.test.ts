import { spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PYTHON, ROOT } from '../helpers/fixtures';
import { TINY } from '../helpers/model';

/**
 * tools/model/import_hf.py on small checkpoints this test writes (safetensors written here, HF tensor names,
 * models/tiny-random's tokenizer): bad input is refused with a message naming the file or field, and nothing is left
 * where the model would have gone. A good checkpoint imports, so the refusals are not failures of some other kind.
 */
const IMPORT = join(ROOT, 'tools', 'model', 'import_hf.py');

type Tensors = Record<string, { shape: number[]; data: Float32Array }>;

/** A safetensors file: 8-byte little-endian header length, JSON header, raw little-endian F32 data. */
function writeSafetensors(file: string, tensors: Tensors): void {
  const header: Record<string, unknown> = { __metadata__: { format: 'pt' } };
  const blobs: Buffer[] = [];
  let off = 0;
  for (const name of Object.keys(tensors).sort()) {
    const { shape, data } = tensors[name];
    const b = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
    header[name] = { dtype: 'F32', shape, data_offsets: [off, off + b.length] };
    blobs.push(b);
    off += b.length;
  }
  const json = Buffer.from(JSON.stringify(header));
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(json.length));
  writeFileSync(file, Buffer.concat([len, json, ...blobs]));
}

const VOCAB = 227; // models/tiny-random/tokenizer.json
const BASE = {
  architectures: ['LlamaForCausalLM'],
  model_type: 'llama',
  vocab_size: VOCAB,
  hidden_size: 8,
  num_hidden_layers: 1,
  num_attention_heads: 2,
  num_key_value_heads: 1,
  intermediate_size: 16,
  hidden_act: 'silu',
  max_position_embeddings: 64,
  rms_norm_eps: 1e-5,
  rope_theta: 10000,
  bos_token_id: 1,
  eos_token_id: 2,
  tie_word_embeddings: false,
};

function tensors(cfg: typeof BASE): Tensors {
  let s = 7;
  const rand = (n: number) => Float32Array.from({ length: n }, () => ((s = (s * 1103515245 + 12345) % 2 ** 31) / 2 ** 31 - 0.5) * 0.1);
  const d = cfg.hidden_size;
  const hd = d / cfg.num_attention_heads;
  const t: Tensors = {};
  const add = (name: string, shape: number[]) => (t[name] = { shape, data: rand(shape.reduce((a, b) => a * b, 1)) });
  add('model.embed_tokens.weight', [cfg.vocab_size, d]);
  add('model.norm.weight', [d]);
  add('lm_head.weight', [cfg.vocab_size, d]);
  for (let i = 0; i < cfg.num_hidden_layers; i++) {
    const p = `model.layers.${i}.`;
    add(p + 'self_attn.q_proj.weight', [cfg.num_attention_heads * hd, d]);
    add(p + 'self_attn.k_proj.weight', [cfg.num_key_value_heads * hd, d]);
    add(p + 'self_attn.v_proj.weight', [cfg.num_key_value_heads * hd, d]);
    add(p + 'self_attn.o_proj.weight', [d, cfg.num_attention_heads * hd]);
    add(p + 'mlp.gate_proj.weight', [cfg.intermediate_size, d]);
    add(p + 'mlp.up_proj.weight', [cfg.intermediate_size, d]);
    add(p + 'mlp.down_proj.weight', [d, cfg.intermediate_size]);
    add(p + 'input_layernorm.weight', [d]);
    add(p + 'post_attention_layernorm.weight', [d]);
  }
  return t;
}

let work: string;
beforeAll(() => {
  work = mkdtempSync(join(tmpdir(), 'epic-import-'));
});
afterAll(() => rmSync(work, { recursive: true, force: true }));

let n = 0;
/** A checkpoint folder: config (BASE with overrides), tokenizer files, one model.safetensors; `edit` may damage it. */
function checkpoint(overrides: Record<string, unknown> = {}, edit?: (dir: string, t: Tensors) => void): string {
  const dir = join(work, `ckpt-${++n}`);
  mkdirSync(dir);
  const cfg = { ...BASE, ...overrides };
  writeFileSync(join(dir, 'config.json'), JSON.stringify(cfg, null, 2));
  copyFileSync(join(TINY, 'tokenizer.json'), join(dir, 'tokenizer.json'));
  copyFileSync(join(TINY, 'tokenizer_config.json'), join(dir, 'tokenizer_config.json'));
  const t = tensors(cfg);
  if (edit) edit(dir, t);
  else writeSafetensors(join(dir, 'model.safetensors'), t);
  return dir;
}

/** Runs the importer into a fresh, empty models/ folder; returns its output and what the folder holds after. */
function runImport(src: string, ...args: string[]): { status: number | null; stderr: string; left: string[]; out: string } {
  const models = join(work, `models-${++n}`);
  mkdirSync(models);
  const out = join(models, 'imported');
  const r = spawnSync(PYTHON, [IMPORT, '--from', src, '--out', out, ...args], { cwd: ROOT, encoding: 'utf8' });
  const stderr = (r.stderr ?? '').split('\n').filter((l) => l.includes('import_hf: error')).join('\n') || r.stderr;
  return { status: r.status, stderr, left: readdirSync(models), out };
}

function expectRefused(r: ReturnType<typeof runImport>, ...mentions: string[]): void {
  expect(r.status).toBe(1);
  for (const m of mentions) expect(r.stderr).toContain(m);
  expect(r.left).toEqual([]); // no output, no temporary folder
}

test('a good checkpoint imports: graphs, config with the epic block, tokenizer, references', () => {
  const src = checkpoint();
  const r = runImport(src, '--name', 'tiny-hf');
  expect(r.status).toBe(0);
  expect(r.left).toEqual(['imported']);
  for (const f of ['model.onnx', 'model_epic.onnx', 'layers/layer_0.onnx', 'layers/kv_0.onnx', 'config.json', 'tokenizer.json',
    'tokenizer_config.json', 'generation_config.json', 'reference.json', 'reference_logits.bin']) {
    expect(existsSync(join(r.out, f))).toBe(true);
  }
  const cfg = JSON.parse(readFileSync(join(r.out, 'config.json'), 'utf8'));
  expect(cfg._name_or_path).toBe('tiny-hf');
  expect(cfg.epic.graphs.primitive).toBe('model_epic.onnx');
  expect(JSON.parse(readFileSync(join(r.out, 'generation_config.json'), 'utf8'))).toMatchObject({ bos_token_id: 1, eos_token_id: 2 });
}, 120_000);

test('--stock-only writes model.onnx and a config without the epic block', () => {
  const r = runImport(checkpoint(), '--stock-only');
  expect(r.status).toBe(0);
  expect(existsSync(join(r.out, 'model.onnx'))).toBe(true);
  expect(existsSync(join(r.out, 'model_epic.onnx'))).toBe(false);
  expect(existsSync(join(r.out, 'layers'))).toBe(false);
  expect(JSON.parse(readFileSync(join(r.out, 'config.json'), 'utf8')).epic).toBeUndefined();
}, 120_000);

describe('unsupported config features are refused naming the field', () => {
  test('an active sliding window (Mistral)', () => {
    expectRefused(runImport(checkpoint({ architectures: ['MistralForCausalLM'], model_type: 'mistral', sliding_window: 16 })),
      'config.json', 'sliding_window');
  });
  test('use_sliding_window (Qwen2)', () => {
    expectRefused(runImport(checkpoint({ architectures: ['Qwen2ForCausalLM'], use_sliding_window: true, sliding_window: 16 })),
      'config.json', 'use_sliding_window');
  });
  test('rope_scaling type yarn', () => {
    expectRefused(runImport(checkpoint({ rope_scaling: { rope_type: 'yarn', factor: 4, original_max_position_embeddings: 32 } })),
      'config.json', 'rope_scaling', 'yarn');
  });
  test('num_experts (MoE)', () => {
    expectRefused(runImport(checkpoint({ num_experts: 4, num_experts_per_tok: 2 })), 'config.json', 'num_experts');
  });
  test('an architecture it does not know', () => {
    expectRefused(runImport(checkpoint({ architectures: ['GPT2LMHeadModel'] })), 'config.json', 'architectures', 'GPT2LMHeadModel');
  });
  test('hidden_act other than silu', () => {
    expectRefused(runImport(checkpoint({ hidden_act: 'gelu' })), 'config.json', 'hidden_act');
  });
});

describe('bad weights are refused naming the file or tensor', () => {
  test('a missing shard', () => {
    const src = checkpoint({}, (dir, t) => {
      const names = Object.keys(t).sort();
      const first = Object.fromEntries(names.slice(0, 4).map((k) => [k, t[k]]));
      writeSafetensors(join(dir, 'model-00001-of-00002.safetensors'), first);
      const weightMap = Object.fromEntries(names.map((k, i) => [k, i < 4 ? 'model-00001-of-00002.safetensors' : 'model-00002-of-00002.safetensors']));
      writeFileSync(join(dir, 'model.safetensors.index.json'), JSON.stringify({ metadata: {}, weight_map: weightMap }));
    });
    expectRefused(runImport(src), 'model-00002-of-00002.safetensors', 'missing shard');
  });
  test('a truncated safetensors file', () => {
    const src = checkpoint({}, (dir, t) => {
      const file = join(dir, 'model.safetensors');
      writeSafetensors(file, t);
      truncateSync(file, readFileSync(file).length - 100);
    });
    expectRefused(runImport(src), 'model.safetensors', 'truncated');
  });
  test('a header length past the end of the file', () => {
    const src = checkpoint({}, (dir) => {
      const b = Buffer.alloc(64);
      b.writeBigUInt64LE(10_000n);
      writeFileSync(join(dir, 'model.safetensors'), b);
    });
    expectRefused(runImport(src), 'model.safetensors', 'truncated', 'header length');
  });
  test('a missing tensor', () => {
    const src = checkpoint({}, (dir, t) => {
      delete t['model.layers.0.mlp.up_proj.weight'];
      writeSafetensors(join(dir, 'model.safetensors'), t);
    });
    expectRefused(runImport(src), 'model.layers.0.mlp.up_proj.weight', 'missing tensor');
  });
  test('a tensor of the wrong shape', () => {
    const src = checkpoint({}, (dir, t) => {
      t['model.layers.0.self_attn.k_proj.weight'] = { shape: [8, 8], data: new Float32Array(64) };
      writeSafetensors(join(dir, 'model.safetensors'), t);
    });
    expectRefused(runImport(src), 'model.layers.0.self_attn.k_proj.weight', '[4, 8]');
  });
  test('an extra tensor', () => {
    const src = checkpoint({}, (dir, t) => {
      t['model.layers.0.self_attn.q_norm.weight'] = { shape: [4], data: new Float32Array(4) };
      writeSafetensors(join(dir, 'model.safetensors'), t);
    });
    expectRefused(runImport(src), 'model.layers.0.self_attn.q_norm.weight', 'unexpected tensor');
  });
});

test('a tokenizer whose vocabulary does not fit the config is refused naming tokenizer.json', () => {
  // vocab_size 100, but the tokenizer has ids up to 226 (the tensors follow the config, so only the tokenizer is wrong)
  expectRefused(runImport(checkpoint({ vocab_size: 100 })), 'tokenizer.json', 'vocab_size is 100');
});

test('safetensors_io reads F32, F16 and BF16 (little-endian, bf16 widened into float32 bits)', () => {
  const dir = join(work, 'dtypes');
  mkdirSync(dir);
  // 1.5, -2, 0.099975586 (f16 0x2E66), 3.140625 (bf16 0x4049)
  const f32 = Buffer.from(new Float32Array([1.5, -2]).buffer);
  const f16 = Buffer.from(new Uint16Array([0x3e00, 0xc000, 0x2e66]).buffer);
  const bf16 = Buffer.from(new Uint16Array([0x3fc0, 0xc000, 0x4049]).buffer);
  const header = {
    a: { dtype: 'F32', shape: [2], data_offsets: [0, 8] },
    b: { dtype: 'F16', shape: [3], data_offsets: [8, 14] },
    c: { dtype: 'BF16', shape: [1, 3], data_offsets: [14, 20] },
  };
  const json = Buffer.from(JSON.stringify(header));
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(json.length));
  writeFileSync(join(dir, 'model.safetensors'), Buffer.concat([len, json, f32, f16, bf16]));
  const code =
    'import sys, json; sys.path.insert(0, "tools/model"); from safetensors_io import read_weights; ' +
    `w = read_weights(${JSON.stringify(dir)}); print(json.dumps({k: [str(v.dtype), list(v.shape), v.reshape(-1).tolist()] for k, v in w.items()}))`;
  const r = spawnSync(PYTHON, ['-c', code], { cwd: ROOT, encoding: 'utf8' });
  expect(r.stderr).toBe('');
  expect(JSON.parse(r.stdout)).toEqual({
    a: ['float32', [2], [1.5, -2]],
    b: ['float32', [3], [1.5, -2, 0.0999755859375]],
    c: ['float32', [1, 3], [1.5, -2, 3.140625]],
  });
});
