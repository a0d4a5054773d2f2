import { mkdtempSync, rmSync } from 'node:fs';
import type { Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Worker } from 'bullmq';
import IORedis from 'ioredis';
import { Registry } from 'prom-client';
import { CatalogKeys, TrackedCache, type DocumentRecord } from '../../shared/catalog';
import { Engine } from '../../shared/engine';
import { KVStore } from '../../shared/kvstore';
import { QUEUES, REQUEST_CLASSES } from '../../shared/queue/contracts';
import { FairQueuing, QosKeys } from '../../shared/qos';
import { sharedQueueName } from '../../shared/routing';
import { linkContextFactory } from '../../shared/serving/context';
import { inferenceProcessor, recordFailure } from '../../services/worker/processor';
import { PrecomputeJob, precomputeChunk } from '../../shared/serving/precompute';
import { Scheduler } from '../../shared/serving/scheduler';
import { createApp } from '../../services/api/app';
import type { ApiDeps } from '../../services/api/deps';
import { wireApi } from '../../services/api/wiring';

export const REDIS = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';

export interface Stack {
  base: string;
  engine: Engine;
  deps: ApiDeps;
  kv: KVStore;
  scheduler: Scheduler;
  close: () => Promise<void>;
}

/**
 * The whole pipeline in one process against the real Redis: the API app on a free port, an inference worker and a
 * precompute worker (real BullMQ), a KV store with memory, disk and Redis tiers. Every key is under a unique prefix.
 */
export async function startStack(modelDir: string, opts: { apiKeys?: Map<string, string>; maxQueueDepth?: number; workerConcurrency?: number } = {}): Promise<Stack> {
  const tag = `${process.pid}-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 6)}`;
  const prefix = `{epic-test-${tag}}`;
  const keys = new CatalogKeys(`epic-test:{api-${tag}}`);
  const conns: IORedis[] = [];
  const conn = (o: object = {}) => {
    const c = new IORedis(REDIS, { maxRetriesPerRequest: null, ...o });
    conns.push(c);
    return c;
  };
  const engine = await Engine.load(modelDir);
  const diskDir = mkdtempSync(join(tmpdir(), 'epic-kv-'));
  const kvPrefix = `epic-test:kv-${tag}`;
  const kv = await KVStore.open({
    modelId: engine.id,
    shape: engine.shape,
    memory: { budgetBytes: 2 ** 30 },
    disk: { dir: diskDir, budgetBytes: 2 ** 30 },
    redis: { url: REDIS, prefix: kvPrefix },
  });
  const redis = conn();
  // As services/api/main.ts: documents cached in memory, invalidated by Redis; the rest wired as the service wires it.
  const docCache = await new TrackedCache<DocumentRecord>(REDIS, keys.docPrefix(), { max: 10_000 }).open();
  const deps = await wireApi({
    model: engine.config,
    tokenizer: engine.tokenizer,
    redis,
    subscriber: conn(),
    queueConnection: conn(),
    queuePrefix: prefix,
    jobAttempts: 3,
    keys,
    docCache,
    kvRedis: { url: REDIS, prefix: kvPrefix },
    registry: new Registry(),
    apiKeys: opts.apiKeys ?? new Map(),
    shareAcrossTenants: false,
    requestTimeoutMs: 60_000,
    maxQueueDepth: opts.maxQueueDepth ?? 100_000,
  });
  const { inference, precompute, batches, kv: apiKv } = deps;
  const replies = deps.replies!;
  const prefixStore = await KVStore.open({ modelId: engine.id, shape: engine.shape, memory: { budgetBytes: 2 ** 28 }, disk: false, redis: false });
  const scheduler = new Scheduler(linkContextFactory(engine, kv, prefixStore));
  const publisher = conn();
  const qosKeys = new QosKeys(prefix);
  const processor = inferenceProcessor({ scheduler, batches, keys, publisher, tokenizer: engine.tokenizer, qos: { fair: new FairQueuing(publisher, qosKeys), keys: qosKeys } });
  // The shared queue of each request class (no worker is in the routing index: the router sends every job there).
  const workers = REQUEST_CLASSES.map((cls) => new Worker(sharedQueueName(cls), processor, { connection: conn(), prefix, concurrency: opts.workerConcurrency ?? 32 }));
  for (const worker of workers) worker.on('failed', (job, err) => void recordFailure({ batches, publisher, keys }, job, err));
  const pworker = new Worker(QUEUES.precompute, async (job) => precomputeChunk(engine, kv, PrecomputeJob.parse(job.data)), { connection: conn(), prefix });
  const app = createApp(deps);
  const server: Server = await new Promise((resolve) => {
    const s = app.listen(0, '127.0.0.1', () => resolve(s));
  });
  const addr = server.address();
  const base = `http://127.0.0.1:${typeof addr === 'object' && addr ? addr.port : 0}`;
  return {
    base,
    engine,
    deps,
    kv,
    scheduler,
    close: async () => {
      server.closeAllConnections();
      server.close();
      await Promise.all(workers.map((w) => w.close()));
      await pworker.close();
      await replies.close();
      await docCache.close();
      await inference.obliterate({ force: true }).catch(() => undefined);
      await deps.router.queues.sharedBatch.obliterate({ force: true }).catch(() => undefined);
      await deps.router.queues.close();
      await precompute.obliterate({ force: true }).catch(() => undefined);
      await inference.close();
      await precompute.close();
      for (const pattern of [`${keys.prefix}:*`, `${kvPrefix}:*`, qosKeys.pattern()]) {
        let cursor = '0';
        do {
          const [next, found] = await redis.scan(cursor, 'MATCH', pattern, 'COUNT', 1000);
          cursor = next;
          if (found.length) await redis.del(...found);
        } while (cursor !== '0');
      }
      await kv.close();
      await prefixStore.close();
      await apiKv.close();
      for (const c of conns) c.disconnect();
      rmSync(diskDir, { recursive: true, force: true });
    },
  };
}

export async function postJson(base: string, path: string, body: unknown, headers: Record<string, string> = {}) {
  const res = await fetch(`${base}${path}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });
  return { status: res.status, headers: res.headers, body: (await res.json().catch(() => undefined)) as any };
}

export async function getJson(base: string, path: string, headers: Record<string, string> = {}) {
  const res = await fetch(`${base}${path}`, { headers });
  return { status: res.status, body: (await res.json().catch(() => undefined)) as any };
}
