/**
 * Real processes for the fault tests: private redis-server instances on free ports, and the services started the way
 * services/start.ts starts them (`node <tsx cli> services/<name>/main.ts`), each in its own process group so a
 * SIGKILL reaches the service itself and not only tsx's wrapper. Only what is started here is ever stopped here.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { tsArgs } from '../helpers/ts';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Queue } from 'bullmq';
import IORedis from 'ioredis';
import { BatchStore, CatalogKeys, type BatchRecord } from '../../shared/catalog';
import { RoutingKeys } from '../../shared/routing';
import { freePort, waitFor } from '../helpers/net';

export const ROOT = join(__dirname, '..', '..');
export const TINY = join(ROOT, 'models', 'tiny-random');

const exited = (p: ChildProcess) => p.exitCode !== null || p.signalCode !== null;

function waitExit(p: ChildProcess, ms: number): Promise<boolean> {
  if (exited(p)) return Promise.resolve(true);
  return new Promise((resolve) => {
    const t = setTimeout(() => resolve(false), ms);
    p.once('exit', () => {
      clearTimeout(t);
      resolve(true);
    });
  });
}

/** A private redis-server (no persistence) on a free port; stop() and start() again on the same port. */
export class RedisServer {
  private proc?: ChildProcess;
  private constructor(readonly port: number) {}

  static async start(): Promise<RedisServer> {
    const r = new RedisServer(await freePort());
    await r.start();
    return r;
  }

  get url(): string {
    return `redis://127.0.0.1:${this.port}`;
  }

  async start(): Promise<void> {
    if (this.proc && !exited(this.proc)) return;
    this.proc = spawn('redis-server', ['--port', String(this.port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--loglevel', 'warning'], {
      stdio: 'ignore',
    });
    await waitFor(async () => ((await this.ping()) ? true : undefined), 10_000, `redis-server on port ${this.port}`);
  }

  async ping(): Promise<boolean> {
    const c = new IORedis(this.url, { lazyConnect: true, maxRetriesPerRequest: 0, enableOfflineQueue: false, retryStrategy: () => null, connectTimeout: 500 });
    c.on('error', () => {});
    try {
      await c.connect();
      return (await c.ping()) === 'PONG';
    } catch {
      return false;
    } finally {
      c.disconnect();
    }
  }

  /** Stops this redis-server (SIGKILL when `hard`: a crash, no goodbye to clients). */
  async stop(hard = false): Promise<void> {
    const p = this.proc;
    if (!p || exited(p)) return;
    p.kill(hard ? 'SIGKILL' : 'SIGTERM');
    if (!(await waitExit(p, 5000))) {
      p.kill('SIGKILL');
      await waitExit(p, 5000);
    }
  }

  client(): IORedis {
    const c = new IORedis(this.url, { maxRetriesPerRequest: 1 });
    c.on('error', () => {});
    return c;
  }
}

export type ServiceName = 'api' | 'worker' | 'precompute';

/** One service process; its stdout and stderr are captured whole. */
/** A private redis-server for a describe block: started before its tests and stopped after them. */
export function suiteRedis(): { redis: RedisServer; client: IORedis } {
  const h = {} as { redis: RedisServer; client: IORedis };
  beforeAll(async () => {
    h.redis = await RedisServer.start();
    h.client = h.redis.client();
  });
  afterAll(async () => {
    h.client?.disconnect();
    await h.redis?.stop();
  });
  return h;
}

/**
 * suiteRedis, and the stack each test starts on it: `const s = r.own(await ProcStack.start(...))`. After each test the
 * stack is closed and Redis flushed, also when the test failed half-way.
 */
export function suiteStacks(): { redis: RedisServer; client: IORedis; own<T extends ProcStack>(stack: T): T } {
  const h = suiteRedis();
  let open: ProcStack | undefined;
  afterEach(async () => {
    await open?.close();
    open = undefined;
    await h.client.flushall();
  });
  return Object.assign(h, {
    own<T extends ProcStack>(stack: T): T {
      open = stack;
      return stack;
    },
  });
}

export class Service {
  output = '';
  readonly proc: ChildProcess;
  private peakKb = 0;
  private sampler?: NodeJS.Timeout;

  constructor(
    readonly name: ServiceName,
    readonly env: Record<string, string>,
    /** API_PORT of the api, the metrics port of a worker. */
    readonly port: number,
  ) {
    this.proc = spawn(process.execPath, tsArgs(join(ROOT, 'services', name, 'main.ts')), {
      cwd: ROOT,
      env: { ...process.env, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
      detached: true,
    });
    this.proc.stdout!.on('data', (d: Buffer) => (this.output += d.toString()));
    this.proc.stderr!.on('data', (d: Buffer) => (this.output += d.toString()));
  }

  get alive(): boolean {
    return !exited(this.proc);
  }

  /** The node process running the service (tsx's child), or the wrapper while it has none yet. */
  servicePid(): number {
    const pid = this.proc.pid!;
    try {
      const kids = readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean);
      if (kids.length) return Number(kids[0]);
    } catch {
      // not on Linux, or gone
    }
    return pid;
  }

  /** Resident set size now and its high-water mark (VmHWM), in KiB, of the service process, from /proc. */
  rss(): { rssKb: number; hwmKb: number } {
    try {
      const s = readFileSync(`/proc/${this.servicePid()}/status`, 'utf8');
      const num = (k: string) => Number(new RegExp(`^${k}:\\s+(\\d+) kB`, 'm').exec(s)?.[1] ?? 0);
      return { rssKb: num('VmRSS'), hwmKb: num('VmHWM') };
    } catch {
      return { rssKb: 0, hwmKb: 0 };
    }
  }

  /** Samples RSS every `ms` (the peak survives the process only if sampled). */
  sampleRss(ms = 200): void {
    this.sampler ??= setInterval(() => {
      const { rssKb, hwmKb } = this.rss();
      this.peakKb = Math.max(this.peakKb, rssKb, hwmKb);
    }, ms);
    this.sampler.unref();
  }

  peakRssMb(): number {
    const { rssKb, hwmKb } = this.rss();
    this.peakKb = Math.max(this.peakKb, rssKb, hwmKb);
    return Math.round(this.peakKb / 1024);
  }

  /** SIGKILL the whole process group (tsx's wrapper and the service): a crash, nothing cleaned up. */
  async kill(): Promise<void> {
    if (this.sampler) clearInterval(this.sampler);
    if (!this.alive) return;
    try {
      process.kill(-this.proc.pid!, 'SIGKILL');
    } catch {
      // already gone
    }
    await waitExit(this.proc, 5000);
  }

  /** SIGTERM (the service is one process: node --import tsx), which shuts down cleanly; SIGKILL after `graceMs`. */
  async stop(graceMs = 8000): Promise<void> {
    if (this.sampler) clearInterval(this.sampler);
    if (!this.alive) return;
    this.proc.kill('SIGTERM');
    if (!(await waitExit(this.proc, graceMs))) await this.kill();
    try {
      process.kill(-this.proc.pid!, 'SIGKILL'); // anything of the group left behind
    } catch {
      // none
    }
  }
}

export interface StackOptions {
  /** Queue Redis; KV Redis defaults to it. */
  redis: RedisServer;
  kvRedis?: RedisServer;
  env?: Record<string, string>;
  services?: ServiceName[];
}

/** API, workers and precompute as separate processes, on free ports, with a private prefix and disk folder. */
export class ProcStack {
  readonly services: Service[] = [];
  private readonly queues: Queue[] = [];
  readonly env: Record<string, string>;
  readonly diskDir: string;
  apiPort = 0;
  private constructor(o: StackOptions, diskDir: string) {
    this.diskDir = diskDir;
    this.env = {
      REDIS_URL: o.redis.url,
      KV_REDIS_URL: (o.kvRedis ?? o.redis).url,
      QUEUE_PREFIX: '{epic-fault}',
      // Not the default: a service that ignored CATALOG_PREFIX would put its records where these tests do not look.
      CATALOG_PREFIX: 'epic-fault:{api}',
      KV_REDIS_PREFIX: 'epic-fault:kv',
      KV_DISK_DIR: diskDir,
      MODEL_DIR: TINY,
      // The fault tests watch the one shared queue (`inference`); routing's own fault test sets ROUTING=cache.
      ROUTING: 'shared',
      ORT_THREADS: '1',
      LOG_LEVEL: 'info',
      ...o.env,
    };
  }

  static async start(o: StackOptions): Promise<ProcStack> {
    const s = new ProcStack(o, mkdtempSync(join(tmpdir(), 'epic-fault-kv-')));
    try {
      for (const name of o.services ?? ['api', 'worker']) await s.add(name);
    } catch (e) {
      await s.close();
      throw e;
    }
    return s;
  }

  /**
   * The API and two inference workers with ids `a` and `b` (routing's, work stealing's and quality of service's fault
   * tests), once both are live in the routing index.
   */
  static async routedPair(o: StackOptions): Promise<ProcStack> {
    const s = await ProcStack.start({ ...o, services: [] });
    const client = new IORedis(o.redis.url);
    try {
      await Promise.all([s.add('api'), s.add('worker', { WORKER_ID: 'a' }), s.add('worker', { WORKER_ID: 'b' })]);
      const keys = new RoutingKeys(s.env.QUEUE_PREFIX);
      await waitFor(async () => ((await client.zrangebyscore(keys.workers, Date.now(), '+inf')).length === 2 ? true : undefined), 30_000, 'both workers in the index');
    } catch (e) {
      await s.close();
      throw e;
    } finally {
      client.disconnect();
    }
    return s;
  }

  get base(): string {
    return `http://127.0.0.1:${this.apiPort}`;
  }

  /** The worker started with this WORKER_ID. */
  worker(id: string): Service {
    const w = this.services.find((x) => x.name === 'worker' && x.env.WORKER_ID === id);
    if (!w) throw new Error(`no worker ${id}`);
    return w;
  }

  /** A BullMQ Queue on the stack's queue Redis and prefix, to watch (closed by close()). */
  queue(name: string): Queue {
    const q = new Queue(name, { connection: { url: this.env.REDIS_URL }, prefix: this.env.QUEUE_PREFIX });
    this.queues.push(q);
    return q;
  }

  /** The stack's batches (its catalog prefix), on a connection the caller owns. */
  batches(client: IORedis): BatchStore {
    return new BatchStore(client, new CatalogKeys(this.env.CATALOG_PREFIX));
  }

  /** Starts one more service and waits until it answers. */
  async add(name: ServiceName, env: Record<string, string> = {}): Promise<Service> {
    const port = await freePort();
    const portVar = name === 'api' ? 'API_PORT' : name === 'worker' ? 'WORKER_METRICS_PORT' : 'PRECOMPUTE_METRICS_PORT';
    const svc = new Service(name, { ...this.env, ...env, [portVar]: String(port) }, port);
    this.services.push(svc);
    const probe = name === 'api' ? `http://127.0.0.1:${port}/readyz` : `http://127.0.0.1:${port}/healthz`;
    await waitFor(
      async () => {
        if (!svc.alive) throw new Error(`${name} exited: ${svc.output.slice(-2000)}`);
        return (await fetch(probe).then((r) => r.ok, () => false)) ? true : undefined;
      },
      60_000,
      `${name} to answer`,
    ).catch((e) => {
      throw new Error(`${(e as Error).message}\n${svc.output.slice(-2000)}`);
    });
    if (name === 'api') this.apiPort = port;
    return svc;
  }

  of(name: ServiceName): Service[] {
    return this.services.filter((s) => s.name === name && s.alive);
  }

  /** Everything every service printed (killed ones included). */
  output(): string {
    return this.services.map((s) => s.output).join('\n');
  }

  async close(): Promise<void> {
    await Promise.all(this.queues.splice(0).map((q) => q.close()));
    await Promise.all(this.services.map((s) => s.stop()));
    rmSync(this.diskDir, { recursive: true, force: true });
  }
}

/** Waits until a batch is `completed`; returns its record. */
export function batchCompleted(batches: BatchStore, tenant: string, id: string, ms: number, what = `batch ${id} to complete`): Promise<BatchRecord> {
  return waitFor(
    async () => {
      const b = await batches.get(tenant, id);
      return b?.status === 'completed' ? b : undefined;
    },
    ms,
    what,
  );
}

export async function scrape(port: number): Promise<string> {
  return (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
}

/** Sum of a metric's samples whose labels contain every `match` pair. */
export function metricSum(text: string, name: string, match: Record<string, string> = {}): number {
  let sum = 0;
  for (const line of text.split('\n')) {
    if (!line.startsWith(name)) continue;
    const m = /^([a-zA-Z_:][\w:]*)(\{[^}]*\})?\s+(\S+)/.exec(line);
    if (!m || m[1] !== name) continue;
    const labels = m[2] ?? '';
    if (Object.entries(match).every(([k, v]) => labels.includes(`${k}="${v}"`))) sum += Number(m[3]);
  }
  return sum;
}

export async function httpJson(base: string, method: string, path: string, body?: unknown, headers: Record<string, string> = {}) {
  const t0 = Date.now();
  const res = await fetch(`${base}${path}`, {
    method,
    headers: body === undefined ? headers : { 'content-type': 'application/json', ...headers },
    body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
  });
  const text = await res.text();
  let json: any;
  try {
    json = JSON.parse(text);
  } catch {
    json = undefined;
  }
  return { status: res.status, headers: res.headers, body: json, text, ms: Date.now() - t0 };
}
