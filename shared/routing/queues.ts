import { Queue, type QueueOptions } from 'bullmq';
import { QUEUES } from '../queue/contracts';
import type { RoutingKeys } from './keys';
import { workerQueueName } from './keys';
import type { RedisLike } from './residency';

/**
 * The API's inference queues: the shared one (any worker takes its jobs) and each worker's own, opened when first
 * used on the same connection. `known()` lists every worker that ever had a queue (the index's `queues` set), for
 * what must look at all of them: cancelling a batch, counting what waits.
 */
export class InferenceQueues {
  readonly shared: Queue;
  private readonly own = new Map<string, Queue>();

  constructor(
    private readonly opts: QueueOptions,
    private readonly redis: RedisLike,
    private readonly keys: RoutingKeys,
    shared?: Queue,
    private readonly onError?: (e: Error) => void,
  ) {
    this.shared = shared ?? new Queue(QUEUES.inference, opts);
  }

  /** A worker's own queue. */
  of(workerId: string): Queue {
    let q = this.own.get(workerId);
    if (!q) {
      q = new Queue(workerQueueName(workerId), this.opts);
      if (this.onError) q.on('error', this.onError);
      this.own.set(workerId, q);
    }
    return q;
  }

  /** Every worker id that ever had a queue. */
  async known(): Promise<string[]> {
    return (await this.redis.smembers(this.keys.queues)).sort();
  }

  /** The shared queue and every worker's. */
  async all(): Promise<Queue[]> {
    return [this.shared, ...(await this.known()).map((id) => this.of(id))];
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

  async close(): Promise<void> {
    await Promise.allSettled([this.shared.close(), ...[...this.own.values()].map((q) => q.close())]);
  }
}
