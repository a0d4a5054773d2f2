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
