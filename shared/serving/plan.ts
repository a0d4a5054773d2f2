import type { LinkOptions } from '../linking';
import { groupKey, linkOptions, type ServeRequest } from './request';

/**
 * Planning a round: the requests waiting when the engine is free → which of them form which groups and batches, as
 * plain data (what vLLM v1's scheduler hands its model runner each step). Nothing here touches a model; execute.ts
 * runs a plan.
 */

/**
 * One unit of model work: `group`, requests sharing one linked context (link once, one row each for the questions and
 * decode), or `batch`, requests with different contexts linked and decoded together, a row each. `requests` are
 * positions in the round the plan was made for, in the order their rows are laid out.
 */
export interface PlanStep {
  kind: 'group' | 'batch';
  requests: number[];
}

/** A round's plan: its steps, run one after another in this order (batches first, then groups). */
export interface Plan {
  steps: PlanStep[];
}

export interface PlanOptions {
  /** Most requests in one shared-context group (default 64). */
  maxGroup?: number;
  /** Most requests with different contexts linked and decoded in one batch (default 16; 1 turns batching off). */
  maxBatch?: number;
  /**
   * Most KV slots a batch may hold: rows × the longest row's prompt + max tokens (default 32768). Requests are batched
   * shortest first, so one long request does not pad many short ones.
   */
  maxBatchTokens?: number;
}

/** Whether a request's link options link with one forward call per row on the graph that would serve it. */
export type ModeBatchable = (o: LinkOptions, r: ServeRequest) => boolean;

export const PLAN_DEFAULTS = { maxGroup: 64, maxBatch: 16, maxBatchTokens: 32768 } as const;

/**
 * Whether a request can join a cross-request batch: it has chunks and a question, and its mode links with one forward
 * call per row (`modeBatchable`: the loaded graph's answer, see shared/linking's `batchable`).
 */
export function canBatch(r: ServeRequest, modeBatchable: ModeBatchable): boolean {
  return r.chunks.length > 0 && r.question.length > 0 && modeBatchable(linkOptions(r.mode), r);
}

/** A request's padded cost in a batch: its prompt (its prefix, BOS when it has none, chunks, question) plus max tokens. */
export function batchSize(r: ServeRequest): number {
  return (r.prefix?.length ?? 1) + r.chunks.reduce((n, c) => n + c.length, 0) + r.question.length + r.maxTokens;
}

/**
 * Plan a round. Requests are grouped by shared context (groupKey: same chunks, mode, tenant, prefix, ignore_eos);
 * requests alone in their group whose mode batches are batched across contexts per tenant salt and ignore_eos, cut
 * shortest first within maxBatch rows and maxBatchTokens padded slots (a batch cut down to one request runs as a
 * group). Groups larger than maxGroup are cut in order. A round of one request is one group (nothing to hash).
 */
export function planRound(reqs: readonly ServeRequest[], modeBatchable: ModeBatchable, opts: PlanOptions = {}): Plan {
  if (!reqs.length) return { steps: [] };
  if (reqs.length === 1) return { steps: [{ kind: 'group', requests: [0] }] };
  const maxGroup = opts.maxGroup ?? PLAN_DEFAULTS.maxGroup;
  const maxBatch = opts.maxBatch ?? PLAN_DEFAULTS.maxBatch;
  const groups = new Map<string, number[]>();
  reqs.forEach((r, i) => {
    const k = groupKey(r);
    const g = groups.get(k) ?? [];
    g.push(i);
    groups.set(k, g);
  });
  const batches = new Map<string, number[]>();
  for (const [k, g] of groups) {
    const r = reqs[g[0]];
    if (g.length === 1 && maxBatch > 1 && canBatch(r, modeBatchable)) {
      const bk = `${r.tenantSalt}\0${r.ignoreEos ? 1 : 0}`;
      batches.set(bk, [...(batches.get(bk) ?? []), g[0]]);
      groups.delete(k);
    }
  }
  const steps: PlanStep[] = [];
  for (const b of batches.values()) {
    for (const part of splitBatch(reqs, b, maxBatch, opts.maxBatchTokens ?? PLAN_DEFAULTS.maxBatchTokens)) {
      steps.push({ kind: part.length > 1 ? 'batch' : 'group', requests: part });
    }
  }
  for (const g of groups.values()) for (let i = 0; i < g.length; i += maxGroup) steps.push({ kind: 'group', requests: g.slice(i, i + maxGroup) });
  return { steps };
}

/** Cut lone requests into batches, shortest first, within `max` rows and `budget` padded slots. */
function splitBatch(reqs: readonly ServeRequest[], idx: number[], max: number, budget: number): number[][] {
  const sorted = [...idx].sort((a, b) => batchSize(reqs[a]) - batchSize(reqs[b]));
  const out: number[][] = [];
  let cur: number[] = [];
  for (const i of sorted) {
    // Sorted ascending: i is the longest row so far, so the padded cost is rows × its size.
    if (cur.length && (cur.length >= max || (cur.length + 1) * batchSize(reqs[i]) > budget)) {
      out.push(cur);
      cur = [];
    }
    cur.push(i);
  }
  if (cur.length) out.push(cur);
  return out;
}
