/**
 * The API's error classification against the errors a real ioredis connection raises when its real redis-server goes
 * away (issue #21, bug 3): by class and code, never by message text.
 */
import express from 'express';
import type { AddressInfo } from 'node:net';
import IORedis from 'ioredis';
import { MaxRetriesPerRequestError } from 'ioredis/built/errors';
import { errorHandlerWith, isRedisDown, type ConnectionState } from '../../services/api/errors';
import { producerConnection } from '../../shared/queue/connection';
import { RedisServer } from '../faults/procs';

async function failure(p: Promise<unknown>): Promise<Error> {
  try {
    await p;
  } catch (e) {
    return e as Error;
  }
  throw new Error('expected a failure');
}

/** What a real Express app with the API's error handler answers for `err`. */
async function answer(err: unknown, queue?: ConnectionState) {
  const app = express();
  app.get('/', () => {
    throw err;
  });
  app.use(errorHandlerWith(undefined, undefined, queue));
  const server = app.listen(0, '127.0.0.1');
  await new Promise((r) => server.once('listening', r));
  try {
    const res = await fetch(`http://127.0.0.1:${(server.address() as AddressInfo).port}/`);
    return { status: res.status, retryAfter: res.headers.get('retry-after'), code: ((await res.json()) as any).error.code };
  } finally {
    server.close();
  }
}

describe('isRedisDown with real connection errors', () => {
  let redis: RedisServer;
  beforeAll(async () => {
    redis = await RedisServer.start();
  });
  afterAll(async () => {
    await redis?.stop();
  });

  test('a command in flight when the queue Redis dies: MaxRetriesPerRequestError (its message never said "MaxRetriesPerRequest"), 503', async () => {
    await redis.start();
    const c = producerConnection(redis.url);
    c.on('error', () => undefined);
    try {
      await new Promise((r) => c.once('ready', r));
      const blocked = failure(c.blpop('epic-test:never', 30));
      await redis.stop(true);
      const e = await blocked;
      expect(e).toBeInstanceOf(MaxRetriesPerRequestError);
      expect(e.message).not.toMatch(/MaxRetriesPerRequest/);
      expect(isRedisDown(e)).toBe(true);
      expect(await answer(e)).toEqual({ status: 503, retryAfter: '1', code: 'queue_unavailable' });

      // While it is down, ioredis refuses commands with a bare Error: the queue's connection state tells.
      const refused = await failure(c.get('epic-test:k'));
      expect(Object.getPrototypeOf(refused)).toBe(Error.prototype);
      expect(c.status).not.toBe('ready');
      expect(isRedisDown(refused, c)).toBe(true);
      expect(await answer(refused, c)).toEqual({ status: 503, retryAfter: '1', code: 'queue_unavailable' });
      // A bug is not an outage, even during one; nor is a bare Error while the queue answers.
      expect(isRedisDown(new TypeError('x is undefined'), c)).toBe(false);
      expect(await answer(new TypeError('x is undefined'), c)).toEqual({ status: 500, retryAfter: null, code: null });
      expect(isRedisDown(refused, { status: 'ready' })).toBe(false);
    } finally {
      c.disconnect();
    }
  });

  test("a socket that closed before ioredis's status changed: the bare Error it refuses with is an outage (its socket tells), 503", async () => {
    await redis.start();
    const c = producerConnection(redis.url);
    c.on('error', () => undefined);
    try {
      await new Promise((r) => c.once('ready', r));
      // The moment the full suite caught (issue #21 bug 3's burst): the queue Redis's socket has closed, ioredis has not
      // yet seen the close, so its status still reads 'ready' and it refuses the next command with a bare Error.
      c.stream.destroy();
      const refused = await failure(c.get('epic-test:k'));
      expect(Object.getPrototypeOf(refused)).toBe(Error.prototype);
      expect(c.status).toBe('ready');
      expect(isRedisDown(refused, c)).toBe(true);
      expect(await answer(refused, c)).toEqual({ status: 503, retryAfter: '1', code: 'queue_unavailable' });
    } finally {
      c.disconnect();
    }
  });

  test('a connection refused: its code (ECONNREFUSED), 503', async () => {
    await redis.stop();
    const c = new IORedis(redis.url, { lazyConnect: true, retryStrategy: () => null });
    const emitted = new Promise<Error>((r) => c.once('error', r));
    c.connect().catch(() => undefined);
    const e = await emitted;
    c.disconnect();
    expect((e as { code?: string }).code).toBe('ECONNREFUSED');
    expect(isRedisDown(e)).toBe(true);
    expect(isRedisDown(new Error('wrapped', { cause: e }))).toBe(true);
    expect(await answer(e)).toEqual({ status: 503, retryAfter: '1', code: 'queue_unavailable' });
  });
});
