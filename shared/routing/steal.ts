import { UnrecoverableError, Worker, type Job, type WorkerOptions } from 'bullmq';
import { LRUCache } from 'lru-cache';
import { REQUEST_CLASSES, type RequestClass } from '../queue/contracts';
import { workerQueueName } from './keys';

/**
 * Work stealing: a worker with nothing to do takes jobs that wait in another live worker's own queue. The router sends
 * a job to the worker holding its chunks and tolerates a backlog there (ROUTING_MAX_WAITING) for the sake of the
 * cache; a job waiting behind a busy worker while another is idle costs more than the chunk reads it saves, so the
 * idle one takes it (vLLM's scheduler and SGLang's router keep a cache-affine order too, and fall back to load when it
 * leaves capacity unused).
 *
 * Policy (`Stealer`): every `intervalMs` while this worker is idle (none of its own work in hand), look at the live
 * workers' own queues: interactive before batch, the queue with the most waiting jobs first, and take jobs from it
 * until `maxInFlight` stolen jobs run here or it has none waiting. A look that reads Redis and finds nothing doubles the
 * interval (up to 16×), so idle workers of a quiet system do not poll Redis 10 times a second each; a look skipped
 * because this worker is busy keeps the base interval, so a worker that has just gone idle looks within one interval.
 *
 * Mechanism (`QueueThief`): a BullMQ Worker without a processor on the victim's queue, whose `getNextJob` moves the
 * queue's next job (its fair-queuing order, as the owner would take it) to active under this worker's lock token;
 * the job runs through the same processor, its lock is extended while it runs, and it is completed or failed (with its
 * retries) as a BullMQ Worker would. A thief that dies leaves the job locked until its lock expires; the owner's
 * stalled check (or an adopter's, when the owner is dead too) then hands it back.
 */

/** A job taken from another worker's queue: `done` settles when it has completed or failed. */
export interface Stolen {
  done: Promise<void>;
}

export interface StealerOptions {
  workerId: string;
  /** Live workers (the routing index). */
  live: () => Promise<readonly string[]>;
  /** Jobs waiting to start in each of these queues (waiting and prioritized). */
  waiting: (queueNames: readonly string[]) => Promise<number[]>;
  /** Whether this worker has none of its own work in hand (jobs from its own, the shared or adopted queues). */
  idle: () => boolean;
  /** Takes the next job of a queue and starts it; resolves to its run (`done` settles when it is over) or undefined (none). */
  take: (queueName: string) => Promise<Stolen | undefined>;
  intervalMs?: number;
  maxInFlight?: number;
  onError?: (e: Error) => void;
}

export class Stealer {
  private timer?: NodeJS.Timeout;
  private looking?: Promise<void>;
  private closed = false;
  private inFlight = 0;
  private readonly runs = new Set<Promise<void>>();
  private readonly baseMs: number;
  private readonly maxInFlight: number;
  private delayMs: number;

  constructor(private readonly o: StealerOptions) {
    this.baseMs = o.intervalMs ?? 100;
    this.maxInFlight = o.maxInFlight ?? 8;
    this.delayMs = this.baseMs;
  }

  start(): void {
    this.schedule();
  }

  private schedule(): void {
    if (this.closed) return;
    this.timer = setTimeout(() => void this.tick(), this.delayMs);
    this.timer.unref();
  }

  /** One look; the next is scheduled after it. */
  private tick(): Promise<void> {
    this.looking ??= this.look()
      .then((found) => {
        // Back off only after reading Redis and finding nothing: a look skipped while this worker is busy says nothing
        // about the others' queues, and the first look once idle must come within one base interval.
        this.delayMs = found === 'nothing' ? Math.min(this.baseMs * 16, this.delayMs * 2) : this.baseMs;
      })
      .catch((e: Error) => this.o.onError?.(e))
      .finally(() => {
        this.looking = undefined;
        this.schedule();
      });
    return this.looking;
  }

  /** `took` a job, found `nothing` to take, or `skipped` the look (busy, or as many stolen jobs in hand as allowed). */
  private async look(): Promise<'took' | 'nothing' | 'skipped'> {
    if (this.closed || !this.o.idle() || this.inFlight >= this.maxInFlight) return 'skipped';
    const others = (await this.o.live()).filter((id) => id !== this.o.workerId);
    if (!others.length) return 'nothing';
    let took = false;
    for (const cls of REQUEST_CLASSES) {
      const names = others.map((id) => workerQueueName(id, cls as RequestClass));
      const counts = await this.o.waiting(names);
      // Most waiting first; each queue drained in turn while there is room and this worker stays idle.
      const order = names.map((n, i) => ({ n, c: counts[i] })).filter((x) => x.c > 0).sort((a, b) => b.c - a.c);
      for (const { n } of order) {
        while (!this.closed && this.inFlight < this.maxInFlight && this.o.idle()) {
          const run = await this.o.take(n);
          if (!run) break;
          took = true;
          this.inFlight++;
          const tracked: Promise<void> = run.done
            .catch((e: Error) => this.o.onError?.(e))
            .finally(() => {
              this.inFlight--;
              this.runs.delete(tracked);
            });
          this.runs.add(tracked);
        }
      }
    }
    return took ? 'took' : 'nothing';
  }

  /** Stops looking and waits for the stolen jobs in hand. */
  async close(): Promise<void> {
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    await this.looking;
    await Promise.all([...this.runs]);
  }
}

export interface ThiefOptions {
  /** A BullMQ Worker's options (connection, prefix, lockDuration): the thief's Workers on victims' queues. */
  worker: (queueName: string) => Omit<WorkerOptions, 'autorun' | 'concurrency'>;
  /** The worker's job processor. */
  process: (job: Job) => Promise<unknown>;
  /** Called after a stolen job failed an attempt (as a BullMQ Worker's 'failed' event). */
  onFailed?: (job: Job, err: Error) => void;
  /** Victim queues whose Workers are kept open (default 16; the least recently used is closed). */
  maxQueues?: number;
}

/** Takes jobs from other workers' queues and runs them here (see the module's comment). */
export class QueueThief {
  private readonly workers: LRUCache<string, Worker>;
  /** Jobs each Worker runs now: one dropped from the cache closes when its last job is done (a job completes through its Worker's connection). */
  private readonly busy = new Map<Worker, number>();
  private readonly dropped = new Set<Worker>();
  private seq = 0;

  constructor(private readonly o: ThiefOptions) {
    this.workers = new LRUCache<string, Worker>({
      max: o.maxQueues ?? 16,
      dispose: (w) => {
        if (this.busy.get(w)) this.dropped.add(w);
        else void w.close().catch(() => undefined);
      },
    });
  }

  private workerOf(queueName: string): Worker {
    let w = this.workers.get(queueName);
    if (!w) {
      w = new Worker(queueName, null, { ...this.o.worker(queueName), autorun: false });
      w.on('error', () => undefined); // connection errors: the next take tries again
      this.workers.set(queueName, w);
    }
    return w;
  }

  /** The queue's next job moved to active under a fresh token, and its run; undefined when none waits. */
  async take(queueName: string): Promise<Stolen | undefined> {
    const w = this.workerOf(queueName);
    const token = `${w.id}:steal:${++this.seq}`;
    const job = (await w.getNextJob(token, { block: false })) as Job | undefined;
    if (!job) return undefined;
    return { done: this.run(w, job, token) };
  }

  private async run(w: Worker, job: Job, token: string): Promise<void> {
    const lockMs = w.opts.lockDuration ?? 30_000;
    const renew = setInterval(() => void job.extendLock(token, lockMs).catch(() => undefined), Math.max(50, Math.floor(lockMs / 2)));
    this.busy.set(w, (this.busy.get(w) ?? 0) + 1);
    try {
      let result: unknown;
      try {
        // As BullMQ's Worker: a job that stalled more than maxStalledCount times carries a deferred failure, and is
        // failed (not retried) instead of run.
        if (job.deferredFailure) throw new UnrecoverableError(job.deferredFailure);
        result = await this.o.process(job);
      } catch (e) {
        const err = e instanceof Error ? e : new Error(String(e));
        // moveToFailed retries the job while it has attempts left, unless the error is an UnrecoverableError.
        await job.moveToFailed(err, token, false);
        this.o.onFailed?.(job, err);
        return;
      }
      await job.moveToCompleted(result, token, false);
    } finally {
      clearInterval(renew);
      const left = (this.busy.get(w) ?? 1) - 1;
      if (left) this.busy.set(w, left);
      else {
        this.busy.delete(w);
        if (this.dropped.delete(w)) void w.close().catch(() => undefined);
      }
    }
  }

  /** Closes the Workers on victims' queues (call when no stolen job runs: Stealer.close waits for them). */
  async close(): Promise<void> {
    const open = [...this.workers.values(), ...this.dropped];
    this.dropped.clear();
    this.busy.clear();
    this.workers.clear();
    await Promise.allSettled(open.map((w) => w.close()));
  }
}
