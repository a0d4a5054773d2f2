import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { cpus, tmpdir } from 'node:os';
import { freePort } from '../test/helpers/net';
import { dropOwnPrefixes, ownPrefixes } from '../test/helpers/redis';
import { tsArgs } from '../test/helpers/ts';

export const ROOT = join(__dirname, '..');

/** The default model when it exists, else the test fixture; `--model DIR` overrides. */
export function modelDirFromArgs(argv = process.argv.slice(2)): string {
  const i = argv.indexOf('--model');
  if (i >= 0 && argv[i + 1]) return argv[i + 1];
  const def = join(ROOT, 'models', 'epic-qa');
  return existsSync(join(def, 'config.json')) ? def : join(ROOT, 'models', 'tiny-random');
}

export function argNumber(name: string, dflt: number, argv = process.argv.slice(2)): number {
  const i = argv.indexOf(name);
  return i >= 0 && argv[i + 1] ? Number(argv[i + 1]) : dflt;
}

export function quantile(xs: number[], q: number): number {
  const s = [...xs].sort((a, b) => a - b);
  if (!s.length) return NaN;
  const pos = (s.length - 1) * q;
  const lo = Math.floor(pos);
  const hi = Math.ceil(pos);
  return s[lo] + (s[hi] - s[lo]) * (pos - lo);
}

export async function timeIt(fn: () => Promise<unknown>, runs: number, warmup = 1): Promise<number[]> {
  for (let i = 0; i < warmup; i++) await fn();
  const out: number[] = [];
  for (let i = 0; i < runs; i++) {
    const t0 = performance.now();
    await fn();
    out.push(performance.now() - t0);
  }
  return out;
}

export function machine() {
  return { node: process.version, cpus: cpus().length, cpu: cpus()[0]?.model ?? 'unknown', date: new Date().toISOString() };
}

export function writeResult(name: string, data: unknown): string {
  const file = join(ROOT, 'bench', 'results', `${name}.json`);
  mkdirSync(dirname(file), { recursive: true });
  writeFileSync(file, JSON.stringify(data, null, 2) + '\n');
  return file;
}

export function table(rows: Record<string, string | number>[]): string {
  if (!rows.length) return '';
  const cols = Object.keys(rows[0]);
  const cell = (v: string | number) => (typeof v === 'number' ? (Number.isInteger(v) ? String(v) : v.toFixed(2)) : v);
  const w = cols.map((c) => Math.max(c.length, ...rows.map((r) => cell(r[c]).length)));
  const line = (vals: string[]) => '| ' + vals.map((v, i) => v.padEnd(w[i])).join(' | ') + ' |';
  return [line(cols), '|' + w.map((n) => '-'.repeat(n + 2)).join('|') + '|', ...rows.map((r) => line(cols.map((c) => cell(r[c]))))].join('\n');
}

/** A seeded Fisher-Yates shuffle (a copy): the same seed gives the same order. */
export function shuffled<T>(xs: T[], seed: number): T[] {
  const a = [...xs];
  let s = seed >>> 0;
  for (let i = a.length - 1; i > 0; i--) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    const j = s % (i + 1);
    [a[i], a[j]] = [a[j], a[i]];
  }
  return a;
}

/**
 * The whole system as `npm start` runs it (services/start.ts) with `env`, for the benches that drive it over HTTP.
 * `up()` resolves once it says it is up (or throws with its output); `stop()` ends it (SIGTERM), removes `kvDir` and
 * runs `cleanup` (the bench's Redis keys).
 */
export function startStack(env: NodeJS.ProcessEnv, kvDir: string, cleanup: () => Promise<unknown>) {
  const proc = spawn(process.execPath, tsArgs(join(ROOT, 'services', 'start.ts')), { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  proc.stdout!.on('data', (d) => (out += d));
  proc.stderr!.on('data', (d) => (out += d));
  return {
    output: () => out,
    async up(timeoutMs: number): Promise<void> {
      for (let t = 0; t < timeoutMs && !out.includes('epic-serve is up'); t += 100) {
        if (proc.exitCode !== null) break;
        await new Promise((r) => setTimeout(r, 100));
      }
      if (!out.includes('epic-serve is up')) throw new Error(`the stack did not start:\n${out.slice(-3000)}`);
    },
    async stop(): Promise<void> {
      if (proc.exitCode === null) {
        const exited = new Promise((r) => proc.once('exit', r));
        proc.kill('SIGTERM');
        await exited;
      }
      rmSync(kvDir, { recursive: true, force: true });
      await cleanup();
    },
  };
}

/**
 * startStack on free ports, with its own KV folder and its own Redis prefixes (queue, catalog, KV), dropped at stop():
 * a bench on a Redis that a running epic-serve shares neither touches its documents and batches nor leaves keys.
 * `env` adds to (or overrides) the defaults. Returns the stack, the API's base URL and the worker's metrics port.
 */
export async function startOwnStack(name: string, modelDir: string, env: Record<string, string> = {}) {
  const [api, wm, pm] = [await freePort(), await freePort(), await freePort()];
  const kvDir = mkdtempSync(join(tmpdir(), 'epic-bench-kv-'));
  const prefixes = ownPrefixes(`epic-bench-${name}-${process.pid}`);
  const stack = startStack(
    {
      ...process.env,
      API_PORT: String(api),
      WORKER_METRICS_PORT: String(wm),
      PRECOMPUTE_METRICS_PORT: String(pm),
      ...prefixes,
      KV_DISK_DIR: kvDir,
      MODEL_DIR: modelDir,
      LOG_LEVEL: 'warn',
      ...env,
    },
    kvDir,
    () => dropOwnPrefixes(prefixes),
  );
  return { ...stack, base: `http://127.0.0.1:${api}`, workerMetricsPort: wm };
}
