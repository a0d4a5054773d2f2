import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

/**
 * `npm run eval` on a slice of the held-out set answers at the accuracy the model states: models/epic-qa/eval-full.txt
 * is the output of `npm run eval -- --mode full` over the whole set; a 100-question slice must agree within three
 * standard errors of a binomial proportion.
 */
const ROOT = join(__dirname, '..', '..');
const MODEL = join(ROOT, 'models', 'epic-qa');
const STATED = join(MODEL, 'eval-full.txt');
const EVAL = join(ROOT, 'data', 'eval', 'qa-heldout.jsonl');
const ready = existsSync(STATED) && existsSync(EVAL);
const it = ready ? test : test.skip;

it('a 100-question slice of npm run eval matches the stated full-mode accuracy', () => {
  const stated = Number(/^accuracy: ([\d.]+)$/m.exec(readFileSync(STATED, 'utf8'))![1]);
  const r = spawnSync(process.execPath, [require.resolve('tsx/cli'), join(ROOT, 'tools', 'eval.ts'), '--mode', 'full', '--limit', '100', '--model', MODEL], {
    cwd: ROOT,
    encoding: 'utf8',
  });
  expect(r.status).toBe(0);
  const lines = r.stdout.trim().split('\n');
  const last = lines[lines.length - 1];
  expect(last).toMatch(/^accuracy: [\d.]+$/);
  expect(r.stdout).toMatch(/^single_hop: /m);
  expect(r.stdout).toMatch(/^two_hop: /m);
  const got = Number(last.split(' ')[1]);
  // A binomial standard error, floored at p = 0.01 so a stated 100% still allows a miss or two.
  const se = Math.sqrt(Math.max(stated * (1 - stated), 0.0099) / 100);
  expect(Math.abs(got - stated)).toBeLessThanOrEqual(3 * se + 1e-9);
}, 120_000);
