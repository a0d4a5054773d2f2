import type { Server } from 'node:http';
import { serveMetrics } from '../../shared/metrics/server';
import { freePort } from '../helpers/net';
import { sampleRegistry } from './fixtures';
import { findPrometheus, startPrometheus } from './prometheus';
import type { PrometheusServer } from './prometheus';
import { expandGrafanaVariables, loadDashboardQueries } from './promql';

/**
 * A real Prometheus (Debian's package) scrapes a prom-client registry served by shared/metrics/server.ts every
 * second; the helper queries it. Then every dashboard expression runs against it and must return data. This is the
 * harness for the end-to-end test against the running stack (the lead's), with a synthetic registry instead.
 */
const prometheus = findPrometheus();
const SKIP = 'SKIPPED: prometheus not found (apt-get install prometheus, or set PROMETHEUS_BIN)';
if (!prometheus) console.warn(`test/observability/prometheus.test.ts: ${SKIP}`);
const it = prometheus ? test : test.skip;

describe(prometheus ? 'a real Prometheus' : `a real Prometheus — ${SKIP}`, () => {
  let prom: PrometheusServer | undefined;
  const servers: Server[] = [];
  let timer: NodeJS.Timeout | undefined;

  afterAll(async () => {
    if (timer) clearInterval(timer);
    await prom?.stop();
    await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
  });

  it('starts, scrapes a prom-client registry at 1 s, answers queries, and stops', async () => {
    const worker = sampleRegistry('worker');
    const api = sampleRegistry('api');
    const ports = [await freePort(), await freePort()];
    servers.push(await serveMetrics(worker.registry, ports[0], '127.0.0.1'), await serveMetrics(api.registry, ports[1], '127.0.0.1'));
    // traffic between scrapes, so rates are not zero
    timer = setInterval(() => {
      worker.tick();
      api.tick();
    }, 250);

    prom = await startPrometheus({
      jobs: [
        { job: 'worker', targets: [`127.0.0.1:${ports[0]}`] },
        { job: 'api', targets: [`127.0.0.1:${ports[1]}`] },
      ],
    });
    await prom.waitForScrapes(2); // Prometheus hands new targets to its scrapers after ~5 s
    const targets = await prom.targets();
    expect(targets.map((t) => t.labels.job).sort()).toEqual(['api', 'worker']);
    expect(targets.every((t) => t.health === 'up')).toBe(true);

    const byService = await prom.query('sum by (service) (epic_requests_total)');
    expect(byService.resultType).toBe('vector');
    expect(Object.fromEntries(byService.samples.map((s) => [s.metric.service, Number(s.value) > 0]))).toEqual({ api: true, worker: true });
    // the services' own `service` label arrives unchanged (no exported_service)
    const labels = await prom.query('count by (service, exported_service) (epic_errors_total)');
    expect(labels.samples.every((s) => s.metric.exported_service === undefined)).toBe(true);

    const rate = await prom.query('sum(rate(epic_prompt_tokens_total[10s]))');
    expect(Number(rate.samples[0].value)).toBeGreaterThan(0);
    const scalar = await prom.query('scalar(sum(epic_precompute_backlog))');
    expect(scalar.resultType).toBe('scalar');
    await expect(prom.query('sum(rate(epic_requests_total[5m]')).rejects.toThrow(/bad_data/);
  });

  it('every dashboard expression parses and returns data', async () => {
    expect(prom).toBeDefined();
    const queries = loadDashboardQueries();
    expect(queries.length).toBeGreaterThan(20);
    const empty: string[] = [];
    for (const q of queries) {
      const expr = expandGrafanaVariables(q.expr, { rateInterval: '10s' });
      const r = await prom!.query(expr);
      if (!r.samples.length) empty.push(`${q.dashboard} / ${q.panel} / ${q.refId}: ${expr}`);
    }
    expect(empty).toEqual([]);
  });

  it('stop() ends the process and removes its folder', async () => {
    const p = prom!;
    prom = undefined;
    await p.stop();
    const { existsSync } = await import('node:fs');
    expect(existsSync(p.dir)).toBe(false);
    await expect(fetch(`${p.url}/-/ready`)).rejects.toThrow();
  });
});
