/**
 * `WORKERS=2 npm start` (services/start.ts) on the machine's Redis under its own prefixes: two inference workers, each
 * with its own id, metrics port and disk-tier folder, both in the Prometheus target list it writes, both live in the
 * routing index; a completion over a document is routed (ROUTING=cache) to one of them; a bad ROUTING stops npm start at once with an error that names it.
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import IORedis from 'ioredis';
import { RoutingKeys } from '../../shared/routing';
import { freePort, waitFor } from '../helpers/net';
import { dropOwnPrefixes, ownPrefixes } from '../helpers/redis';
import { tsArgs } from '../helpers/ts';

const ROOT = join(__dirname, '..', '..');
const REDIS = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const PREFIXES = ownPrefixes(`epic-start-routing-${process.pid}`);

afterAll(async () => {
  await dropOwnPrefixes(PREFIXES);
});

function start(env: Record<string, string>) {
  const proc = spawn(process.execPath, tsArgs(join(ROOT, 'services', 'start.ts')), { cwd: ROOT, env: { ...process.env, ...PREFIXES, LOG_LEVEL: 'warn', ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  const run = { proc, out: '', exited: new Promise<number | null>((resolve) => proc.once('exit', (code) => resolve(code))) };
  proc.stdout.on('data', (d) => (run.out += d));
  proc.stderr.on('data', (d) => (run.out += d));
  return run;
}

test('WORKERS=2: two workers with their own ids, ports, disk folders and scrape targets, both live in the index, and a routed completion', async () => {
  const [api, wm, pm] = [await freePort(), await freePort(), await freePort()];
  const disk = mkdtempSync(join(tmpdir(), 'epic-start-routing-'));
  const sd = join(disk, 'prometheus', 'workers.json');
  const run = start({ API_PORT: String(api), WORKER_METRICS_PORT: String(wm), PRECOMPUTE_METRICS_PORT: String(pm), WORKERS: '2', WORKER_WARMUP: '0', KV_DISK_DIR: disk, PROMETHEUS_SD_FILE: sd });
  const redis = new IORedis(REDIS);
  try {
    await waitFor(async () => (run.out.includes('epic-serve is up') ? true : undefined), 90_000, 'start to report up');
    expect(run.out).toContain('2 inference worker(s), ROUTING=cache');
    // Worker 1's port: the next one after worker 0's that is neither the API's nor precompute's.
    let w1 = wm + 1;
    while (w1 === api || w1 === pm) w1++;
    for (const port of [wm, w1]) expect((await fetch(`http://127.0.0.1:${port}/healthz`)).status).toBe(200);
    // Prometheus's file-based discovery list (infra/prometheus.yml's worker job): both workers, each scrapeable
    const groups = JSON.parse(readFileSync(sd, 'utf8')) as { targets: string[] }[];
    expect(groups.flatMap((g) => g.targets)).toEqual([`127.0.0.1:${wm}`, `127.0.0.1:${w1}`]);
    for (const t of groups[0].targets) expect(await (await fetch(`http://${t}/metrics`)).text()).toMatch(/^epic_/m);
    const keys = new RoutingKeys(PREFIXES.QUEUE_PREFIX);
    await waitFor(async () => ((await redis.zrangebyscore(keys.workers, Date.now(), '+inf')).sort().join() === 'w0,w1' ? true : undefined), 10_000, 'w0 and w1 in the index');
    for (const w of ['w0', 'w1']) expect(existsSync(join(disk, w))).toBe(true);
    const doc = await fetch(`http://127.0.0.1:${api}/v1/documents`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ text: 'the city of paris is in france .' }) });
    const id = ((await doc.json()) as { id: string }).id;
    const res = await fetch(`http://127.0.0.1:${api}/v1/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ prompt: 'where ?', documents: [id], max_tokens: 2 }) });
    expect(res.status).toBe(200);
    const metrics = await (await fetch(`http://127.0.0.1:${api}/metrics`)).text();
    expect(metrics).toMatch(/epic_routing_decisions_total\{decision="best"[^}]*\} 1/);
  } finally {
    run.proc.kill('SIGTERM');
    redis.disconnect();
  }
  expect(await run.exited).toBe(0);
  rmSync(disk, { recursive: true, force: true });
}, 150_000);

test('a ROUTING that is not a mode stops npm start at once, naming it', async () => {
  const run = start({ ROUTING: 'fastest' });
  expect(await run.exited).toBe(1);
  expect(run.out).toMatch(/invalid configuration: ROUTING: .*"cache"\|"round-robin"\|"shared"/);
}, 30_000);
