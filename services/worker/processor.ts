import { UnrecoverableError, type Job } from 'bullmq';
import type IORedis from 'ioredis';
import { z } from 'zod';
import type { BatchStore, CatalogKeys } from '../../shared/catalog';
import type { TextTokenizer } from '../../shared/engine';
import type { ErrorMetrics, QosMetrics, ServingMetrics } from '../../shared/metrics/metrics';
import type { FairQueuing, QosKeys } from '../../shared/qos';
import { InferenceJob, type Reply, type StreamEvent } from '../../shared/queue/contracts';
import { wallClockMs } from '../../shared/serving/request';
import type { ServeResult } from '../../shared/serving/result';
import type { Scheduler } from '../../shared/serving/scheduler';

export interface InferenceDeps {
  scheduler: Scheduler;
  batches: BatchStore;
  keys: CatalogKeys;
  /** Publishes stream events (a normal, non-subscriber connection). */
  publisher: IORedis;
  tokenizer: TextTokenizer;
  metrics?: ServingMetrics;
  errors?: ErrorMetrics;
  /** Called when a re-run job (its worker died after recording) found its result already recorded. */
  onDuplicate?: (job: Job) => void;
  /** Quality of service: a started job advances its queue's fair queuing and leaves its tenant's queued set. */
  qos?: { fair: FairQueuing; keys: QosKeys; metrics?: QosMetrics; onError?: (e: Error) => void };
}

/**
 * The inference worker's job processor: a request joins the scheduler's next round; its tokens are published as they
 * come when the client streams; a batch's result is recorded exactly once.
 */
export function inferenceProcessor(d: InferenceDeps) {
  return async (job: Job): Promise<ServeResult | { cancelled: true }> => {
    const pickedAt = wallClockMs();
    const parsed = InferenceJob.safeParse(job.data);
    if (!parsed.success) {
      // The API's request schemas (RequestSpec, ModeSpec) hold every bound this schema does, so this is a contract
      // fault (another producer, an API of another version): the client hears it now, not at its timeout, and
      // retrying cannot help.
      const message = `invalid job data: ${parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}`;
      const raw = (job.data ?? {}) as { replyTo?: unknown; stream?: unknown; request?: { id?: unknown }; tenant?: unknown; class?: unknown };
      const id = typeof raw.request?.id === 'string' ? raw.request.id : undefined;
      // It started (and ends here): it no longer counts as its tenant's queued request.
      if (d.qos && typeof raw.tenant === 'string') {
        const q = d.qos;
        void q.fair.started(job.queueName, q.keys.queued(raw.class === 'batch' ? 'batch' : 'interactive', raw.tenant), job.id!, undefined).catch((e: Error) => q.onError?.(e));
      }
      if (id && typeof raw.replyTo === 'string') await d.publisher.publish(raw.replyTo, JSON.stringify({ id, error: message } satisfies Reply)).catch(() => undefined);
      if (id && raw.stream === true) await endStream(d, id, message).catch(() => undefined);
      throw announced(new UnrecoverableError(message));
    }
    const data = parsed.data;
    const queueSeconds = job.processedOn && job.timestamp ? Math.max(0, (job.processedOn - job.timestamp) / 1000) : undefined;
    if (d.qos) {
      const q = d.qos;
      q.metrics?.started(data.class, data.tenant, queueSeconds);
      // Not awaited: the virtual time and the queued count follow, the request does not wait for them.
      void q.fair.started(job.queueName, q.keys.queued(data.class, data.tenant), job.id!, data.tag).catch((e: Error) => q.onError?.(e));
    }
    if (data.stream && job.stalledCounter > 0 && (await d.publisher.exists(d.keys.streamBegan(data.request.id)))) {
      // A stream whose worker died under it after its first token: its client has seen some tokens, and a re-run would
      // send them again from the first. It ends here, with an error the client reads (streams are never retried; see
      // runStreaming). One that had sent nothing yet (it waited in the dead worker's scheduler) simply runs.
      const message = 'the worker serving this stream stopped; send the request again';
      await endStream(d, data.request.id, message).catch(() => undefined);
      throw announced(new UnrecoverableError(message));
    }
    if (data.batchId !== undefined) {
      const b = await d.batches.get(data.tenant, data.batchId);
      if (!b || b.status === 'cancelling' || b.status === 'cancelled') return { cancelled: true };
    }
    const channel = d.keys.stream(data.request.id);
    let onToken: ((t: number, delta: string) => void) | undefined;
    // Text streamed so far: always a prefix of the result's text (generation holds back split characters and possible
    // stop strings); the rest goes with the last event.
    let streamed = 0;
    if (data.stream) {
      let seen = 0;
      onToken = (_t, delta) => {
        // Before the first token goes out (same connection, so in order): the mark a re-run of this job looks for.
        if (!seen++) void d.publisher.set(d.keys.streamBegan(data.request.id), '1', 'EX', STREAM_MARK_TTL_S).catch(() => undefined);
        streamed += delta.length;
        if (delta) void d.publisher.publish(channel, JSON.stringify({ delta } satisfies StreamEvent));
      };
    }
    const started = Date.now();
    const sched = d.scheduler.stats();
    d.metrics?.requestsWaiting.set(sched.waiting + 1);
    const reply = (r: Omit<Reply, 'id'>) => (data.replyTo ? d.publisher.publish(data.replyTo, JSON.stringify({ id: data.request.id, ...r } satisfies Reply)) : undefined);
    try {
      const result = await d.scheduler.submit(data.request, onToken, data.class);
      result.worker = { pickedAt, doneAt: wallClockMs() };
      // The waiting client first: completing the job in BullMQ (and its event) follows.
      void reply({ result })?.catch(() => undefined);
      d.metrics?.record({
        mode: result.mode,
        status: 'ok',
        queueSeconds,
        // From enqueue: what the client waits for the first token.
        ttftSeconds: (job.timestamp ? started - job.timestamp : 0) / 1000 + result.ttftMs / 1000,
        prefillSeconds: result.prefillMs / 1000,
        decodeSeconds: result.decodeMs / 1000,
        e2eSeconds: job.timestamp ? (Date.now() - job.timestamp) / 1000 : undefined,
        promptTokens: result.promptTokens,
        generationTokens: result.tokens.length,
        cachedTokens: result.cachedTokens,
        recomputedTokens: result.computedTokens,
        compiledTokens: result.compiledTokens,
        batchSize: result.batchSize,
      });
      const after = d.scheduler.stats();
      d.metrics?.requestsWaiting.set(after.waiting);
      d.metrics?.requestsRunning.set(after.running);
      if (data.batchId !== undefined && !(await d.batches.record(data.tenant, data.batchId, data.index ?? 0, true, result))) d.onDuplicate?.(job);
      if (data.stream) {
        const rest = result.text.slice(streamed);
        await lastEvent(d, data.request.id, { ...(rest ? { delta: rest } : {}), done: true, result });
      }
      return result;
    } catch (e) {
      d.metrics?.record({ mode: data.request.mode.mode, status: 'error' });
      d.errors?.count('engine');
      // Only the last attempt answers a waiting client; earlier ones are retried. A stream ends at the first failure:
      // a retry would start its tokens over, and the client has already seen some of them.
      if (job.attemptsMade + 1 >= (job.opts.attempts ?? 1)) {
        void reply({ error: (e as Error).message })?.catch(() => undefined);
        // A batch's request fails here, before BullMQ marks the job failed: a worker that died between the two would
        // leave no one to record it (the 'failed' handler runs after), and the batch would never complete. Recorded
        // once: the handler's record is then a no-op, and it is the one that counts if Redis fails here (which must
        // not replace the request's own error).
        if (data.batchId !== undefined) await d.batches.record(data.tenant, data.batchId, data.index ?? 0, false, { error: (e as Error).message }).catch(() => undefined);
      }
      if (data.stream) {
        await endStream(d, data.request.id, (e as Error).message);
        if (e instanceof Error) announced(e);
      }
      throw e;
    }
  };
}

/**
 * Errors whose stream the processor has already ended: the 'failed' handler (recordFailure), which gets the same error
 * object in the same process, does not end it a second time. A failure the processor never saw (a job BullMQ failed
 * for stalling too often) is not in it, and the handler ends that stream.
 */
const streamEnded = new WeakSet<Error>();
function announced<E extends Error>(e: E): E {
  streamEnded.add(e);
  return e;
}

/** A stream's last event when it fails: its client shows the error and stops waiting. */
function endStream(d: Pick<InferenceDeps, 'publisher' | 'keys'>, requestId: string, error: string): Promise<number> {
  return lastEvent(d, requestId, { done: true, error });
}

/**
 * A stream's last event, and its began-mark removed: the job is over (streams are never retried), so no re-run will
 * look for the mark. Both on the publisher's one connection, in order after the mark's SET (issue #21: each streamed
 * request left its mark for 24 h).
 */
async function lastEvent(d: Pick<InferenceDeps, 'publisher' | 'keys'>, requestId: string, e: StreamEvent): Promise<number> {
  const [published] = await Promise.all([d.publisher.publish(d.keys.stream(requestId), JSON.stringify(e)), d.publisher.del(d.keys.streamBegan(requestId))]);
  return published;
}

/** How long a stream's began-mark is kept: longer than any job runs. */
const STREAM_MARK_TTL_S = 24 * 3600;

const BatchSlot = InferenceJob.pick({ tenant: true, batchId: true, index: true });
const StreamSlot = z.object({ stream: z.literal(true), request: z.object({ id: z.string() }) });

/**
 * After a job's last attempt (or an unrecoverable one) failed: record the failure in its batch, so the batch still
 * completes, and end a stream's client. A job that stalled more than maxStalledCount times (its worker died each time)
 * arrives here without its processor having run: BullMQ fails it in the next worker that takes it, with an
 * UnrecoverableError. (A failure the processor saw was recorded and announced there already: recording it again is a
 * no-op for the batch, and its stream is not ended twice.)
 */
export async function recordFailure(d: Pick<InferenceDeps, 'batches' | 'publisher' | 'keys'>, job: Job | undefined, err: Error): Promise<void> {
  if (!job) return;
  const stream = StreamSlot.safeParse(job.data);
  if (stream.success && !streamEnded.has(err)) {
    await endStream(d, stream.data.request.id, err.message).catch(() => undefined);
  }
  // Read the batch's coordinates alone: a job whose data failed the schema still belongs to its batch.
  const where = BatchSlot.safeParse(job.data);
  if (!where.success || where.data.batchId === undefined) return;
  const attempts = job.opts.attempts ?? 1;
  if (!(err instanceof UnrecoverableError) && job.attemptsMade < attempts) return;
  await d.batches.record(where.data.tenant, where.data.batchId, where.data.index ?? 0, false, { error: err.message });
}
