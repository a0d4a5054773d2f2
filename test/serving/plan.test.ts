import type { Engine } from '../../shared/engine';
import { batchable, type LinkMode } from '../../shared/linking';
import { batchSize, planRound, type ModeBatchable, type Plan } from '../../shared/serving/plan';
import type { ServeRequest } from '../../shared/serving/request';

// Planning without a model: which requests form which groups and batches, as plain data.

/** The linker's own answer for a graph with position-masked attention (the primitive graph). */
const primitive: ModeBatchable = (o) => batchable({ capabilities: { positionMasked: true } } as unknown as Engine, o);

let n = 0;
function req(o: Partial<ServeRequest> & { doc?: number; len?: number } = {}): ServeRequest {
  const { doc = 1, len = 4, ...rest } = o;
  return {
    id: `r${n++}`,
    tenantSalt: 'tenant:a',
    chunks: [Array.from({ length: len }, (_, i) => 100 * doc + i)],
    question: [7, 8],
    maxTokens: 4,
    mode: { mode: 'attnlink' },
    ...rest,
  };
}

/** A plan as [kind, request positions] pairs, steps in order. */
const shape = (p: Plan) => p.steps.map((s) => [s.kind, s.requests] as const);

describe('planRound', () => {
  test('no request: no step; one request: one group, whatever its mode', () => {
    expect(planRound([], primitive).steps).toEqual([]);
    expect(shape(planRound([req()], primitive))).toEqual([['group', [0]]]);
    expect(shape(planRound([req({ mode: { mode: 'cacheblend' } })], primitive))).toEqual([['group', [0]]]);
  });

  test('requests sharing chunks, mode, tenant and prefix form one group; any difference splits it', () => {
    const same = [req(), req(), req()];
    expect(shape(planRound(same, primitive))).toEqual([['group', [0, 1, 2]]]);
    // Each differs from the first in one thing: they cannot share its linked context (and, alone, are batched).
    const reqs = [
      req(),
      req(),
      req({ tenantSalt: 'tenant:b' }),
      req({ mode: { mode: 'naive' } }),
      req({ mode: { mode: 'attnlink', k: 2 } }),
      req({ prefix: [1, 2] }),
      req({ doc: 2 }),
    ];
    // Batches are per tenant: tenant b's lone request is not batched with tenant a's (and runs as a group of one).
    // Shortest first: the request with a two-token prefix costs one slot more than those with BOS.
    expect(batchSize(reqs[5])).toBe(batchSize(reqs[6]) + 1);
    expect(shape(planRound(reqs, primitive))).toEqual([
      ['group', [2]],
      ['batch', [3, 4, 6, 5]],
      ['group', [0, 1]],
    ]);
  });

  test('only modes that link in one call per row are batched; a request without a question or chunks is not', () => {
    const modes: LinkMode[] = ['full', 'prefix', 'naive', 'attnlink', 'attnlink0', 'cacheblend'];
    const reqs = modes.flatMap((mode) => [req({ doc: 1, mode: { mode } }), req({ doc: 2, mode: { mode } })]);
    const plan = planRound(reqs, primitive);
    const batched = plan.steps.filter((s) => s.kind === 'batch').flatMap((s) => s.requests.map((i) => reqs[i].mode.mode));
    expect([...new Set(batched)].sort()).toEqual(['attnlink', 'attnlink0', 'naive']);
    // cacheblend cannot share a linked context: two requests over the same chunks are two groups.
    const blend = planRound([req({ mode: { mode: 'cacheblend' } }), req({ mode: { mode: 'cacheblend' } })], primitive);
    expect(shape(blend)).toEqual([
      ['group', [0]],
      ['group', [1]],
    ]);
    const noQuestion = planRound([req({ question: [] }), req({ doc: 2, question: [] })], primitive);
    expect(noQuestion.steps.every((s) => s.kind === 'group')).toBe(true);
    // Plain requests (no chunks) are one padded group; ignore_eos apart.
    const plain = planRound([req({ chunks: [], mode: { mode: 'full' } }), req({ chunks: [], mode: { mode: 'full' } }), req({ chunks: [], ignoreEos: true })], primitive);
    expect(shape(plain)).toEqual([
      ['group', [0, 1]],
      ['group', [2]],
    ]);
    // A graph that batches nothing (or maxBatch 1): every lone request is its own group.
    expect(planRound([req(), req({ doc: 2 })], () => false).steps.map((s) => s.kind)).toEqual(['group', 'group']);
    expect(planRound([req(), req({ doc: 2 })], primitive, { maxBatch: 1 }).steps.map((s) => s.kind)).toEqual(['group', 'group']);
  });

  test('batches are cut shortest first within maxBatch rows and maxBatchTokens padded slots; groups within maxGroup', () => {
    // Lengths out of order: the plan sorts them.
    const lens = [40, 10, 30, 20, 50];
    const reqs = lens.map((len, doc) => req({ doc, len }));
    const sizes = reqs.map(batchSize);
    expect(sizes).toEqual(lens.map((l) => 1 + l + 2 + 4));
    expect(shape(planRound(reqs, primitive, { maxBatch: 2 }))).toEqual([
      ['batch', [1, 3]],
      ['batch', [2, 0]],
      ['group', [4]],
    ]);
    // Budget 100 slots: rows × the longest row. [17, 27, 37] → 3 × 37 = 111 > 100, so the third starts a new batch.
    expect(shape(planRound(reqs, primitive, { maxBatchTokens: 100 }))).toEqual([
      ['batch', [1, 3]],
      ['batch', [2, 0]],
      ['group', [4]],
    ]);
    expect(shape(planRound(reqs, primitive, { maxBatchTokens: 1000 }))).toEqual([['batch', [1, 3, 2, 0, 4]]]);
    // One request past the budget alone still runs (as a group).
    expect(shape(planRound([req({ len: 500 }), req({ doc: 2 })], primitive, { maxBatchTokens: 100 }))).toEqual([
      ['group', [1]],
      ['group', [0]],
    ]);
    const many = Array.from({ length: 5 }, () => req());
    expect(shape(planRound(many, primitive, { maxGroup: 2 }))).toEqual([
      ['group', [0, 1]],
      ['group', [2, 3]],
      ['group', [4]],
    ]);
  });

  test('batches run before groups, in the order the round arrived', () => {
    const reqs = [req(), req(), req({ doc: 2 }), req({ doc: 3 })];
    expect(shape(planRound(reqs, primitive))).toEqual([
      ['batch', [2, 3]],
      ['group', [0, 1]],
    ]);
  });
});
