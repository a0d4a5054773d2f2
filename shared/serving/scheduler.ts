import { batchable, type LinkContext } from '../linking';
import type { RequestClass } from '../queue/contracts';
import { chooseRound, newClassShareState, type ClassShareOptions } from './classes';
import { executePlan, type Waiting } from './execute';
import { planRound, type Plan, type PlanOptions } from './plan';
import { groupKey, type ServeRequest } from './request';
import type { ServeResult } from './result';

/** A waiting request with its class and shared-context key. */
interface Queued extends Waiting {
  cls: RequestClass;
  key: string;
}

export interface SchedulerStats {
  groups: number;
  requests: number;
  /** Requests waiting for the next round. */
  waiting: number;
  /** Requests in the group being served. */
  running: number;
  /** Requests served per class. */
  served: Record<RequestClass, number>;
  /** Requests waiting per class. */
  waitingByClass: Record<RequestClass, number>;
}

export interface SchedulerOptions extends PlanOptions {
  /** Request classes' shares and short rounds (classes.ts). */
  classes?: ClassShareOptions;
  onGroup?: (size: number, ms: number) => void;
  /** Requests of a class served (a step ended). */
  onServedClass?: (cls: RequestClass, n: number) => void;
}

/**
 * Continuous micro-batching: requests that arrive while a round is being served wait; the next round takes the
 * waiting requests that classes.ts chooses (every interactive one, and batch ones by their minimum share, or batch
 * alone when no interactive request waits), plans them (plan.ts: groups by shared context across classes, lone
 * requests batched across contexts when their mode allows, as plain data) and runs the plan (execute.ts), the steps
 * that hold an interactive request first. A round of batch requests alone stops between its steps when an interactive
 * request arrives (the rest wait at the front for the next round). Model work runs one group or batch at a time
 * (onnxruntime uses every core for one call).
 */
export class Scheduler {
  private queue: Queued[] = [];
  private busy = false;
  private readonly s = { groups: 0, requests: 0, running: 0 };
  private readonly served: Record<RequestClass, number> = { interactive: 0, batch: 0 };
  private readonly share = newClassShareState();

  constructor(
    private readonly ctxFor: (tenantSalt: string) => LinkContext,
    private readonly opts: SchedulerOptions = {},
  ) {}

  /**
   * Queue a request; `onToken` sees each generated token as it is chosen, with the text it adds to the stream ('' while
   * held back: a split character, a possible stop string; the rest is the result's text past what was streamed).
   */
  submit(req: ServeRequest, onToken?: (token: number, text: string) => void, cls: RequestClass = 'interactive'): Promise<ServeResult> {
    return new Promise((resolve, reject) => {
      this.queue.push({ req, onToken, resolve, reject, emitted: 0, seen: 0, cls, key: groupKey(req) });
      if (!this.busy) void this.drain();
    });
  }

  stats(): SchedulerStats {
    const waitingByClass: Record<RequestClass, number> = { interactive: 0, batch: 0 };
    for (const q of this.queue) waitingByClass[q.cls]++;
    return { ...this.s, waiting: this.queue.length, served: { ...this.served }, waitingByClass };
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
        const choice = chooseRound(this.queue, this.share, performance.now(), this.opts.classes);
        const taken = new Set(choice.take);
        const round = choice.take.map((i) => this.queue[i]);
        this.queue = this.queue.filter((_, i) => !taken.has(i));
        const plan = this.plan(round.map((p) => p.req));
        // Steps holding an interactive request first (the plan's own order otherwise).
        const inter = (st: Plan['steps'][number]) => st.requests.some((i) => round[i].cls === 'interactive');
        plan.steps = [...plan.steps.filter(inter), ...plan.steps.filter((st) => !inter(st))];
        const unrun = await executePlan(this.ctxFor, plan, round, {
          onStart: (n) => (this.s.running = n),
          onEnd: () => (this.s.running = 0),
          onServed: (n, ms) => {
            this.s.groups++;
            this.s.requests += n;
            this.opts.onGroup?.(n, ms);
          },
          onServedRequests: (positions) => {
            const n: Record<RequestClass, number> = { interactive: 0, batch: 0 };
            for (const i of positions) n[round[i].cls]++;
            for (const cls of ['interactive', 'batch'] as const) {
              if (!n[cls]) continue;
              this.served[cls] += n[cls];
              this.opts.onServedClass?.(cls, n[cls]);
            }
          },
          stop: () => choice.batchOnly && this.queue.some((q) => q.cls === 'interactive'),
        });
        // What a stopped round left goes back to the front, in its order.
        if (unrun.length) this.queue = [...unrun.sort((a, b) => a - b).map((i) => round[i]), ...this.queue];
      }
    } finally {
      this.busy = false;
    }
  }
}
