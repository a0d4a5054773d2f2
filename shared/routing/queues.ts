import { Queue, type QueueOptions } from 'bullmq';
import { REQUEST_CLASSES, type RequestClass } from '../queue/contracts';
import type { RoutingKeys } from './keys';
import { sharedQueueName, workerQueueName } from './keys';
import type { RedisLike } from './residency';

/**
 * The API's inference queues, one per request class (interactive, batch) and target: the shared ones (any worker
 * takes their jobs) and each worker's own, opened when first used on the same connection. `known()` lists every worker
 * that ever had a queue (the index's `queues` set), for what must look at all of them: cancelling a batch, counting
 * what waits.
 */
export class InferenceQueues {
  /** The shared interactive queue (QUEUES.inference). */
  readonly shared: Queue;
  /** The shared batch queue. */
  readonly sharedBatch: Queue;
  private readonly own = new Map<string, Queue>();

  constructor(
    private readonly opts: QueueOptions,
    private readonly redis: RedisLike,
    private readonly keys: RoutingKeys,
    shared?: Queue,
    private readonly onError?: (e: Error) => void,
  ) {
    this.shared = shared ?? new Queue(sharedQueueName('interactive'), opts);
    this.sharedBatch = new Queue(sharedQueueName('batch'), opts);
    if (onError) this.sharedBatch.on('error', onError);
  }

  /** The shared queue of a class. */
  sharedOf(cls: RequestClass = 'interactive'): Queue {
    return cls === 'batch' ? this.sharedBatch : this.shared;
  }

  /** A worker's own queue of a class. */
  of(workerId: string, cls: RequestClass = 'interactive'): Queue {
    const name = workerQueueName(workerId, cls);
    let q = this.own.get(name);
    if (!q) {
      q = new Queue(name, this.opts);
      if (this.onError) q.on('error', this.onError);
      this.own.set(name, q);
    }
    return q;
  }

  /** Every worker id that ever had a queue. */
  async known(): Promise<string[]> {
    return (await this.redis.smembers(this.keys.queues)).sort();
  }

  /** The shared queues and every worker's, of both classes. */
  async all(): Promise<Queue[]> {
    const ids = await this.known();
    return [this.shared, this.sharedBatch, ...ids.flatMap((id) => REQUEST_CLASSES.map((c) => this.of(id, c)))];
  }

  /** Jobs that wait to run in every queue (waiting, delayed, prioritized): what admission caps. */
  async countWaiting(): Promise<number> {
    const counts = await Promise.all((await this.all()).map((q) => q.getJobCountByTypes('waiting', 'delayed', 'prioritized')));
    return counts.reduce((a, b) => a + b, 0);
  }

  /** Removes a job no worker holds, from whichever queue has it. Returns how many queues removed one (0 or 1). */
  async remove(jobId: string): Promise<number> {
    const removed = await Promise.all((await this.all()).map((q) => q.remove(jobId).catch(() => 0)));
    return removed.reduce((a: number, b) => a + b, 0);
  }

  /**
   * For each job id: whether some inference queue holds it waiting to start (its record is there and no worker has
   * started it: no processedOn). One pipeline over every queue (their keys share the prefix's slot).
   */
  async waitingIds(ids: string[]): Promise<boolean[]> {
    const names = (await this.all()).map((q) => q.name);
    const prefix = this.opts.prefix ?? 'bull';
    const p = this.redis.pipeline();
    for (const id of ids) for (const name of names) p.hmget(`${prefix}:${name}:${id}`, 'timestamp', 'processedOn');
    const res = (await p.exec()) ?? [];
    return ids.map((_, i) =>
      names.some((_, k) => {
        const [err, v] = res[i * names.length + k] ?? [null, null];
        const [timestamp, processedOn] = (v as (string | null)[] | null) ?? [null, null];
        return !err && timestamp !== null && processedOn === null;
      }),
    );
  }

  async close(): Promise<void> {
    await Promise.allSettled([this.shared.close(), this.sharedBatch.close(), ...[...this.own.values()].map((q) => q.close())]);
  }
}
