import type { RequestClass } from '../queue/contracts';

/**
 * Which waiting requests a round takes, by request class, as plain data (the scheduler runs it; nothing here touches a
 * model or a queue).
 *
 * - Interactive requests go first: a round takes every interactive request that waits.
 * - Batch keeps a minimum share (minShare, BATCH_MIN_SHARE) while interactive requests compete with it. A deficit
 *   counter (`credit`, in requests) earns minShare / (1 − minShare) per interactive request a round takes while batch
 *   requests wait, and the round takes floor(credit) batch requests along (each spends one). So while both classes
 *   wait, batch is served at least minShare of the requests served. Work is counted in requests (not tokens: a
 *   worker's requests are alike in size next to the difference between the classes). Credit is not banked while no
 *   batch request waits, and is bounded (`maxCredit`).
 * - Batch requests that share a context with an interactive request of the round ride along (linked once, with it);
 *   they spend credit too (the counter may go below 0, down to −maxCredit).
 * - A round of batch requests alone, while interactive traffic is recent (an interactive request was taken in the last
 *   recentMs), takes at most shortRound of them: an interactive request that arrives then waits for a short round,
 *   not a long one. The scheduler also stops such a round between its steps when an interactive request arrives.
 */
export interface ClassShareOptions {
  /** BATCH_MIN_SHARE: the least share of requests served that batch keeps while interactive requests wait (0..0.9). */
  minShare?: number;
  /** Batch requests in a round of their own while interactive traffic is recent (BATCH_STEP_WHILE_INTERACTIVE). */
  shortRound?: number;
  /** How long after the last interactive request interactive traffic counts as present (ms). */
  recentMs?: number;
  /** Bound of the deficit counter (requests). */
  maxCredit?: number;
}

export const CLASS_SHARE_DEFAULTS = { minShare: 0.2, shortRound: 1, recentMs: 1000, maxCredit: 16 } as const;

/** The counter a scheduler keeps between rounds. */
export interface ClassShareState {
  credit: number;
  /** When an interactive request was last taken (ms, any clock the caller keeps). */
  lastInteractiveAt: number;
}

export function newClassShareState(): ClassShareState {
  return { credit: 0, lastInteractiveAt: -Infinity };
}

/** A waiting request as the choice sees it: its class and its shared-context key (plan.ts's groupKey). */
export interface Candidate {
  cls: RequestClass;
  key: string;
}

export interface RoundChoice {
  /** Positions of the waiting requests the round takes, interactive first, then batch in waiting order. */
  take: number[];
  /** A round of batch requests alone: the scheduler may stop it between steps when an interactive request arrives. */
  batchOnly: boolean;
}

/** Choose a round from the waiting requests (in arrival order); updates `state`. */
export function chooseRound(waiting: readonly Candidate[], state: ClassShareState, now: number, opts: ClassShareOptions = {}): RoundChoice {
  const o = { ...CLASS_SHARE_DEFAULTS, ...opts };
  const inter: number[] = [];
  const batch: number[] = [];
  waiting.forEach((c, i) => (c.cls === 'batch' ? batch : inter).push(i));
  if (inter.length) state.lastInteractiveAt = now;
  if (!batch.length) {
    state.credit = Math.min(state.credit, 0);
    return { take: inter, batchOnly: false };
  }
  if (!inter.length) {
    state.credit = Math.min(state.credit, 0);
    const recent = now - state.lastInteractiveAt <= o.recentMs;
    return { take: recent ? batch.slice(0, Math.max(1, o.shortRound)) : batch, batchOnly: true };
  }
  const keys = new Set(inter.map((i) => waiting[i].key));
  const ride = batch.filter((i) => keys.has(waiting[i].key));
  const rest = batch.filter((i) => !keys.has(waiting[i].key));
  const share = Math.min(0.9, Math.max(0, o.minShare));
  state.credit = Math.min(o.maxCredit, state.credit + (inter.length * share) / (1 - share));
  const owed = Math.max(0, Math.min(rest.length, Math.floor(state.credit) - ride.length));
  const extra = rest.slice(0, owed);
  state.credit = Math.max(-o.maxCredit, state.credit - ride.length - extra.length);
  return { take: [...inter, ...[...ride, ...extra].sort((a, b) => a - b)], batchOnly: false };
}
