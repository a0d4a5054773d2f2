import IORedis from 'ioredis';

/**
 * Delete every key that starts with one of `prefixes` (SCAN, then UNLINK in pages): what a bench or a test that ran the services
 * on a shared Redis wrote there under its own prefixes. Returns how many keys went.
 */
export async function dropKeys(redisUrl: string, prefixes: string[]): Promise<number> {
  const redis = new IORedis(redisUrl, { lazyConnect: true, maxRetriesPerRequest: 1 });
  let dropped = 0;
  try {
    await redis.connect();
    for (const prefix of prefixes) {
      // MATCH is a glob: escape its special characters so a prefix such as {epic-bench-1} is taken literally.
      const match = `${prefix.replace(/[*?[\]\\]/g, (c) => `\\${c}`)}*`;
      let cursor = '0';
      do {
        const [next, keys] = await redis.scan(cursor, 'MATCH', match, 'COUNT', 1000);
        cursor = next;
        if (keys.length) dropped += await redis.unlink(...keys);
      } while (cursor !== '0');
    }
  } finally {
    redis.disconnect();
  }
  return dropped;
}

/** Prefixes of their own for the services a test or bench runs on a shared Redis (queue, catalog, KV): set them as env. */
export function ownPrefixes(name: string): { QUEUE_PREFIX: string; CATALOG_PREFIX: string; KV_REDIS_PREFIX: string } {
  return { QUEUE_PREFIX: `{${name}}`, CATALOG_PREFIX: `${name}:{api}`, KV_REDIS_PREFIX: `${name}:kv` };
}

/** Drop what services run under `ownPrefixes` left: queue and catalog keys in the queue's Redis, KV keys in the KV Redis. */
export async function dropOwnPrefixes(p: ReturnType<typeof ownPrefixes>, env: NodeJS.ProcessEnv = process.env): Promise<void> {
  const queueRedis = env.REDIS_URL ?? 'redis://127.0.0.1:6379';
  await dropKeys(queueRedis, [p.QUEUE_PREFIX, p.CATALOG_PREFIX]);
  await dropKeys(env.KV_REDIS_URL ?? queueRedis, [p.KV_REDIS_PREFIX]);
}
