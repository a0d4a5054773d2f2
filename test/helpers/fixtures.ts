import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

/**
 * The real-architecture, random-weight model fixtures (tools/model/fixtures.py): built, not committed, under
 * .cache/fixtures/, deterministic from a seed. `fixture(name)` gives a fixture's absolute path, building it (and what
 * it depends on) when it is missing or stale: its stamp file differs from the hash of tools/model/*.py. The build runs
 * synchronously, at most once per fixture per process; fixtures.py takes a lock, so parallel test files wait for one
 * another instead of building twice. A first build of everything takes a few minutes; later runs find them fresh.
 */
export type FixtureName =
  | 'hf-llama3'
  | 'hf-qwen3'
  | 'hf-qwen2'
  | 'llama3-style'
  | 'qwen3-style'
  | 'qwen2-style'
  | 'llama3-style-stock'
  | 'llama3-style-fp16'
  | 'llama3-style-gqa';

export const ROOT = join(__dirname, '..', '..');
export const FIXTURES = join(ROOT, '.cache', 'fixtures');
const TOOLS = join(ROOT, 'tools', 'model');
const SCRIPT = join(TOOLS, 'fixtures.py');
export const PYTHON = process.env.EPIC_PYTHON ?? '/usr/bin/python3';

/** sha256 over tools/model/*.py sorted by name: name, NUL, bytes, NUL each (fixtures.py's tools_hash). */
export function toolsHash(): string {
  const h = createHash('sha256');
  for (const f of readdirSync(TOOLS).filter((n) => n.endsWith('.py')).sort()) {
    h.update(f);
    h.update('\0');
    h.update(readFileSync(join(TOOLS, f)));
    h.update('\0');
  }
  return h.digest('hex');
}

function isFresh(dir: string, stamp: string): boolean {
  const file = join(dir, '.fixture-stamp');
  return existsSync(file) && readFileSync(file, 'utf8').trim() === stamp;
}

const checked = new Map<FixtureName, string>();

export function fixture(name: FixtureName): string {
  const known = checked.get(name);
  if (known) return known;
  const dir = join(FIXTURES, name);
  if (!isFresh(dir, toolsHash())) {
    const r = spawnSync(PYTHON, [SCRIPT, '--out', FIXTURES, '--only', name], {
      cwd: ROOT,
      encoding: 'utf8',
      maxBuffer: 64 * 1024 * 1024,
      env: { ...process.env, OMP_NUM_THREADS: process.env.OMP_NUM_THREADS ?? '2' },
    });
    if (r.status !== 0 || !isFresh(dir, toolsHash())) {
      throw new Error(
        `building fixture ${name} failed (${PYTHON} ${SCRIPT} --out ${FIXTURES} --only ${name}, exit ${r.status}` +
          `${r.error ? `, ${r.error.message}` : ''}):\n${(r.stderr ?? '').split('\n').filter((l) => !/Warning|^\s/.test(l)).slice(-20).join('\n')}`,
      );
    }
    const lines = (r.stdout ?? '').split('\n').filter((l) => l.startsWith('fixture '));
    if (lines.length) process.stderr.write(`${lines.join('\n')}\n`);
  }
  checked.set(name, dir);
  return dir;
}

export interface NumpySequence {
  name: string;
  ids: number[];
  shape: [number, number];
  logits: Float32Array;
}

/** numpy_reference.json + .bin beside an imported fixture: logits of an independent NumPy forward pass. */
export function readNumpyReference(dir: string): { sequences: NumpySequence[]; torchMaxAbsDiff: number } {
  const meta = JSON.parse(readFileSync(join(dir, 'numpy_reference.json'), 'utf8')) as {
    sequences: { name: string; ids: number[]; shape: [number, number]; offset: number }[];
    torch_max_abs_diff: number;
  };
  const buf = readFileSync(join(dir, 'numpy_reference.bin'));
  const all = new Float32Array(buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.byteLength));
  return {
    torchMaxAbsDiff: meta.torch_max_abs_diff,
    sequences: meta.sequences.map((s) => ({ ...s, logits: all.subarray(s.offset, s.offset + s.shape[0] * s.shape[1]) })),
  };
}
