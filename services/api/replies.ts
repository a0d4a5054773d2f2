import { randomUUID } from 'node:crypto';
import type IORedis from 'ioredis';
import type { Reply } from '../../shared/queue/contracts';
import type { ServeResult } from '../../shared/serving/result';
import { WorkerError } from './errors';

/**
 * Results of this API process's interactive requests, pushed by the worker on one channel per process (the
 * reply-queue pattern of RPC over a broker). It takes BullMQ's job completion off the client's wait; runOne falls
 * back to the job's record (`jobOutcome`) when a reply is late, which covers jobs that fail outside a worker and lost
 * messages.
 */
export class Replies {
  readonly channel: string;
  private readonly waiting = new Map<string, { resolve: (r: ServeResult) => void; reject: (e: Error) => void }>();
  private readonly onMessage = (ch: string, msg: string) => {
    if (ch !== this.channel) return;
    let r: Reply;
    try {
      r = JSON.parse(msg) as Reply;
    } catch {
      return;
    }
    if (!r || typeof r !== 'object' || typeof r.id !== 'string') return;
    const w = this.waiting.get(r.id);
    if (!w) return;
    this.waiting.delete(r.id);
    if (r.result) w.resolve(r.result);
    else w.reject(new WorkerError(r.error ?? 'the request failed'));
  };

  private constructor(
    private readonly subscriber: IORedis,
    channelOf: (instance: string) => string,
  ) {
    this.channel = channelOf(randomUUID());
  }

  /** Subscribe (on the API's subscriber connection) before any request can name the channel. */
  static async open(subscriber: IORedis, channelOf: (instance: string) => string): Promise<Replies> {
    const r = new Replies(subscriber, channelOf);
    subscriber.on('message', r.onMessage);
    await subscriber.subscribe(r.channel);
    return r;
  }

  /** A promise for request `id`'s reply; call before enqueueing. `cancel` forgets it. */
  wait(id: string): { promise: Promise<ServeResult>; cancel: () => void } {
    const promise = new Promise<ServeResult>((resolve, reject) => this.waiting.set(id, { resolve, reject }));
    // An error reply can arrive before the caller awaits (even before its enqueue returns): never unhandled.
    promise.catch(() => undefined);
    return { promise, cancel: () => this.waiting.delete(id) };
  }

  get pending(): number {
    return this.waiting.size;
  }

  async close(): Promise<void> {
    this.subscriber.off('message', this.onMessage);
    await this.subscriber.unsubscribe(this.channel).catch(() => undefined);
  }
}
