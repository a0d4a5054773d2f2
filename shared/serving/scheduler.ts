import { batchable, type LinkContext } from '../linking';
import { executePlan, type Waiting } from './execute';
import { planRound, type Plan, type PlanOptions } from './plan';
import type { ServeRequest } from './request';
import type { ServeResult } from './result';

export interface SchedulerStats {
  groups: number;
  requests: number;
  /** Requests waiting for the next round. */
  waiting: number;
  /** Requests in the group being served. */
  running: number;
}

/**
 * Continuous micro-batching: requests that arrive while a round is being served wait; the next round takes every
 * waiting request, plans it (plan.ts: groups by shared context, lone requests batched across contexts when their mode
 * allows, as plain data) and runs the plan (execute.ts). Model work runs one group or batch at a time (onnxruntime
 * uses every core for one call).
 */
export class Scheduler {
  private queue: Waiting[] = [];
  private busy = false;
  private readonly s = { groups: 0, requests: 0, running: 0 };

  constructor(
    private readonly ctxFor: (tenantSalt: string) => LinkContext,
    private readonly opts: PlanOptions & { onGroup?: (size: number, ms: number) => void } = {},
  ) {}

  /**
   * Queue a request; `onToken` sees each generated token as it is chosen, with the text it adds to the stream ('' while
   * held back: a split character, a possible stop string; the rest is the result's text past what was streamed).
   */
  submit(req: ServeRequest, onToken?: (token: number, text: string) => void): Promise<ServeResult> {
    return new Promise((resolve, reject) => {
      this.queue.push({ req, onToken, resolve, reject, emitted: 0, seen: 0 });
      if (!this.busy) void this.drain();
    });
  }

  stats(): SchedulerStats {
    return { ...this.s, waiting: this.queue.length };
  }

  /** The plan for a round of requests (whether a request's mode batches is the loaded graph's answer). */
  plan(reqs: readonly ServeRequest[]): Plan {
    return planRound(reqs, (o, r) => batchable(this.ctxFor(r.tenantSalt).engine, o), this.opts);
  }

  private async drain(): Promise<void> {
    this.busy = true;
    try {
      // An idle scheduler starts at once, as an engine loop steps as soon as a request is there (a setImmediate here
      // cost ~0.25 ms of every lone request's latency): requests submitted in the same synchronous run still join the
      // round, and those arriving while it computes make up the next one.
      await Promise.resolve();
      while (this.queue.length) {
        const round = this.queue;
        this.queue = [];
        await executePlan(
          this.ctxFor,
          this.plan(round.map((p) => p.req)),
          round,
          {
            onStart: (n) => (this.s.running = n),
            onEnd: () => (this.s.running = 0),
            onServed: (n, ms) => {
              this.s.groups++;
              this.s.requests += n;
              this.opts.onGroup?.(n, ms);
            },
          },
        );
      }
    } finally {
      this.busy = false;
    }
  }
}
