import { spawnSync } from 'node:child_process';
import { PYTHON, fixture, type FixtureName } from './fixtures';

/**
 * Jest globalSetup: build the real-model fixtures (tools/model/fixtures.py) once, before any test file runs, so a
 * first build (a few minutes on a fresh machine) is not charged to one test's beforeAll timeout. Fresh fixtures cost
 * only a hash of tools/model/*.py. EPIC_SKIP_FIXTURES=1 leaves the build to the test files that need them.
 */
const ALL: FixtureName[] = [
  'hf-llama3',
  'hf-qwen3',
  'hf-qwen2',
  'llama3-style',
  'qwen3-style',
  'qwen2-style',
  'llama3-style-stock',
  'llama3-style-fp16',
  'llama3-style-gqa',
];

export default function globalSetup(): void {
  if (process.env.EPIC_SKIP_FIXTURES === '1') return;
  const probe = spawnSync(PYTHON, ['-c', 'import torch, onnx, numpy'], { encoding: 'utf8' });
  if (probe.status !== 0) {
    throw new Error(
      `the real-model fixtures are built with ${PYTHON} and Debian's torch, onnx and numpy, which it cannot import ` +
        `(${(probe.error?.message ?? probe.stderr ?? '').trim().split('\n').pop()}): ` +
        'apt-get install python3-torch python3-onnx python3-numpy libopenblas0-pthread, or run `bash .ci/run`, which installs them',
    );
  }
  const t0 = Date.now();
  for (const name of ALL) fixture(name);
  const s = (Date.now() - t0) / 1000;
  if (s > 5) process.stderr.write(`\nreal-model fixtures ready in ${s.toFixed(0)} s (.cache/fixtures)\n`);
}
