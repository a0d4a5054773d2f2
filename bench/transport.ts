/**
 * The transport floor for bench:pipeline: the same path a completion takes (HTTP with express.json → BullMQ add on a
 * hash-tagged prefix with the service's job options → a BullMQ worker → the result published on the API's reply
 * channel → the HTTP answer), with a job of the same size, but no model, no documents and no validation. The worker
 * keeps its core busy for as long as the real worker computed (a spin, so the other processes sit idle as long as
 * in the real run: on a small VM, waking an idle core is much of every hop's cost). What it takes beyond that spin is
 * what HTTP, Redis and BullMQ cost on this machine, the part of the pipeline's overhead no code of ours can remove.
 *
 * `measureTransportFloor` starts the two processes (this file, as `api` and `worker`), sends the requests, stops them.
 */
import { fork } from 'node:child_process';
import { Agent, request as httpRequest } from 'node:http';
import { Queue, Worker } from 'bullmq';
import express from 'express';
import { CatalogKeys } from '../shared/catalog';
import { producerConnection, workerConnection } from '../shared/queue/connection';
import { defaultJobOptions } from '../shared/queue/options';
import { Replies } from '../services/api/replies';
import { freePort } from '../test/helpers/net';
import { quantile } from './common';

interface FloorEnv {
  REDIS_URL: string;
  PREFIX: string;
  PORT: string;
  /** Token ids the job carries (the real job's size). */
  TOKENS: string;
}

async function api(env: FloorEnv): Promise<void> {
  const redis = producerConnection(env.REDIS_URL);
  const queue = new Queue('floor', { connection: redis, prefix: env.PREFIX, defaultJobOptions: defaultJobOptions(3) });
  const replies = await Replies.open(workerConnection(env.REDIS_URL), (id) => new CatalogKeys(`${env.PREFIX}:api`).reply(id));
  const tokens = Array.from({ length: Number(env.TOKENS) }, (_, i) => (i * 7919) % 500);
  const app = express();
  app.use(express.json());
  let n = 0;
  app.post('/floor', async (req, res) => {
    const id = `f${n++}`;
    const reply = replies.wait(id);
    try {
      await queue.add('request', { id, spinMs: Number(req.body.spin_ms) || 0, tokens, replyTo: replies.channel }, { jobId: id });
      res.json(await reply.promise);
    } catch (e) {
      res.status(500).json({ error: (e as Error).message });
    } finally {
      reply.cancel();
    }
  });
  app.listen(Number(env.PORT), '127.0.0.1', () => process.send!('ready'));
}

async function worker(env: FloorEnv): Promise<void> {
  const publisher = workerConnection(env.REDIS_URL);
  const w = new Worker(
    'floor',
    async (job) => {
      const t0 = performance.now();
      while (performance.now() - t0 < job.data.spinMs);
      const result = { id: job.data.id, text: '', tokens: job.data.tokens.length, prefillMs: performance.now() - t0, decodeMs: 0 };
      void publisher.publish(job.data.replyTo, JSON.stringify({ id: job.data.id, result }));
      return result;
    },
    { connection: workerConnection(env.REDIS_URL), prefix: env.PREFIX, concurrency: 16 },
  );
  await w.waitUntilReady();
  process.send!('ready');
}

export async function measureTransportFloor(opts: { redisUrl: string; runs: number; warmup: number; spinMs: number; tokens: number; tag: string }): Promise<{ p50: number; p90: number }> {
  const port = await freePort();
  const prefix = `{epic-floor-${opts.tag}}`;
  const env: FloorEnv = { REDIS_URL: opts.redisUrl, PREFIX: prefix, PORT: String(port), TOKENS: String(opts.tokens) };
  const kids = ['api', 'worker'].map((role) => fork(__filename, [role], { env: { ...process.env, ...env }, execArgv: ['--import', 'tsx'], stdio: 'inherit' }));
  const agent = new Agent({ keepAlive: true, maxSockets: 1 });
  try {
    await Promise.all(kids.map((k) => new Promise((resolve, reject) => (k.once('message', resolve), k.once('exit', (c) => reject(new Error(`transport floor: a process exited (${c})`)))))));
    const body = Buffer.from(JSON.stringify({ spin_ms: opts.spinMs }));
    const post = () =>
      new Promise<number>((resolve, reject) => {
        const t0 = performance.now();
        const req = httpRequest(`http://127.0.0.1:${port}/floor`, { method: 'POST', agent, headers: { 'content-type': 'application/json', 'content-length': body.length } }, (res) => {
          res.resume();
          res.on('end', () => (res.statusCode === 200 ? resolve(performance.now() - t0) : reject(new Error(`transport floor: HTTP ${res.statusCode}`))));
          res.on('error', reject);
        });
        req.setTimeout(30_000, () => req.destroy(new Error('transport floor: no answer in 30 s')));
        req.on('error', reject);
        req.end(body);
      });
    const over: number[] = [];
    for (let i = 0; i < opts.warmup + opts.runs; i++) {
      const ms = await post();
      if (i >= opts.warmup) over.push(ms - opts.spinMs);
    }
    return { p50: quantile(over, 0.5), p90: quantile(over, 0.9) };
  } finally {
    agent.destroy();
    for (const k of kids) k.kill('SIGKILL');
    const c = producerConnection(opts.redisUrl);
    const q = new Queue('floor', { connection: c, prefix });
    await q.obliterate({ force: true }).catch(() => undefined);
    await q.close();
    c.disconnect();
  }
}

if (require.main === module) {
  const role = process.argv[2];
  const env = process.env as unknown as FloorEnv;
  (role === 'api' ? api(env) : role === 'worker' ? worker(env) : Promise.reject(new Error(`unknown role ${role}`))).catch((e) => {
    console.error(`transport floor ${role}: ${(e as Error).message}`);
    process.exit(1);
  });
}
