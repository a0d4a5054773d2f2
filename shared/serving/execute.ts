import type { LinkContext } from '../linking';
import { serveBatch } from './batch';
import { serveGroup } from './group';
import type { Plan, PlanStep } from './plan';
import type { ServeRequest } from './request';
import type { ServeResult } from './result';

/** A request waiting for its result: what the scheduler queues and the executor settles. */
export interface Waiting {
  req: ServeRequest;
  onToken?: (token: number, text: string) => void;
  resolve: (r: ServeResult) => void;
  reject: (e: unknown) => void;
  /** Tokens already passed to onToken (a retry after a failed group replays them: the same seed gives the same tokens). */
  emitted: number;
  /** Tokens of the current run so far. */
  seen: number;
}

export interface ExecuteHooks {
  /** A step starts with this many requests. */
  onStart?: (size: number) => void;
  /** A step ended (whether it succeeded or not: its requests are settled or retried). */
  onEnd?: () => void;
  /** A step served its requests, in `ms`. */
  onServed?: (size: number, ms: number) => void;
  /** A step's requests were served (positions in the round), after onServed. */
  onServedRequests?: (positions: readonly number[]) => void;
  /** Asked before each step but the first: true stops the plan there (its remaining steps are returned, unrun). */
  stop?: () => boolean;
}

/**
 * Run a round's plan: each step is one link and one batched decode (serveGroup, or serveBatch for a batch of more than
 * one), one after another (onnxruntime uses every core for one call). Each step's requests are settled as it ends. A
 * failed step of several requests is run again one request at a time, so one bad request does not fail its neighbours;
 * a retried request streams only the tokens it had not streamed before (the same tokens: greedy, or sampled from the
 * same seed). Returns the positions of the requests of the steps `stop` left unrun.
 */
export async function executePlan(ctxFor: (tenantSalt: string) => LinkContext, plan: Plan, round: readonly Waiting[], hooks: ExecuteHooks = {}): Promise<number[]> {
  for (const [k, step] of plan.steps.entries()) {
    if (k > 0 && hooks.stop?.()) return plan.steps.slice(k).flatMap((s) => s.requests);
    await runStep(ctxFor, step.kind, step.requests.map((i) => round[i]), hooks);
    hooks.onServedRequests?.(step.requests);
  }
  return [];
}

/** The serving call for a step. */
export function serveStep(ctx: LinkContext, kind: PlanStep['kind'], reqs: ServeRequest[], onToken?: (index: number, token: number, text: string) => void): Promise<ServeResult[]> {
  return (kind === 'batch' && reqs.length > 1 ? serveBatch : serveGroup)(ctx, reqs, onToken);
}

async function runStep(ctxFor: (tenantSalt: string) => LinkContext, kind: PlanStep['kind'], group: Waiting[], hooks: ExecuteHooks): Promise<void> {
  const t0 = performance.now();
  for (const p of group) p.seen = 0;
  hooks.onStart?.(group.length);
  try {
    const results = await serveStep(
      ctxFor(group[0].req.tenantSalt),
      kind,
      group.map((p) => p.req),
      (i, t, text) => {
        const p = group[i];
        if (++p.seen > p.emitted) {
          p.emitted = p.seen;
          p.onToken?.(t, text);
        }
      },
    );
    group.forEach((p, i) => p.resolve(results[i]));
  } catch (e) {
    if (group.length === 1) group[0].reject(e);
    else {
      for (const p of group) await runStep(ctxFor, 'group', [p], hooks);
      return;
    }
  } finally {
    hooks.onEnd?.();
  }
  hooks.onServed?.(group.length, performance.now() - t0);
}
