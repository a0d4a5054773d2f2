import type { LinkContext } from '../linking';
import { canBatch, serveBatch } from './batch';
import { serveGroup } from './group';
import { groupKey, type ServeRequest, type ServeResult } from './request';

interface Pending {
  req: ServeRequest;
  onToken?: (token: number, text: string) => void;
  resolve: (r: ServeResult) => void;
  reject: (e: unknown) => void;
  /** Tokens already passed to onToken (a retry after a failed group replays them: the same seed gives the same tokens). */
  emitted: number;
  /** Tokens of the current run so far. */
  seen: number;
}

export interface SchedulerStats {
  groups: number;
  requests: number;
  /** Requests waiting for the next round. */
  waiting: number;
  /** Requests in the group being served. */
  running: number;
}

/**
 * Continuous micro-batching: requests that arrive while a group is being served wait; the next round takes every
 * waiting request, groups them by shared context (same chunks, mode and tenant), and serves each group with one link
 * and one batched decode. Requests left alone in their group are batched across contexts when their mode allows
 * (one row each, see serveBatch). Model work runs one group or batch at a time (onnxruntime uses every core for one
 * call).
 */
export class Scheduler {
  private queue: Pending[] = [];
  private busy = false;
  private readonly s = { groups: 0, requests: 0, running: 0 };

  constructor(
    private readonly ctxFor: (tenantSalt: string) => LinkContext,
    private readonly opts: {
      maxGroup?: number;
      /** Most requests with different contexts linked and decoded in one batch (default 16; 1 turns batching off). */
      maxBatch?: number;
      /**
       * Most KV slots a batch may hold: rows × the longest row's prompt + max tokens (default 32768). Requests are
       * batched shortest first, so one long request does not pad many short ones.
       */
      maxBatchTokens?: number;
      onGroup?: (size: number, ms: number) => void;
    } = {},
  ) {}

  private get maxBatch(): number {
    return this.opts.maxBatch ?? 16;
  }

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
        if (round.length === 1) {
          // Nothing to group with: no group key to hash (a sha256 over every chunk's tokens).
          await this.run(round, 'group');
          continue;
        }
        const groups = new Map<string, Pending[]>();
        for (const p of round) {
          const k = groupKey(p.req);
          const g = groups.get(k) ?? [];
          g.push(p);
          groups.set(k, g);
        }
        // Requests alone in their group whose mode links in one call are served together, a row each.
        const batches = new Map<string, Pending[]>();
        for (const [k, g] of groups) {
          const r = g[0].req;
          if (g.length === 1 && this.maxBatch > 1 && canBatch(this.ctxFor(r.tenantSalt), r)) {
            const bk = `${r.tenantSalt}\0${r.ignoreEos ? 1 : 0}`;
            batches.set(bk, [...(batches.get(bk) ?? []), g[0]]);
            groups.delete(k);
          }
        }
        for (const b of batches.values()) for (const part of this.splitBatch(b)) await this.run(part, part.length > 1 ? 'batch' : 'group');
        for (const g of groups.values()) {
          const max = this.opts.maxGroup ?? 64;
          for (let i = 0; i < g.length; i += max) await this.run(g.slice(i, i + max), 'group');
        }
      }
    } finally {
      this.busy = false;
    }
  }

  /** Cut lone requests into batches, shortest first, within maxBatch rows and maxBatchTokens padded slots. */
  private splitBatch(reqs: Pending[]): Pending[][] {
    const max = this.maxBatch;
    const budget = this.opts.maxBatchTokens ?? 32768;
    const size = (p: Pending) => 1 + p.req.chunks.reduce((n, c) => n + c.length, 0) + p.req.question.length + p.req.maxTokens;
    const sorted = [...reqs].sort((a, b) => size(a) - size(b));
    const out: Pending[][] = [];
    let cur: Pending[] = [];
    for (const p of sorted) {
      // Sorted ascending: p is the longest row so far, so the padded cost is rows × size(p).
      if (cur.length && (cur.length >= max || (cur.length + 1) * size(p) > budget)) {
        out.push(cur);
        cur = [];
      }
      cur.push(p);
    }
    if (cur.length) out.push(cur);
    return out;
  }

  private async run(group: Pending[], how: 'group' | 'batch'): Promise<void> {
    const t0 = performance.now();
    for (const p of group) p.seen = 0;
    this.s.running = group.length;
    try {
      const serve = how === 'batch' && group.length > 1 ? serveBatch : serveGroup;
      const results = await serve(
        this.ctxFor(group[0].req.tenantSalt),
        group.map((p) => p.req),
        (i, t, text) => {
          // A retried request streams only what it had not streamed before the failure (the same tokens: greedy, or
          // sampled from the same seed).
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
        // One bad request must not fail its neighbours: retry them one by one.
        for (const p of group) await this.run([p], 'group');
        return;
      }
    } finally {
      this.s.running = 0;
    }
    this.s.groups++;
    this.s.requests += group.length;
    this.opts.onGroup?.(group.length, performance.now() - t0);
  }
}
