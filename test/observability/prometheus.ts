/**
 * A real Prometheus for tests: Debian's `prometheus` binary on a free port, a generated config scraping the given
 * targets every second, storage in a temp folder. Start, wait for scrapes, query, stop.
 *
 *   const prom = await startPrometheus({ jobs: [{ job: 'worker', targets: ['127.0.0.1:9101'] }] });
 *   await prom.waitForScrapes(2);
 *   const rows = await prom.query('sum(rate(epic_requests_total[15s]))');
 *   await prom.stop();
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { freePort } from '../helpers/net';

/** Path of a runnable binary: `$envVar` if set, else the first `name` on PATH; undefined when absent. */
export function findBinary(name: string, envVar?: string): string | undefined {
  const fromEnv = envVar ? process.env[envVar] : undefined;
  const candidate = fromEnv || name;
  const r = spawnSync(candidate, ['--version'], { stdio: 'ignore' });
  return r.error || r.status !== 0 ? undefined : candidate;
}

export const findPrometheus = () => findBinary('prometheus', 'PROMETHEUS_BIN');
export const findPromtool = () => findBinary('promtool', 'PROMTOOL_BIN');

export interface ScrapeJob {
  job: string;
  /** host:port */
  targets: string[];
  metricsPath?: string;
}

export interface StartOptions {
  jobs: ScrapeJob[];
  /** Scrape and evaluation interval (default 1s). */
  scrapeInterval?: string;
  binary?: string;
  /** Longest wait for /-/ready (default 20 s). */
  readyTimeoutMs?: number;
  extraArgs?: string[];
}

/** One row of an instant vector or scalar result. */
export interface Sample {
  metric: Record<string, string>;
  /** The value as Prometheus wrote it ("NaN", "+Inf" included). */
  value: string;
}

export interface QueryResult {
  resultType: 'vector' | 'scalar' | 'matrix' | 'string';
  samples: Sample[];
}

export interface PrometheusServer {
  readonly url: string;
  readonly port: number;
  /** The temp folder: config and TSDB. */
  readonly dir: string;
  readonly configFile: string;
  /** Instant query; throws with Prometheus' message on a bad expression. */
  query(expr: string, time?: Date): Promise<QueryResult>;
  /** /api/v1/targets activeTargets. */
  targets(): Promise<Array<{ scrapePool: string; scrapeUrl: string; health: string; lastError: string; labels: Record<string, string> }>>;
  /** Waits until every target is up and has been scraped at least `n` times (rate() needs 2). */
  waitForScrapes(n?: number, timeoutMs?: number): Promise<void>;
  /** Recent stdout/stderr of the process (for failure messages). */
  logs(): string;
  stop(): Promise<void>;
}

export async function startPrometheus(opts: StartOptions): Promise<PrometheusServer> {
  const binary = opts.binary ?? findPrometheus();
  if (!binary) throw new Error('prometheus binary not found (Debian/Ubuntu: apt-get install prometheus; or set PROMETHEUS_BIN)');
  const interval = opts.scrapeInterval ?? '1s';
  const dir = mkdtempSync(path.join(tmpdir(), 'epic-prom-'));
  const configFile = path.join(dir, 'prometheus.yml');
  // JSON is YAML: no serializer needed.
  const config = {
    global: { scrape_interval: interval, scrape_timeout: interval, evaluation_interval: interval },
    scrape_configs: opts.jobs.map((j) => ({
      job_name: j.job,
      metrics_path: j.metricsPath ?? '/metrics',
      static_configs: [{ targets: j.targets }],
    })),
  };
  writeFileSync(configFile, JSON.stringify(config, null, 2));
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const child: ChildProcess = spawn(
    binary,
    [
      `--config.file=${configFile}`,
      `--storage.tsdb.path=${path.join(dir, 'data')}`,
      `--web.listen-address=127.0.0.1:${port}`,
      '--storage.tsdb.retention.time=1h',
      '--log.level=warn',
      ...(opts.extraArgs ?? []),
    ],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let log = '';
  const keep = (b: Buffer) => {
    log = (log + b.toString()).slice(-8000);
  };
  child.stdout?.on('data', keep);
  child.stderr?.on('data', keep);
  let exited: { code: number | null; signal: NodeJS.Signals | null } | undefined;
  const exit = new Promise<void>((resolve) =>
    child.once('exit', (code, signal) => {
      exited = { code, signal };
      resolve();
    }),
  );
  const cleanup = () => rmSync(dir, { recursive: true, force: true });

  const stop = async () => {
    if (!exited) {
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
      await exit;
      clearTimeout(timer);
    }
    cleanup();
  };

  const api = async <T>(p: string): Promise<T> => {
    const res = await fetch(url + p);
    const body = (await res.json()) as { status: string; data: T; error?: string; errorType?: string };
    if (body.status !== 'success') throw new Error(`prometheus ${p}: ${body.errorType ?? res.status}: ${body.error ?? ''}`);
    return body.data;
  };

  // ready?
  const deadline = Date.now() + (opts.readyTimeoutMs ?? 20_000);
  for (;;) {
    if (exited) {
      cleanup();
      throw new Error(`prometheus exited (${exited.code ?? exited.signal}) before ready:\n${log}`);
    }
    try {
      const r = await fetch(`${url}/-/ready`);
      if (r.ok) break;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) {
      await stop();
      throw new Error(`prometheus not ready after ${opts.readyTimeoutMs ?? 20_000} ms:\n${log}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }

  const server: PrometheusServer = {
    url,
    port,
    dir,
    configFile,
    async query(expr: string, time?: Date): Promise<QueryResult> {
      const qs = new URLSearchParams({ query: expr });
      if (time) qs.set('time', String(time.getTime() / 1000));
      const data = await api<{ resultType: QueryResult['resultType']; result: unknown }>(`/api/v1/query?${qs}`);
      if (data.resultType === 'vector') {
        const rows = data.result as Array<{ metric: Record<string, string>; value: [number, string] }>;
        return { resultType: 'vector', samples: rows.map((r) => ({ metric: r.metric, value: r.value[1] })) };
      }
      if (data.resultType === 'scalar' || data.resultType === 'string') {
        const v = data.result as [number, string];
        return { resultType: data.resultType, samples: [{ metric: {}, value: v[1] }] };
      }
      const rows = data.result as Array<{ metric: Record<string, string>; values: Array<[number, string]> }>;
      return { resultType: 'matrix', samples: rows.map((r) => ({ metric: r.metric, value: r.values[r.values.length - 1]?.[1] ?? 'NaN' })) };
    },
    async targets() {
      const data = await api<{ activeTargets: Array<{ scrapePool: string; scrapeUrl: string; health: string; lastError: string; labels: Record<string, string> }> }>('/api/v1/targets?state=active');
      return data.activeTargets;
    },
    async waitForScrapes(n = 2, timeoutMs = 20_000) {
      const expected = opts.jobs.reduce((k, j) => k + j.targets.length, 0);
      const end = Date.now() + timeoutMs;
      let last = '';
      for (;;) {
        try {
          const ts = await server.targets();
          const down = ts.filter((t) => t.health !== 'up');
          if (ts.length >= expected && !down.length) {
            // `up` has one sample per scrape of each target
            const r = await server.query(`min(count_over_time(up[1h]))`);
            const have = Number(r.samples[0]?.value ?? 0);
            if (have >= n) return;
            last = `${have} of ${n} scrapes`;
          } else {
            last = down.map((t) => `${t.scrapeUrl}: ${t.health} ${t.lastError}`).join('; ') || `${ts.length} of ${expected} targets`;
          }
        } catch (e) {
          last = (e as Error).message;
        }
        if (Date.now() > end) throw new Error(`prometheus: targets not scraped ${n} times after ${timeoutMs} ms (${last})\n${log}`);
        await new Promise((r) => setTimeout(r, 200));
      }
    },
    logs: () => log,
    stop,
  };
  return server;
}
