/**
 * At least 10,000 malformed, random and hostile requests against the real API process (with a worker, so requests that
 * happen to be valid are served): no 5xx, no crash, a JSON 4xx for every bad request, a well-formed 2xx otherwise.
 * Seeded (FUZZ_SEED), bounded in count (FUZZ_COUNT) and time, loopback only.
 */
import { Agent } from 'node:http';
import { judge, nextRequest, rng, send, type Pools } from './fuzz';
import { waitFor } from '../helpers/net';
import { httpJson, ProcStack, RedisServer } from './procs';

const SEED = Number(process.env.FUZZ_SEED ?? 20250826);
const COUNT = Number(process.env.FUZZ_COUNT ?? 10_000);
const CONCURRENCY = 16;
const KEYS = { valid: 'sk-fuzz-3f9a1c', other: 'sk-other-77d2e0' };

describe('API fuzz', () => {
  let redis: RedisServer;
  let s: ProcStack | undefined;
  beforeAll(async () => {
    redis = await RedisServer.start();
  });
  afterAll(async () => {
    await s?.close();
    await redis?.stop();
  });

  test(`${COUNT} hostile requests: no 5xx, no crash, JSON errors`, async () => {
    s = await ProcStack.start({
      redis,
      services: [],
      env: { API_KEYS: `${KEYS.valid}:fuzz,${KEYS.other}:other`, REQUEST_TIMEOUT_MS: '60000', LOG_LEVEL: 'warn' },
    });
    await Promise.all([s.add('api'), s.add('worker')]);
    const api = s.of('api')[0];
    api.sampleRss();
    const r = rng(SEED);
    const pools: Pools = { documents: [], jobs: [], files: [], batches: [] };
    const agent = new Agent({ keepAlive: true, maxSockets: CONCURRENCY });
    const statuses: Record<string, number> = {};
    const byRoute: Record<string, Record<string, number>> = {};
    const problems = new Map<string, { n: number; example: string }>();
    let sent = 0;
    let transport = 0;
    const t0 = Date.now();
    const deadline = t0 + 150_000;
    const one = async () => {
      while (sent < COUNT && Date.now() < deadline) {
        const q = nextRequest(r, pools, KEYS);
        sent++;
        try {
          const a = await send(api.port, agent, q, 30_000);
          statuses[a.status] = (statuses[a.status] ?? 0) + 1;
          const route = `${q.method} ${q.path.split('?')[0].replace(/^(\/v1\/\w+)\/[^/]+/, '$1/:id').slice(0, 40)}`;
          const rs = (byRoute[route] ??= {});
          rs[a.status] = (rs[a.status] ?? 0) + 1;
          const bad = judge(q, a);
          if (bad) {
            const k = bad.slice(0, 60);
            const p = problems.get(k) ?? { n: 0, example: `${q.label} → ${bad}` };
            p.n++;
            problems.set(k, p);
          } else if (a.status < 300 && q.method === 'POST' && q.headers.authorization === `Bearer ${KEYS.valid}` && String(a.headers['content-type']).startsWith('application/json')) {
            // (the pools hold the main tenant's objects; the other tenant's requests reach them as someone else's)
            const j = JSON.parse(a.body.toString());
            if (q.path === '/v1/documents') pools.documents.push(j.id);
            else if (q.path === '/v1/jobs') pools.jobs.push(j.id);
            else if (q.path === '/v1/files') pools.files.push(j.id);
            else if (q.path === '/v1/batches') pools.batches.push(j.id);
          }
        } catch (e) {
          transport++;
          const k = `transport: ${(e as Error).message}`.slice(0, 60);
          const p = problems.get(k) ?? { n: 0, example: `${q.label} → ${(e as Error).message}` };
          p.n++;
          problems.set(k, p);
        }
      }
    };
    await Promise.all(Array.from({ length: CONCURRENCY }, one)).finally(() => agent.destroy());
    const seconds = (Date.now() - t0) / 1000;
    // Every job and batch the fuzz created finishes (completed, or cancelled by a fuzzed cancel): none is stuck.
    const auth = { authorization: `Bearer ${KEYS.valid}` };
    const stuck = async () => {
      const out: string[] = [];
      for (const id of pools.jobs) {
        const j = (await httpJson(s!.base, 'GET', `/v1/jobs/${id}?results=true`, undefined, auth)).body;
        if (['completed', 'cancelled'].includes(j?.status)) continue;
        const c = redis.client();
        const states = await Promise.all(Array.from({ length: j?.total ?? 0 }, (_, i) => c.hmget(`${s!.env.QUEUE_PREFIX}:inference-batch:${id}-${i}`, 'failedReason', 'finishedOn', 'attemptsMade')));
        c.disconnect();
        out.push(`${id}: ${JSON.stringify({ ...j, results: j?.results?.map((r: any) => r.index) })} jobs: ${JSON.stringify(states)}`);
      }
      for (const id of pools.batches) if (!['completed', 'cancelled'].includes((await httpJson(s!.base, 'GET', `/v1/batches/${id}`, undefined, auth)).body?.status)) out.push(id);
      return out;
    };
    const unfinished = await waitFor(async () => {
      const left = await stuck();
      return left.length ? undefined : left;
    }, 30_000, 'every created job and batch to finish').catch(async () => stuck());
    const alive = api.alive && s.services.every((x) => x.alive);
    const health = await httpJson(s.base, 'GET', '/healthz');
    const fiveXX = Object.entries(statuses).filter(([k]) => Number(k) >= 500).reduce((n, [, v]) => n + v, 0);
    const summary = { seed: SEED, sent, seconds, statuses, fiveXX, transportErrors: transport, crashes: alive ? 0 : 1, apiPeakRssMb: api.peakRssMb(), created: Object.fromEntries(Object.entries(pools).map(([k, v]) => [k, v.length])) };
    console.log(`fuzz: ${JSON.stringify(summary)}\nby route: ${JSON.stringify(Object.fromEntries(Object.entries(byRoute).filter(([, v]) => Object.values(v).reduce((a, b) => a + b) >= 20)))}`);
    const report = [...problems.values()].sort((a, b) => b.n - a.n).map((p) => `${p.n}× ${p.example}`);
    // A 5xx's cause is in the API's log (and a worker's, when it failed the request): show it with the failure.
    if (report.length || unfinished.length) console.log(`service logs, failures:\n${s.output().split('\n').filter((l) => /"level":(40|50|60)/.test(l)).slice(-20).join('\n')}`);
    expect(report).toEqual([]);
    expect(unfinished).toEqual([]);
    expect(sent).toBeGreaterThanOrEqual(COUNT);
    expect({ fiveXX, alive, health: health.status }).toEqual({ fiveXX: 0, alive: true, health: 200 });
  }, 240_000);
});
