import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { Redis } from 'ioredis';
import { Registry } from 'prom-client';
import { parse } from 'yaml';
import { loadServiceConfig } from '../../shared/config';
import { createAllMetrics } from '../../shared/metrics/metrics';
import { freePort, waitFor } from '../helpers/net';
import { findBinary } from './prometheus';
import { REPO, dashboardQueries, expandGrafanaVariables, loadDashboards, metricNames, seriesNames } from './promql';

/** Static checks of infra/ and grafana/: everything the compose stack references exists and agrees. */

const INFRA = path.join(REPO, 'infra');
const read = (p: string) => readFileSync(path.join(REPO, p), 'utf8');
const yaml = (p: string) => parse(read(p), { merge: true }) as Record<string, unknown>;

interface ComposeService {
  image?: string;
  build?: { context: string; dockerfile?: string };
  command?: string[] | string;
  environment?: Record<string, string | number | boolean>;
  ports?: string[];
  expose?: string[];
  volumes?: string[];
  depends_on?: string[] | Record<string, { condition: string }>;
  healthcheck?: { test: string[] };
}
interface Compose {
  services: Record<string, ComposeService>;
  volumes?: Record<string, unknown>;
}

const compose = yaml('infra/docker-compose.yml') as unknown as Compose;
const services = compose.services;
const APP = ['api', 'worker', 'precompute'] as const;

/**
 * `src:target[:mode]` → parts; a bind source (./, ../, /) is resolved against infra/. A lone container path is an
 * anonymous volume: each container (each replica) gets its own.
 */
function mounts(s: ComposeService) {
  return (s.volumes ?? []).map((v) => {
    if (!v.includes(':')) return { source: undefined, target: v, mode: undefined, bind: false, anonymous: true, hostPath: undefined };
    const [source, target, mode] = v.split(':');
    const bind = /^(\.{1,2}\/|\/)/.test(source);
    return { source, target, mode, bind, anonymous: false, hostPath: bind ? path.resolve(INFRA, source) : undefined };
  });
}

/** Container ports a service offers (ports "host:container" / "ip:host:container", expose "n"). */
function containerPorts(s: ComposeService): number[] {
  return [...(s.ports ?? []).map((p) => Number(String(p).split(':').pop())), ...(s.expose ?? []).map(Number)];
}

function envOf(s: ComposeService): Record<string, string> {
  return Object.fromEntries(Object.entries(s.environment ?? {}).map(([k, v]) => [k, String(v)]));
}

describe('docker-compose.yml', () => {
  test('parses and has the whole stack', () => {
    expect(Object.keys(services).sort()).toEqual(['api', 'grafana', 'precompute', 'prometheus', 'redis-kv', 'redis-queue', 'worker']);
  });

  test('every bind mount source exists in the repo; every named volume is declared and used', () => {
    const declared = new Set(Object.keys(compose.volumes ?? {}));
    const used = new Set<string>();
    for (const [name, s] of Object.entries(services)) {
      for (const m of mounts(s)) {
        expect(m.target).toMatch(/^\//);
        if (m.bind) {
          expect([name, m.source, existsSync(m.hostPath!)]).toEqual([name, m.source, true]);
          expect(m.hostPath!.startsWith(REPO + path.sep)).toBe(true);
        } else if (!m.anonymous) {
          expect([name, m.source, declared.has(m.source!)]).toEqual([name, m.source, true]);
          used.add(m.source!);
        }
      }
    }
    expect([...declared].sort()).toEqual([...used].sort());
  });

  test('every depends_on names a service', () => {
    for (const s of Object.values(services)) {
      const deps = Array.isArray(s.depends_on) ? s.depends_on : Object.keys(s.depends_on ?? {});
      for (const d of deps) expect(Object.keys(services)).toContain(d);
    }
  });

  test('the app services build infra/Dockerfile from the repo and start services/<SERVICE>/main.ts', () => {
    const dockerfile = read('infra/Dockerfile');
    expect(dockerfile).toMatch(/ONNXRUNTIME_NODE_INSTALL=skip/);
    expect(dockerfile).toMatch(/RUN npm ci\b/);
    expect(dockerfile).toContain('exec node --import tsx services/${SERVICE}/main.ts');
    // every COPY source exists
    for (const m of dockerfile.matchAll(/^COPY\s+(.+)\s+\S+$/gm)) {
      for (const src of m[1].split(/\s+/)) if (src !== '.') expect([src, existsSync(path.join(REPO, src))]).toEqual([src, true]);
    }
    for (const name of APP) {
      const s = services[name];
      expect(s.build).toBeDefined();
      const context = path.resolve(INFRA, s.build!.context);
      expect(context).toBe(REPO);
      const file = path.resolve(context, s.build!.dockerfile ?? 'Dockerfile');
      expect(file).toBe(path.join(INFRA, 'Dockerfile'));
      expect(existsSync(file)).toBe(true);
      const env = envOf(s);
      expect(env.SERVICE).toBe(name);
      expect(existsSync(path.join(REPO, 'services', env.SERVICE, 'main.ts'))).toBe(true);
    }
    // the Dockerfile-specific ignore file keeps dependencies and caches out of the build context
    const ignore = read('infra/Dockerfile.dockerignore');
    expect(ignore).toMatch(/node_modules/);
    expect(existsSync(path.join(REPO, '.npmrc'))).toBe(true);
  });

  test('app environments are valid shared/config.ts configs whose ports the services publish', () => {
    // Dockerfile ENV defaults, overridden by compose environment
    const imageEnv = Object.fromEntries(
      [...read('infra/Dockerfile').matchAll(/^\s*(?:ENV\s+)?([A-Z_]+)=(\S+?)\s*\\?$/gm)].map((m) => [m[1], m[2]]),
    );
    expect(imageEnv.KV_DISK_DIR).toBe('/var/lib/epic/kv');
    for (const name of APP) {
      const s = services[name];
      const env = { ...imageEnv, ...envOf(s) };
      const cfg = loadServiceConfig(env as NodeJS.ProcessEnv);
      expect(new URL(cfg.REDIS_URL).hostname).toBe('redis-queue');
      expect(new URL(cfg.KV_REDIS_URL).hostname).toBe('redis-kv');
      expect(new URL(cfg.REDIS_URL).port).toBe('6379');
      expect(new URL(cfg.KV_REDIS_URL).port).toBe('6379');
      const port = name === 'api' ? cfg.API_PORT : name === 'worker' ? cfg.WORKER_METRICS_PORT : cfg.PRECOMPUTE_METRICS_PORT;
      expect([name, containerPorts(s)]).toEqual([name, [port]]);
      if (name === 'api') expect(cfg.API_HOST).toBe('0.0.0.0');
      else expect(env.METRICS_HOST).toBe('0.0.0.0');
      // the healthcheck probes the same port
      expect(JSON.stringify(s.healthcheck?.test)).toContain(`127.0.0.1:${port}/`);
      // the disk KV tier is on a volume
      if (name !== 'api') expect(mounts(s).some((m) => m.target === cfg.KV_DISK_DIR && !m.bind)).toBe(true);
      // a worker replica's disk tier is its own (the routing index holds what each worker's disk has): not a named
      // volume that every replica of `--scale worker=N` would share
      if (name === 'worker') expect(mounts(s).find((m) => m.target === cfg.KV_DISK_DIR)?.anonymous).toBe(true);
    }
  });

  test('each Redis runs its own config file from infra/', () => {
    for (const [name, conf] of [
      ['redis-queue', 'redis-queue.conf'],
      ['redis-kv', 'redis-kv.conf'],
    ]) {
      const s = services[name];
      const cmd = s.command as string[];
      expect(cmd[0]).toBe('redis-server');
      const m = mounts(s).find((v) => v.target === cmd[1]);
      expect(m?.hostPath).toBe(path.join(INFRA, conf));
      expect(m?.mode).toBe('ro');
    }
    expect(mounts(services['redis-queue']).some((m) => m.target === '/data' && !m.bind)).toBe(true);
  });

  test('Prometheus mounts the docker scrape config, whose targets are the compose services on their ports', () => {
    const s = services.prometheus;
    const configArg = (s.command as string[]).find((a) => a.startsWith('--config.file='))!.split('=')[1];
    const m = mounts(s).find((v) => v.target === configArg);
    expect(m?.hostPath).toBe(path.join(INFRA, 'prometheus.docker.yml'));
    const prom = yaml('infra/prometheus.docker.yml') as { scrape_configs: Array<{ job_name: string; metrics_path?: string; dns_sd_configs?: Array<{ names: string[]; port: number }> }> };
    const jobs = Object.fromEntries(prom.scrape_configs.map((j) => [j.job_name, j]));
    for (const name of APP) {
      const j = jobs[name];
      expect(j?.metrics_path ?? '/metrics').toBe('/metrics');
      const sd = j.dns_sd_configs![0];
      expect(sd.names).toEqual([name]);
      expect(containerPorts(services[name])).toContain(sd.port);
    }
  });

  test('the local scrape config targets the services on their default ports', () => {
    const cfg = loadServiceConfig({});
    const prom = yaml('infra/prometheus.yml') as { scrape_configs: Array<{ job_name: string; static_configs?: Array<{ targets: string[] }> }> };
    const targets = Object.fromEntries(prom.scrape_configs.map((j) => [j.job_name, j.static_configs?.[0]?.targets]));
    expect(targets.api).toEqual([`127.0.0.1:${cfg.API_PORT}`]);
    // the workers: the list npm start writes (file-based discovery, relative to infra/), as many as WORKERS
    const workerJob = prom.scrape_configs.find((j) => j.job_name === 'worker') as unknown as { file_sd_configs: Array<{ files: string[] }> };
    expect(workerJob.file_sd_configs.map((f) => path.resolve(INFRA, f.files[0]))).toEqual([cfg.PROMETHEUS_SD_FILE]);
    expect(targets.precompute).toEqual([`127.0.0.1:${cfg.PRECOMPUTE_METRICS_PORT}`]);
    // no `service` target label: it would rename the services' own `service` label to exported_service
    expect(read('infra/prometheus.yml')).not.toMatch(/^\s+service:/m);
    expect(read('infra/prometheus.docker.yml')).not.toMatch(/target_label:\s*service/);
  });

  test('Grafana mounts the provisioning and the dashboards its provider reads', () => {
    const s = services.grafana;
    const ms = mounts(s);
    expect(ms.find((m) => m.target === '/etc/grafana/provisioning')?.hostPath).toBe(path.join(REPO, 'grafana', 'provisioning'));
    const providers = (yaml('grafana/provisioning/dashboards/epic.yaml') as { providers: Array<{ type: string; options: { path: string } }> }).providers;
    expect(providers).toHaveLength(1);
    expect(providers[0].type).toBe('file');
    const dash = ms.find((m) => m.target === providers[0].options.path);
    expect(dash?.hostPath).toBe(path.join(REPO, 'grafana', 'dashboards'));
    expect(statSync(dash!.hostPath!).isDirectory()).toBe(true);
    const home = envOf(s).GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH;
    expect(existsSync(path.join(dash!.hostPath!, path.relative(providers[0].options.path, home)))).toBe(true);

    const ds = (yaml('grafana/provisioning/datasources/prometheus.yaml') as { datasources: Array<{ type: string; uid: string; url: string }> }).datasources;
    expect(ds).toHaveLength(1);
    expect(ds[0].type).toBe('prometheus');
    const url = new URL(ds[0].url);
    expect(url.hostname).toBe('prometheus');
    expect(containerPorts(services.prometheus)).toContain(Number(url.port));
  });
});

describe('Redis configs', () => {
  const conf = (file: string) => {
    const out: Record<string, string> = {};
    for (const line of read(file).split('\n')) {
      const t = line.trim();
      if (!t || t.startsWith('#')) continue;
      const i = t.indexOf(' ');
      out[t.slice(0, i)] = t.slice(i + 1).trim();
    }
    return out;
  };

  test('queue: noeviction + AOF every second; KV: bounded, allkeys-lru, nothing persisted', () => {
    const q = conf('infra/redis-queue.conf');
    expect(q['maxmemory-policy']).toBe('noeviction');
    expect(q.appendonly).toBe('yes');
    expect(q.appendfsync).toBe('everysec');
    const kv = conf('infra/redis-kv.conf');
    expect(kv['maxmemory-policy']).toBe('allkeys-lru');
    expect(kv.maxmemory).toMatch(/^\d+[kmg]b?$/i);
    expect(kv.save).toBe('""');
    expect(kv.appendonly).toBe('no');
  });

  const redisServer = findBinary('redis-server');
  (redisServer ? test : test.skip).each([
    ['redis-queue.conf', { 'maxmemory-policy': 'noeviction', appendonly: 'yes', appendfsync: 'everysec' }],
    ['redis-kv.conf', { 'maxmemory-policy': 'allkeys-lru', appendonly: 'no', save: '', maxmemory: String(2 * 1024 ** 3) }],
  ])('a real redis-server loads %s', async (file, expected) => {
    const dir = mkdtempSync(path.join(tmpdir(), 'epic-redis-conf-'));
    const port = await freePort();
    const child = spawn(redisServer!, [path.join(INFRA, file), '--port', String(port), '--bind', '127.0.0.1'], { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] });
    let log = '';
    child.stdout.on('data', (b: Buffer) => (log += b.toString()));
    const exited = new Promise((r) => child.once('exit', r));
    const redis = new Redis({ port, host: '127.0.0.1', lazyConnect: true, retryStrategy: () => 50, maxRetriesPerRequest: 1 });
    try {
      await waitFor(async () => ((await redis.ping().catch(() => undefined)) === 'PONG' ? true : undefined), 5000, `redis-server with ${file}: ${log}`);
      for (const [k, v] of Object.entries(expected)) {
        const got = (await redis.config('GET', k)) as string[];
        expect([k, got[1]]).toEqual([k, v]);
      }
    } finally {
      redis.disconnect();
      child.kill('SIGTERM');
      await exited;
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('Grafana dashboards', () => {
  const dashboards = loadDashboards();
  let defined: Map<string, string>;
  beforeAll(async () => {
    const registry = new Registry();
    createAllMetrics(registry); // process metrics included
    defined = await seriesNames(registry);
  });

  test('there is a dashboard, and every dashboard parses with unique panel ids inside a 24-column grid', () => {
    expect(dashboards.map((d) => d.file)).toContain('epic-serve.json');
    for (const { json } of dashboards) {
      const d = json as { uid: string; title: string; panels: Array<{ id: number; type: string; gridPos: { x: number; w: number } }> };
      expect(d.uid).toBeTruthy();
      const ids = d.panels.map((p) => p.id);
      expect(new Set(ids).size).toBe(ids.length);
      for (const p of d.panels) expect(p.gridPos.x + p.gridPos.w).toBeLessThanOrEqual(24);
    }
  });

  test('every PromQL metric name is defined by shared/metrics/metrics.ts', () => {
    const queries = dashboards.flatMap(({ file, json }) => dashboardQueries(json, file));
    expect(queries.length).toBeGreaterThan(20);
    const undefinedNames: string[] = [];
    for (const q of queries) {
      const names = metricNames(q.expr);
      expect([q.panel, q.expr, names.length > 0]).toEqual([q.panel, q.expr, true]);
      for (const n of names) if (!defined.has(n)) undefinedNames.push(`${q.dashboard} / ${q.panel} / ${q.refId}: ${n}`);
      // histogram_quantile reads buckets
      if (q.expr.includes('histogram_quantile')) expect(names.every((n) => n.endsWith('_bucket'))).toBe(true);
      // counters only under rate()/increase()
      for (const n of names) if (defined.get(n) === 'counter') expect(q.expr).toMatch(new RegExp(`(rate|increase)\\(${n}[{\\[]`));
    }
    expect(undefinedNames).toEqual([]);
  });

  test('every panel queries the provisioned Prometheus datasource', () => {
    const uid = (yaml('grafana/provisioning/datasources/prometheus.yaml') as { datasources: Array<{ uid: string }> }).datasources[0].uid;
    for (const { json } of dashboards) {
      for (const p of (json as { panels: Array<{ type: string; datasource?: { uid: string }; targets?: Array<{ datasource?: { uid: string } }> }> }).panels) {
        if (p.type === 'row') continue;
        expect(p.datasource?.uid).toBe(uid);
        for (const t of p.targets ?? []) expect(t.datasource?.uid).toBe(uid);
      }
    }
  });

  test('the issue #7 panels are there', () => {
    const d = dashboards.find((x) => x.file === 'epic-serve.json')!.json;
    const queries = dashboardQueries(d);
    const has = (title: RegExp, expr: RegExp) => expect([String(title), queries.some((q) => title.test(q.panel) && expr.test(q.expr))]).toEqual([String(title), true]);
    for (const quant of ['0.5', '0.9', '0.99']) has(/first token by mode/i, new RegExp(`histogram_quantile\\(${quant}, sum by \\(le, mode\\) \\(rate\\(epic_time_to_first_token_seconds_bucket`));
    has(/request throughput/i, /epic_requests_total/);
    has(/hit rate by tier/i, /sum by \(tier\).*epic_kv_chunk_lookups_total\{result="hit"\}/);
    has(/computed-token ratio/i, /epic_recomputed_tokens_total.*\/.*epic_prompt_tokens_total/);
    has(/cached-token ratio/i, /epic_cached_tokens_total.*\/.*epic_prompt_tokens_total/);
    has(/queue depth by state/i, /by \(queue, state\) \(epic_queue_jobs/);
    has(/KV bytes by tier/i, /sum by \(tier\) \(epic_kv_bytes\)/);
    has(/precompute backlog/i, /epic_precompute_backlog/);
    has(/errors/i, /epic_errors_total/);
  });
});

describe('promql helpers', () => {
  test('metricNames finds selectors and skips functions, labels, strings, durations and grouping', () => {
    expect(
      metricNames(
        'histogram_quantile(0.99, sum by (le, mode) (rate(epic_time_to_first_token_seconds_bucket{mode=~"attn.*", x="rate(y)"}[$__rate_interval]))) / on (mode) group_left(foo) epic_b offset 5m and epic_c @ 1700000000 > bool 1e3',
      ),
    ).toEqual(['epic_b', 'epic_c', 'epic_time_to_first_token_seconds_bucket']);
    expect(metricNames('sum without (instance) (max_over_time(epic_queue_jobs[5m:1m]))')).toEqual(['epic_queue_jobs']);
    expect(metricNames('{__name__="epic_kv_bytes", tier="memory"}')).toEqual(['epic_kv_bytes']);
    expect(metricNames('vector(1) + scalar(time())')).toEqual([]);
  });

  test('expandGrafanaVariables substitutes Grafana built-ins and refuses unknown variables', () => {
    expect(expandGrafanaVariables('rate(x[$__rate_interval]) + rate(y[${__interval}]) + z[$__range]', { rateInterval: '15s' })).toBe('rate(x[15s]) + rate(y[15s]) + z[1h]');
    expect(expandGrafanaVariables('x{mode="$mode"}', { vars: { mode: 'full' } })).toBe('x{mode="full"}');
    expect(() => expandGrafanaVariables('x{mode="$mode"}')).toThrow(/unknown Grafana variable/);
  });
});
