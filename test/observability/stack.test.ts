import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort, waitFor } from '../helpers/net';
import { postJson } from '../helpers/stack';
import { pipelineModel, workload } from '../helpers/workload';
import { findPrometheus, startPrometheus, type PrometheusServer } from './prometheus';
import { expandGrafanaVariables, loadDashboardQueries } from './promql';
import { dropOwnPrefixes, ownPrefixes } from '../helpers/redis';
import { tsArgs } from '../helpers/ts';

/**
 * The running stack (npm start's processes: API, inference worker, precompute worker) scraped by a real Prometheus
 * while a workload runs: every PromQL expression of every dashboard must return data.
 */
const ROOT = join(__dirname, '..', '..');
// The stack runs on the machine's Redis under these prefixes, dropped afterwards.
const PREFIXES = ownPrefixes(`epic-obs-${process.pid}`);
const prometheus = findPrometheus();
const it = prometheus ? test : test.skip;
if (!prometheus) console.warn('test/observability/stack.test.ts: SKIPPED: prometheus not found (apt-get install prometheus)');

describe('dashboards against the running stack', () => {
  let proc: ChildProcess | undefined;
  let prom: PrometheusServer | undefined;
  let kvDir: string | undefined;
  afterAll(async () => {
    await prom?.stop();
    if (proc && proc.exitCode === null) {
      const exited = new Promise((r) => proc!.once('exit', r));
      proc.kill('SIGTERM');
      await exited;
    }
    if (kvDir) rmSync(kvDir, { recursive: true, force: true });
    if (proc) await dropOwnPrefixes(PREFIXES);
  });

  it('every dashboard expression returns data', async () => {
    const [api, wm, pm] = [await freePort(), await freePort(), await freePort()];
    kvDir = mkdtempSync(join(tmpdir(), 'epic-stack-kv-'));
    const env = {
      ...process.env,
      API_PORT: String(api),
      WORKER_METRICS_PORT: String(wm),
      PRECOMPUTE_METRICS_PORT: String(pm),
      ...PREFIXES,
      KV_DISK_DIR: kvDir,
      MODEL_DIR: pipelineModel(),
      LOG_LEVEL: 'warn',
    };
    proc = spawn(process.execPath, tsArgs(join(ROOT, 'services', 'start.ts')), { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    proc.stdout!.on('data', (d) => (out += d));
    proc.stderr!.on('data', (d) => (out += d));
    await waitFor(async () => (out.includes('epic-serve is up') ? true : undefined), 60_000, 'the stack');
    prom = await startPrometheus({
      jobs: [
        { job: 'api', targets: [`127.0.0.1:${api}`] },
        { job: 'worker', targets: [`127.0.0.1:${wm}`] },
        { job: 'precompute', targets: [`127.0.0.1:${pm}`] },
      ],
    });
    const base = `http://127.0.0.1:${api}`;
    const w = workload(pipelineModel(), 4);
    const docs: string[] = [];
    for (const text of w.documents) docs.push((await postJson(base, '/v1/documents', { text })).body.id);
    // Traffic for ~12 s across every mode, a bad request now and then, while Prometheus scrapes every second.
    const modes = ['full', 'prefix', 'naive', 'attnlink', 'attnlink0', 'cacheblend'];
    const end = Date.now() + 12_000;
    let i = 0;
    while (Date.now() < end) {
      const mode = modes[i % modes.length];
      // ignore_eos: several generated tokens per request, so time-per-output-token has data whatever the model says.
      const r = await postJson(base, '/v1/completions', { prompt: w.questions[i % w.questions.length], max_tokens: 3, documents: docs, mode, ignore_eos: i % 2 === 0 });
      expect(r.status).toBe(200);
      if (i % 5 === 0) expect((await postJson(base, '/v1/completions', { prompt: 5 })).status).toBe(400);
      if (i % 7 === 0) await postJson(base, '/v1/jobs', { requests: [{ documents: docs.slice(0, 2), question: w.questions[0], max_tokens: 2 }] });
      i++;
    }
    await prom.waitForScrapes(3);
    const empty: string[] = [];
    const queries = loadDashboardQueries();
    for (const q of queries) {
      const expr = expandGrafanaVariables(q.expr, { rateInterval: '30s' });
      const r = await prom.query(expr);
      if (!r.samples.length) empty.push(`${q.panel} / ${q.refId}: ${expr}`);
    }
    expect({ requests: i, empty }).toEqual({ requests: i, empty: [] });
    expect(queries.length).toBeGreaterThan(20);
  }, 150_000);
});
