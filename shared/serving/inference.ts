import type { Job } from 'bullmq';
import type IORedis from 'ioredis';
import type { BatchStore, CatalogKeys } from '../catalog';
import type { TextTokenizer } from '../engine';
import { InferenceJob } from '../queue/contracts';
import type { ServeResult } from './request';
import type { Scheduler } from './scheduler';

export interface StreamEvent {
  delta?: string;
  done?: boolean;
  result?: ServeResult;
  error?: string;
}

export interface InferenceDeps {
  scheduler: Scheduler;
  batches: BatchStore;
  keys: CatalogKeys;
  /** Publishes stream events (a normal, non-subscriber connection). */
  publisher: IORedis;
  tokenizer: TextTokenizer;
}

/**
 * The inference worker's job processor: a request joins the scheduler's next round; its tokens are published as they
 * come when the client streams; a batch's result is recorded exactly once.
 */
export function inferenceProcessor(d: InferenceDeps) {
  return async (job: Job): Promise<ServeResult | { cancelled: true }> => {
    const data = InferenceJob.parse(job.data);
    if (data.batchId !== undefined) {
      const b = await d.batches.get(data.tenant, data.batchId);
      if (!b || b.status === 'cancelling' || b.status === 'cancelled') return { cancelled: true };
    }
    const channel = d.keys.stream(data.request.id);
    let onToken: ((t: number) => void) | undefined;
    if (data.stream) {
      const seen: number[] = [];
      let text = '';
      onToken = (t) => {
        seen.push(t);
        const now = d.tokenizer.decode(seen);
        const delta = now.startsWith(text) ? now.slice(text.length) : now;
        text = now;
        if (delta) void d.publisher.publish(channel, JSON.stringify({ delta } satisfies StreamEvent));
      };
    }
    try {
      const result = await d.scheduler.submit(data.request, onToken);
      if (data.batchId !== undefined) await d.batches.record(data.tenant, data.batchId, data.index ?? 0, true, result);
      if (data.stream) await d.publisher.publish(channel, JSON.stringify({ done: true, result } satisfies StreamEvent));
      return result;
    } catch (e) {
      if (data.stream) await d.publisher.publish(channel, JSON.stringify({ done: true, error: (e as Error).message } satisfies StreamEvent));
      throw e;
    }
  };
}

/** After a job's last attempt failed: record the failure in its batch, so the batch still completes. */
export async function recordFailure(batches: BatchStore, job: Job | undefined, err: Error): Promise<void> {
  if (!job) return;
  const parsed = InferenceJob.safeParse(job.data);
  if (!parsed.success || parsed.data.batchId === undefined) return;
  const attempts = job.opts.attempts ?? 1;
  if (job.attemptsMade < attempts) return;
  await batches.record(parsed.data.tenant, parsed.data.batchId, parsed.data.index ?? 0, false, { error: err.message });
}
