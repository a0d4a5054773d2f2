import type { Queue } from 'bullmq';
import type { InferenceQueues } from '../../shared/routing';
import { ApiError } from './errors';

/**
 * The inference queue's cap (MAX_QUEUE_DEPTH): new work past it is refused with 429 and nothing is enqueued.
 *
 * Counting the queue is a Redis round trip on every request's path. It is skipped while the queue is far from the
 * cap: when a count at most `freshMs` old, plus what this process has admitted since, plus the new work, stays within
 * half the cap. Past half the cap every admission counts the queue exactly. So the cap is exact where it matters;
 * below half of it, work admitted by other API processes in the last `freshMs` is not seen, which would take more
 * than cap/2 admissions in that window to matter.
 */
export class Admission {
  private counted = 0;
  private countedAt = -Infinity;
  /** Admitted by this process since the last count. */
  private since = 0;

  constructor(
    private readonly countWaiting: () => Promise<number>,
    readonly cap: number,
    private readonly freshMs = 250,
  ) {}

  /** Admit `adding` requests, or throw the 429 (queue_full). */
  async admit(adding: number): Promise<void> {
    if (performance.now() - this.countedAt <= this.freshMs && this.counted + this.since + adding <= this.cap / 2) {
      this.since += adding;
      return;
    }
    const waiting = await this.countWaiting();
    this.counted = waiting;
    this.countedAt = performance.now();
    this.since = 0;
    if (waiting + adding > this.cap) {
      throw new ApiError(429, `the queue is full (${waiting} requests waiting, cap ${this.cap}); retry later`, 'rate_limit_error', null, 'queue_full', 2);
    }
    this.since += adding;
  }
}

/**
 * Admission to the inference queues (the shared one and every worker's own), or to one queue: it counts what waits to
 * run (waiting, delayed, prioritized).
 */
export function queueAdmission(queues: Pick<InferenceQueues, 'countWaiting'> | Queue, cap: number): Admission {
  const count = 'countWaiting' in queues ? () => queues.countWaiting() : () => queues.getJobCountByTypes('waiting', 'delayed', 'prioritized');
  return new Admission(count, cap);
}
