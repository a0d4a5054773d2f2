/**
 * npm start — the whole system on local defaults: Redis (started here when none answers and a `redis-server` binary
 * exists), the API, WORKERS inference workers (default 1) and a precompute worker. Ctrl-C stops everything it started.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdirSync, renameSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { pathToFileURL } from 'node:url';
import IORedis from 'ioredis';
import { loadServiceConfig, type ServiceConfig } from '../shared/config';

const SERVICES = ['api', 'worker', 'precompute'] as const;

/**
 * The environment of inference worker i of n: its id (`w<i>`, or WORKER_ID-<i>), its metrics port (WORKER_METRICS_PORT,
 * then the next free numbers past the API's and precompute's ports) and, with several, its own disk-tier folder.
 */
function workerEnv(cfg: ServiceConfig, i: number, n: number): Record<string, string> {
  const taken = new Set([cfg.API_PORT, cfg.PRECOMPUTE_METRICS_PORT]);
  let port = cfg.WORKER_METRICS_PORT;
  for (let k = 0; k < i; k++) do port++; while (taken.has(port));
  return {
    WORKER_ID: cfg.WORKER_ID ? (n > 1 ? `${cfg.WORKER_ID}-${i}` : cfg.WORKER_ID) : `w${i}`,
    WORKER_METRICS_PORT: String(port),
    ...(n > 1 ? { KV_DISK_DIR: join(cfg.KV_DISK_DIR, `w${i}`) } : {}),
  };
}
/**
 * The workers' metrics endpoints as a Prometheus file_sd target list (infra/prometheus.yml's worker job reads it, and
 * Prometheus re-reads it when it changes): every worker `npm start` runs is scraped, however many WORKERS says. Each
 * worker's series carry its own `worker` label already (services/worker/main.ts), so the list sets no labels.
 */
function writeScrapeTargets(cfg: ServiceConfig, ports: number[]): void {
  if (!cfg.PROMETHEUS_SD_FILE) return;
  const host = ['0.0.0.0', '::', ''].includes(cfg.METRICS_HOST) ? '127.0.0.1' : cfg.METRICS_HOST;
  const targets = ports.map((p) => (host.includes(':') ? `[${host}]:${p}` : `${host}:${p}`));
  mkdirSync(dirname(cfg.PROMETHEUS_SD_FILE), { recursive: true });
  // Renamed into place: Prometheus never reads a half-written list.
  const tmp = `${cfg.PROMETHEUS_SD_FILE}.${process.pid}.tmp`;
  writeFileSync(tmp, `${JSON.stringify([{ targets }], null, 2)}\n`);
  renameSync(tmp, cfg.PROMETHEUS_SD_FILE);
}

const children: { name: string; proc: ChildProcess }[] = [];
let stopping = false;

function prefixLines(name: string, stream: NodeJS.ReadableStream, out: NodeJS.WritableStream) {
  let buf = '';
  stream.on('data', (d: Buffer) => {
    buf += d.toString();
    let i: number;
    while ((i = buf.indexOf('\n')) >= 0) {
      out.write(`[${name}] ${buf.slice(0, i)}\n`);
      buf = buf.slice(i + 1);
    }
  });
}

async function redisAnswers(url: string): Promise<boolean> {
  const r = new IORedis(url, { lazyConnect: true, maxRetriesPerRequest: 0, enableOfflineQueue: false, retryStrategy: () => null, connectTimeout: 1000 });
  r.on('error', () => {});
  try {
    await r.connect();
    await r.ping();
    return true;
  } catch {
    return false;
  } finally {
    r.disconnect();
  }
}

function hasBinary(name: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${name}`], { stdio: 'ignore' }).status === 0;
}

async function ensureRedis(url: string): Promise<void> {
  if (await redisAnswers(url)) {
    console.log(`[start] Redis answers at ${url}`);
    return;
  }
  const u = new URL(url);
  const local = ['127.0.0.1', 'localhost', '::1', '[::1]'].includes(u.hostname);
  if (!local || !hasBinary('redis-server')) {
    console.error(
      `[start] Redis does not answer at ${url}` +
        (local ? ' and no redis-server binary is on PATH. Install it (Debian/Ubuntu: apt-get install redis-server) or set REDIS_URL to a running Redis.' : '. Start it, or point REDIS_URL at a running Redis.'),
    );
    process.exit(1);
  }
  const port = u.port || '6379';
  console.log(`[start] starting redis-server on port ${port}`);
  const proc = spawn('redis-server', ['--port', port, '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], { stdio: ['ignore', 'pipe', 'pipe'] });
  children.push({ name: 'redis', proc });
  prefixLines('redis', proc.stdout!, process.stdout);
  prefixLines('redis', proc.stderr!, process.stderr);
  for (let i = 0; i < 50; i++) {
    if (await redisAnswers(url)) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  console.error(`[start] redis-server did not come up on port ${port}`);
  await stopAll(1);
}

async function stopAll(code: number): Promise<never> {
  stopping = true;
  // Services first, Redis last, so workers can close their connections cleanly.
  const order = [...children].sort((a, b) => Number(a.name === 'redis') - Number(b.name === 'redis'));
  for (const c of order) {
    if (c.proc.exitCode !== null || c.proc.signalCode !== null) continue;
    c.proc.kill('SIGTERM');
    await new Promise<void>((resolve) => {
      const t = setTimeout(() => {
        c.proc.kill('SIGKILL');
        resolve();
      }, 10_000);
      c.proc.once('exit', () => {
        clearTimeout(t);
        resolve();
      });
    });
  }
  process.exit(code);
}

async function main() {
  // Ctrl-C or SIGTERM at any point, starting Redis or the services included, stops what was started (left running,
  // they would hold their ports for the next start).
  process.once('SIGINT', () => void stopAll(0));
  process.once('SIGTERM', () => void stopAll(0));
  const cfg = loadServiceConfig();
  await ensureRedis(cfg.REDIS_URL);
  if (cfg.KV_REDIS_URL !== cfg.REDIS_URL) await ensureRedis(cfg.KV_REDIS_URL);
  // node --import tsx: one process a service, so the SIGTERM below reaches it (`tsx file` would relay it to a child
  // and SIGKILL that child when it does not confirm within 30 ms, as a worker busy in onnxruntime may not).
  const loader = pathToFileURL(require.resolve('tsx')).href;
  const instances = SERVICES.flatMap((service): { service: (typeof SERVICES)[number]; name: string; env: Record<string, string> }[] =>
    service === 'worker'
      ? Array.from({ length: cfg.WORKERS }, (_, i) => ({ service, name: cfg.WORKERS > 1 ? `worker-${i}` : 'worker', env: workerEnv(cfg, i, cfg.WORKERS) }))
      : [{ service, name: service, env: {} }],
  );
  writeScrapeTargets(cfg, instances.filter((x) => x.service === 'worker').map((x) => Number(x.env.WORKER_METRICS_PORT)));
  for (const { service, name, env } of instances) {
    if (stopping) return; // told to stop while Redis started: start nothing more
    const proc = spawn(process.execPath, ['--import', loader, join(__dirname, service, 'main.ts')], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } });
    children.push({ name, proc });
    prefixLines(name, proc.stdout!, process.stdout);
    prefixLines(name, proc.stderr!, process.stderr);
    proc.once('exit', (code, signal) => {
      if (stopping) return;
      console.error(`[start] ${name} exited (${signal ?? code}); stopping everything`);
      void stopAll(1);
    });
  }
  // Where a service listening on `host` is reached: a wildcard address on loopback; IPv6 in brackets.
  const reach = (host: string, port: number) => {
    const h = ['0.0.0.0', '::', ''].includes(host) ? '127.0.0.1' : host;
    return `http://${h.includes(':') ? `[${h}]` : h}:${port}`;
  };
  const url = reach(cfg.API_HOST, cfg.API_PORT);
  const probes = [
    `${url}/readyz`,
    ...instances.filter((x) => x.service === 'worker').map((x) => `${reach(cfg.METRICS_HOST, Number(x.env.WORKER_METRICS_PORT))}/healthz`),
    `${reach(cfg.METRICS_HOST, cfg.PRECOMPUTE_METRICS_PORT)}/healthz`,
  ];
  for (let i = 0; i < 600 && !stopping; i++) {
    const ok = await Promise.all(probes.map((p) => fetch(p).then((r) => r.ok, () => false)));
    if (ok.every(Boolean)) {
      console.log(`[start] epic-serve is up: API ${url} (try: curl ${url}/v1/models), ${cfg.WORKERS} inference worker(s), ROUTING=${cfg.ROUTING}. Ctrl-C stops it.`);
      break;
    }
    await new Promise((r) => setTimeout(r, 200));
  }
}

main().catch((e) => {
  console.error(`[start] ${e instanceof Error ? e.message : String(e)}`);
  void stopAll(1);
});
