/**
 * npm run bench:qos [-- --model DIR --batch 3000 --small 100 --rate 2 --interactive 30 --clients 16 --window 20]
 *
 * Quality of service on the whole system (npm start's processes: API, one inference worker, precompute worker) on free
 * ports with its own prefixes, two tenants (A and B, by API key), documents ingested for each and warm. Requests are
 * RAG-style: 8 documents and a question, 4 tokens, attnlink (the API's default mode); batch requests and interactive
 * completions are the same kind of request. In one run:
 *  0. Baselines on the idle system: B's interactive completions sent at --rate per second (--interactive of them);
 *     B's batch of --small alone (POST /v1/jobs until it completes).
 *  1. A's batch of --batch requests runs; B's batch of --small is sent: `small_tenant_batch_slowdown` = its completion
 *     time ÷ alone (fair share of two tenants: 2).
 *  2. A's batch still running; B's same interactive completions at --rate per second:
 *     `interactive_p50_ratio_loaded_vs_idle` (and p90) = latency (client's) loaded ÷ idle.
 *  3. A's batch cancelled; --clients closed-loop interactive clients (B) saturate the worker while A's new batch waits:
 *     over --window seconds, `batch_share_under_interactive_load` = batch requests served ÷ all requests served (the
 *     worker's epic_qos_served_requests_total{class}).
 * Writes bench/results/qos.json.
 */
import { existsSync, readFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { ROOT, machine, modelDirFromArgs, quantile, startOwnStack, table, writeResult } from './common';

function rng(seed: number) {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

const KEYS = { a: 'bench-qos-key-a', b: 'bench-qos-key-b' } as const;
type Tenant = keyof typeof KEYS;

async function call(base: string, tenant: Tenant, method: string, path: string, body?: unknown): Promise<{ status: number; json: any; ms: number }> {
  const t0 = performance.now();
  const r = await fetch(`${base}${path}`, {
    method,
    headers: { authorization: `Bearer ${KEYS[tenant]}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const json = await r.json().catch(() => undefined);
  return { status: r.status, json, ms: performance.now() - t0 };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function scrapeServed(port: number): Promise<{ interactive: number; batch: number }> {
  const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  const out = { interactive: 0, batch: 0 };
  for (const line of text.split('\n')) {
    const m = /^epic_qos_served_requests_total\{[^}]*class="(interactive|batch)"[^}]*\} ([0-9.e+]+)/.exec(line);
    if (m) out[m[1] as 'interactive' | 'batch'] += Number(m[2]);
  }
  return out;
}

async function main() {
  const { values } = parseArgs({
    options: {
      model: { type: 'string' },
      batch: { type: 'string' },
      small: { type: 'string' },
      rate: { type: 'string' },
      interactive: { type: 'string' },
      clients: { type: 'string' },
      window: { type: 'string' },
    },
  });
  const modelDir = values.model ?? modelDirFromArgs([]);
  const nBatch = Number(values.batch ?? 3000);
  const nSmall = Number(values.small ?? 100);
  const rate = Number(values.rate ?? 2);
  const nInteractive = Number(values.interactive ?? 30);
  const nClients = Number(values.clients ?? 16);
  const windowS = Number(values.window ?? 20);

  const evalFile = join(ROOT, 'data', 'eval', 'qa-heldout.jsonl');
  let corpus: string[];
  let questions: string[];
  if (modelDir.endsWith('epic-qa') && existsSync(evalFile)) {
    const lines = readFileSync(evalFile, 'utf8').split('\n').filter(Boolean);
    const items = lines.slice(0, 8).map((l) => JSON.parse(l));
    corpus = items.flatMap((i: { documents: string[] }) => [0, 2, 4, 6].map((k) => `${i.documents[k]} ${i.documents[k + 1]}`));
    questions = lines.map((l) => JSON.parse(l).question);
  } else {
    const words = 'the a an of to in and is was on for with by at from as it that this he she they his her their what where who when which lives works born city company'.split(' ');
    const r = rng(1);
    const sent = () => Array.from({ length: 10 }, () => words[Math.floor(r() * words.length)]).join(' ') + ' .';
    corpus = Array.from({ length: 32 }, () => Array.from({ length: 25 }, sent).join(' '));
    questions = Array.from({ length: 500 }, () => `Q : ${sent()} ? A :`);
  }

  const stack = await startOwnStack('qos', modelDir, { API_KEYS: `${KEYS.a}:tenant-a,${KEYS.b}:tenant-b` });
  const wm = stack.workerMetricsPort;
  const load0 = loadavg()[0];
  try {
    await stack.up(120_000);
    const base = stack.base;
    // Each tenant's documents (a tenant reads only its own), warm before anything is timed.
    const ids: Record<Tenant, string[]> = { a: [], b: [] };
    for (const t of ['a', 'b'] as const) {
      for (const text of corpus) {
        const r = await call(base, t, 'POST', '/v1/documents', { text });
        if (r.status !== 201) throw new Error(`ingest failed: ${JSON.stringify(r.json)}`);
        ids[t].push(r.json.id);
      }
      for (const id of ids[t]) {
        for (let k = 0; k < 600; k++) {
          const d = (await call(base, t, 'GET', `/v1/documents/${id}`)).json;
          if (d.warm_chunks === d.chunks) break;
          await sleep(100);
        }
      }
    }
    const pick = (t: Tenant, seed: number) => {
      const r = rng(seed);
      const a = [...ids[t]];
      for (let i = a.length - 1; i > 0; i--) {
        const j = Math.floor(r() * (i + 1));
        [a[i], a[j]] = [a[j], a[i]];
      }
      return a.slice(0, 8);
    };
    const batchOf = (t: Tenant, n: number, seed: number) => Array.from({ length: n }, (_, i) => ({ documents: pick(t, seed * 100_003 + i), question: questions[i % questions.length], max_tokens: 4 }));
    const completions = Array.from({ length: nInteractive }, (_, i) => ({ documents: pick('b', 7 + i), prompt: questions[(i * 7) % questions.length], max_tokens: 4 }));

    /** B's completions sent at `rate` per second (open loop): each one's latency as its client saw it (ms). */
    const interactiveRun = async () => {
      const t0 = performance.now();
      const runs = completions.map(async (body, i) => {
        await sleep(Math.max(0, t0 + (i * 1000) / rate - performance.now()));
        const r = await call(base, 'b', 'POST', '/v1/completions', body);
        if (r.status !== 200) throw new Error(`completion: ${r.status} ${JSON.stringify(r.json)}`);
        return r.ms;
      });
      return Promise.all(runs);
    };
    /** A batch from POST until its status is completed (ms), polled every 50 ms. */
    const submit = async (t: Tenant, n: number, seed: number) => {
      const t0 = performance.now();
      const r = await call(base, t, 'POST', '/v1/jobs', { requests: batchOf(t, n, seed) });
      if (r.status !== 202) throw new Error(`batch: ${r.status} ${JSON.stringify(r.json)}`);
      return { id: r.json.id as string, t0 };
    };
    const progress = async (t: Tenant, id: string) => (await call(base, t, 'GET', `/v1/jobs/${id}`)).json as { status: string; completed: number; failed: number; total: number };
    const finish = async (t: Tenant, b: { id: string; t0: number }) => {
      for (;;) {
        const p = await progress(t, b.id);
        if (p.status === 'completed') return performance.now() - b.t0;
        await sleep(50);
      }
    };

    // Warm-up: the worker's memory tier holds both tenants' chunks the timed runs use (each tenant's are its own, salted
    // apart); the engine has seen the shapes.
    await interactiveRun();
    await finish('b', await submit('b', nSmall, 1));
    await finish('a', await submit('a', Math.min(nBatch, 400), 3));

    // 0. Baselines on the idle system.
    const idle = await interactiveRun();
    const smallAlone = await finish('b', await submit('b', nSmall, 2));
    console.log(`idle: completions p50 ${quantile(idle, 0.5).toFixed(1)} ms p90 ${quantile(idle, 0.9).toFixed(1)} ms; B's batch of ${nSmall} alone ${(smallAlone / 1000).toFixed(2)} s`);

    // 1. A's large batch runs; B's small batch.
    const big = await submit('a', nBatch, 3);
    const postMs = performance.now() - big.t0;
    await sleep(1000);
    const aBeforeSmall = await progress('a', big.id);
    const smallLoaded = await finish('b', await submit('b', nSmall, 2));
    const aAfterSmall = await progress('a', big.id);
    console.log(`B's batch with A's running: ${(smallLoaded / 1000).toFixed(2)} s (A done ${aBeforeSmall.completed} -> ${aAfterSmall.completed} of ${nBatch})`);

    // 2. Interactive completions while A's batch runs.
    const loaded = await interactiveRun();
    const aAfterInteractive = await progress('a', big.id);
    console.log(`loaded: completions p50 ${quantile(loaded, 0.5).toFixed(1)} ms p90 ${quantile(loaded, 0.9).toFixed(1)} ms (A done ${aAfterInteractive.completed} of ${nBatch})`);
    await call(base, 'a', 'POST', `/v1/jobs/${big.id}/cancel`);

    // 3. Interactive load saturates the worker; A's batch waits beside it.
    let stop = false;
    let answered = 0;
    const client = async (c: number) => {
      for (let k = 0; !stop; k++) {
        const r = await call(base, 'b', 'POST', '/v1/completions', completions[(c * 5 + k) % completions.length]);
        if (r.status !== 200) throw new Error(`completion: ${r.status} ${JSON.stringify(r.json)}`);
        answered++;
      }
    };
    const clients = Array.from({ length: nClients }, (_, c) => client(c));
    await sleep(1000);
    const sat = await submit('a', Math.max(2000, nBatch), 4);
    await sleep(2000);
    const before = await scrapeServed(wm);
    await sleep(windowS * 1000);
    const after = await scrapeServed(wm);
    const aSat = await progress('a', sat.id);
    stop = true;
    await Promise.all(clients);
    await call(base, 'a', 'POST', `/v1/jobs/${sat.id}/cancel`);
    const served = { interactive: after.interactive - before.interactive, batch: after.batch - before.batch };
    const share = served.batch / (served.batch + served.interactive);

    const results = {
      interactive_p50_ratio_loaded_vs_idle: quantile(loaded, 0.5) / quantile(idle, 0.5),
      interactive_p90_ratio_loaded_vs_idle: quantile(loaded, 0.9) / quantile(idle, 0.9),
      small_tenant_batch_slowdown: smallLoaded / smallAlone,
      batch_share_under_interactive_load: share,
    };
    const targets = { interactive_p50_ratio_loaded_vs_idle: '<= 2', interactive_p90_ratio_loaded_vs_idle: '<= 3', small_tenant_batch_slowdown: '<= 2.5', batch_share_under_interactive_load: '>= 0.15' };
    const met = {
      interactive_p50_ratio_loaded_vs_idle: results.interactive_p50_ratio_loaded_vs_idle <= 2,
      interactive_p90_ratio_loaded_vs_idle: results.interactive_p90_ratio_loaded_vs_idle <= 3,
      small_tenant_batch_slowdown: results.small_tenant_batch_slowdown <= 2.5,
      batch_share_under_interactive_load: results.batch_share_under_interactive_load >= 0.15,
    };
    const figures = {
      idle_ms: { p50: quantile(idle, 0.5), p90: quantile(idle, 0.9) },
      loaded_ms: { p50: quantile(loaded, 0.5), p90: quantile(loaded, 0.9) },
      small_batch_s: { alone: smallAlone / 1000, with_large_running: smallLoaded / 1000 },
      large_batch: { post_s: postMs / 1000, completed_before_small: aBeforeSmall.completed, completed_after_small: aAfterSmall.completed, completed_after_interactive: aAfterInteractive.completed, total: nBatch },
      saturation: { clients: nClients, window_s: windowS, served, completions_answered: answered, batch_completed_in_scenario: aSat.completed },
    };
    console.log(
      table(
        Object.entries(results).map(([k, v]) => ({ figure: k, value: Number(v.toFixed(3)), target: targets[k as keyof typeof targets], met: met[k as keyof typeof met] ? 'yes' : 'NO' })),
      ),
    );
    console.log(JSON.stringify(figures));
    const file = writeResult('qos', {
      ...results,
      targets,
      met,
      figures,
      settings: { model: modelDir, batch: nBatch, small: nSmall, rate_per_s: rate, interactive: nInteractive, clients: nClients, window_s: windowS, workers: 1, batch_min_share: process.env.BATCH_MIN_SHARE ?? '0.2 (default)', batch_step_while_interactive: process.env.BATCH_STEP_WHILE_INTERACTIVE ?? 'default' },
      load_average: { start: load0, end: loadavg()[0] },
      machine: machine(),
    });
    console.log(`wrote ${file}`);
  } finally {
    await stack.stop();
  }
}

main().then(
  () => process.exit(0),
  (e) => {
    console.error(e);
    process.exit(1);
  },
);
