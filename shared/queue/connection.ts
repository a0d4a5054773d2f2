import IORedis, { type RedisOptions } from 'ioredis';

/**
 * Redis connections as BullMQ's maintainers advise: workers block, so their connection retries forever
 * (`maxRetriesPerRequest: null`); producers inside HTTP handlers fail fast (`enableOfflineQueue: false`).
 */
export function workerConnection(url: string, extra: RedisOptions = {}): IORedis {
  return new IORedis(url, { maxRetriesPerRequest: null, ...extra });
}

export function producerConnection(url: string, extra: RedisOptions = {}): IORedis {
  return new IORedis(url, { maxRetriesPerRequest: 1, enableOfflineQueue: false, ...extra });
}
