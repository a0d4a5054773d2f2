import type { DefaultJobOptions } from 'bullmq';

/** Job defaults: bounded retention (finished jobs are otherwise kept forever), retries with backoff. */
export function defaultJobOptions(attempts: number): DefaultJobOptions {
  return {
    attempts,
    backoff: { type: 'exponential', delay: 500 },
    removeOnComplete: { age: 3600, count: 10_000 },
    removeOnFail: { age: 24 * 3600, count: 10_000 },
  };
}
