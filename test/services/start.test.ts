import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { freePort, waitFor } from '../helpers/net';
import { dropKeys } from '../helpers/redis';

// Both tests run the services on the machine's Redis under their own prefixes, dropped afterwards.
afterAll(async () => {
  await dropKeys(process.env.REDIS_URL ?? 'redis://127.0.0.1:6379', [`{epic-start-${process.pid}}`, `epic-start-${process.pid}:{api}`, `epic-start-${process.pid}:kv`]);
});

const ROOT = join(__dirname, '..', '..');

test('npm start brings up api, worker and precompute, serves a completion, and stops them all on SIGTERM', async () => {
  const [api, wm, pm] = [await freePort(), await freePort(), await freePort()];
  const env = {
    ...process.env,
    API_PORT: String(api),
    WORKER_METRICS_PORT: String(wm),
    PRECOMPUTE_METRICS_PORT: String(pm),
    QUEUE_PREFIX: `{epic-start-${process.pid}}`,
    CATALOG_PREFIX: `epic-start-${process.pid}:{api}`,
    KV_REDIS_PREFIX: `epic-start-${process.pid}:kv`,
    KV_DISK_BYTES: '0',
    LOG_LEVEL: 'warn',
  };
  const proc = spawn(process.execPath, [require.resolve('tsx/cli'), join(ROOT, 'services', 'start.ts')], { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  proc.stdout.on('data', (d) => (out += d));
  proc.stderr.on('data', (d) => (out += d));
  const exited = new Promise<number | null>((resolve) => proc.once('exit', (code) => resolve(code)));
  try {
    await waitFor(async () => (out.includes('epic-serve is up') ? true : undefined), 45_000, 'start to report up');
    const res = await fetch(`http://127.0.0.1:${api}/v1/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ prompt: 'hello', max_tokens: 3 }),
    });
    expect(res.status).toBe(200);
    expect(((await res.json()) as any).usage.completion_tokens).toBeGreaterThan(0);
    for (const port of [wm, pm]) expect((await fetch(`http://127.0.0.1:${port}/metrics`)).status).toBe(200);
  } finally {
    proc.kill('SIGTERM');
  }
  expect(await exited).toBe(0);
  // Every service released its port.
  for (const port of [api, wm, pm]) await expect(fetch(`http://127.0.0.1:${port}/healthz`)).rejects.toThrow();
}, 90_000);

test('SIGTERM while the services are still starting stops them all', async () => {
  const [api, wm, pm] = [await freePort(), await freePort(), await freePort()];
  const env = {
    ...process.env,
    API_PORT: String(api),
    WORKER_METRICS_PORT: String(wm),
    PRECOMPUTE_METRICS_PORT: String(pm),
    QUEUE_PREFIX: `{epic-start-${process.pid}}`,
    CATALOG_PREFIX: `epic-start-${process.pid}:{api}`,
    KV_REDIS_PREFIX: `epic-start-${process.pid}:kv`,
    KV_DISK_BYTES: '0',
    LOG_LEVEL: 'warn',
  };
  const proc = spawn(process.execPath, [require.resolve('tsx/cli'), join(ROOT, 'services', 'start.ts')], { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  proc.stdout.on('data', (d) => (out += d));
  proc.stderr.on('data', (d) => (out += d));
  const exited = new Promise<number | null>((resolve) => proc.once('exit', (code) => resolve(code)));
  try {
    // The API answers first; the worker is still loading and warming up its model.
    await waitFor(async () => ((await fetch(`http://127.0.0.1:${api}/healthz`).then((r) => r.ok, () => false)) ? true : undefined), 45_000, 'the API to answer');
    expect(out).not.toContain('epic-serve is up');
  } finally {
    proc.kill('SIGTERM');
  }
  expect(await exited).toBe(0);
  // No service was left behind holding its port (the next start would fail on it).
  await new Promise((r) => setTimeout(r, 500));
  for (const port of [api, wm, pm]) await expect(fetch(`http://127.0.0.1:${port}/healthz`)).rejects.toThrow();
}, 90_000);
