import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { freePort, waitFor } from '../helpers/net';
import { dropOwnPrefixes, ownPrefixes } from '../helpers/redis';
import { tsArgs } from '../helpers/ts';

const ROOT = join(__dirname, '..', '..');
const PREFIXES = ownPrefixes(`epic-start-${process.pid}`);

// Both tests run the services on the machine's Redis under their own prefixes, dropped afterwards.
afterAll(async () => {
  await dropOwnPrefixes(PREFIXES);
});

/** `npm start` (services/start.ts) on free ports: its output so far, how it exited, and its ports. */
async function startAll() {
  const [api, wm, pm] = [await freePort(), await freePort(), await freePort()];
  const env = { ...process.env, ...PREFIXES, API_PORT: String(api), WORKER_METRICS_PORT: String(wm), PRECOMPUTE_METRICS_PORT: String(pm), KV_DISK_BYTES: '0', LOG_LEVEL: 'warn' };
  const proc = spawn(process.execPath, tsArgs(join(ROOT, 'services', 'start.ts')), { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
  const run = { proc, out: '', ports: { api, wm, pm }, exited: new Promise<number | null>((resolve) => proc.once('exit', (code) => resolve(code))) };
  proc.stdout.on('data', (d) => (run.out += d));
  proc.stderr.on('data', (d) => (run.out += d));
  return run;
}

/** Every service released its port (none was left behind to block the next start). */
async function portsReleased(ports: number[]) {
  for (const port of ports) await expect(fetch(`http://127.0.0.1:${port}/healthz`)).rejects.toThrow();
}

test('npm start brings up api, worker and precompute, serves a completion, and stops them all on SIGTERM', async () => {
  const run = await startAll();
  const { api, wm, pm } = run.ports;
  try {
    await waitFor(async () => (run.out.includes('epic-serve is up') ? true : undefined), 45_000, 'start to report up');
    const res = await fetch(`http://127.0.0.1:${api}/v1/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ prompt: 'hello', max_tokens: 3 }),
    });
    expect(res.status).toBe(200);
    expect(((await res.json()) as any).usage.completion_tokens).toBeGreaterThan(0);
    for (const port of [wm, pm]) expect((await fetch(`http://127.0.0.1:${port}/metrics`)).status).toBe(200);
  } finally {
    run.proc.kill('SIGTERM');
  }
  expect(await run.exited).toBe(0);
  await portsReleased([api, wm, pm]);
}, 90_000);

test('SIGTERM while the services are still starting stops them all', async () => {
  const run = await startAll();
  const { api, wm, pm } = run.ports;
  try {
    // The API answers first; the worker is still loading and warming up its model.
    await waitFor(async () => ((await fetch(`http://127.0.0.1:${api}/healthz`).then((r) => r.ok, () => false)) ? true : undefined), 45_000, 'the API to answer');
    expect(run.out).not.toContain('epic-serve is up');
  } finally {
    run.proc.kill('SIGTERM');
  }
  expect(await run.exited).toBe(0);
  await new Promise((r) => setTimeout(r, 500));
  await portsReleased([api, wm, pm]);
}, 90_000);
