/**
 * Request classes in the scheduler (shared/serving/classes.ts as plain data, then the Scheduler on the tiny model):
 * interactive requests go first, batch keeps its minimum share while both wait, batch requests sharing a context with
 * an interactive one are linked with it, and a round of batch alone is short while interactive traffic is recent.
 */
import { Engine } from '../../shared/engine';
import { compileSource } from '../../shared/linking';
import type { RequestClass } from '../../shared/queue/contracts';
import { chooseRound, newClassShareState, type Candidate } from '../../shared/serving/classes';
import type { ServeRequest } from '../../shared/serving/request';
import { Scheduler } from '../../shared/serving/scheduler';
import { TINY, randomTokens } from '../helpers/model';

const cand = (cls: RequestClass, key = `${cls}-${Math.random()}`): Candidate => ({ cls, key });

describe('chooseRound', () => {
  test('interactive alone, batch alone, and interactive first when both wait', () => {
    const s = newClassShareState();
    expect(chooseRound([cand('interactive'), cand('interactive')], s, 0).take).toEqual([0, 1]);
    // Long after the last interactive request: a batch round takes every batch request.
    const later = chooseRound([cand('batch'), cand('batch'), cand('batch')], s, 10_000);
    expect(later).toEqual({ take: [0, 1, 2], batchOnly: true });
    // Both: the interactive ones, and no batch one until its credit reaches a whole request.
    const both = chooseRound([cand('batch'), cand('interactive'), cand('batch'), cand('interactive')], s, 10_001, { minShare: 0.2 });
    expect(both.take).toEqual([1, 3]);
    expect(both.batchOnly).toBe(false);
  });

  test('while both classes wait, batch is served its minimum share of requests', () => {
    for (const minShare of [0.1, 0.2, 0.5]) {
      const s = newClassShareState();
      const served = { interactive: 0, batch: 0 };
      // Each round: 3 interactive and 40 batch requests wait.
      for (let r = 0; r < 400; r++) {
        const waiting = [...Array.from({ length: 3 }, () => cand('interactive')), ...Array.from({ length: 40 }, () => cand('batch'))];
        for (const i of chooseRound(waiting, s, r, { minShare }).take) served[waiting[i].cls]++;
      }
      const share = served.batch / (served.batch + served.interactive);
      expect(share).toBeGreaterThanOrEqual(minShare - 0.01);
      expect(share).toBeLessThanOrEqual(minShare + 0.02);
    }
  });

  test('a batch request that shares a context with an interactive one rides along', () => {
    const s = newClassShareState();
    const pick = chooseRound([cand('batch', 'ctx'), cand('batch', 'other'), cand('interactive', 'ctx')], s, 0, { minShare: 0.2 });
    expect(pick.take).toEqual([2, 0]);
  });

  test('a round of batch alone is short while interactive traffic is recent', () => {
    const s = newClassShareState();
    chooseRound([cand('interactive')], s, 1000);
    const batch = Array.from({ length: 10 }, () => cand('batch'));
    expect(chooseRound(batch, s, 1500, { shortRound: 2, recentMs: 1000 }).take).toEqual([0, 1]);
    expect(chooseRound(batch, s, 2500, { shortRound: 2, recentMs: 1000 }).take.length).toBe(10);
  });
});

describe('the scheduler with request classes', () => {
  let engine: Engine;
  beforeAll(async () => {
    engine = await Engine.load(TINY);
  });
  const V = () => engine.config.vocabSize;
  const req = (id: string, seed: number, chunks?: number[][]): ServeRequest => ({
    id,
    tenantSalt: '',
    chunks: chunks ?? [randomTokens(24, 100 + seed, 5, V()), randomTokens(16, 200 + seed, 5, V())],
    question: randomTokens(4, 300 + seed, 5, V()),
    maxTokens: 4,
    mode: { mode: 'attnlink', k: 4 },
    ignoreEos: true,
  });

  test('interactive requests that arrive while a batch runs are served before the batch requests still waiting', async () => {
    const served: string[] = [];
    const sched = new Scheduler(() => ({ engine, source: compileSource(engine) }), { maxBatch: 2, classes: { shortRound: 2 } });
    const done = (p: Promise<unknown>, id: string) => p.then(() => served.push(id));
    const all: Promise<unknown>[] = [];
    for (let i = 0; i < 30; i++) all.push(done(sched.submit(req(`b${i}`, i), undefined, 'batch'), `b${i}`));
    // Once the first batch step has been served, three interactive requests arrive.
    await new Promise<void>((resolve) => {
      const t = setInterval(() => {
        if (sched.stats().served.batch > 0) {
          clearInterval(t);
          resolve();
        }
      }, 1);
    });
    for (let i = 0; i < 3; i++) all.push(done(sched.submit(req(`i${i}`, 100 + i)), `i${i}`));
    await Promise.all(all);
    const firstBatchAfter = served.findIndex((id, k) => id.startsWith('b') && k > served.indexOf('i0'));
    const lastInteractive = Math.max(...['i0', 'i1', 'i2'].map((id) => served.indexOf(id)));
    // Served when the round in progress ended (the batch round is stopped between its steps), before the waiting batch.
    expect(served.indexOf('i0')).toBeLessThan(8);
    expect(lastInteractive).toBeLessThan(firstBatchAfter + 1);
    expect(sched.stats().served).toEqual({ interactive: 3, batch: 30 });
  });

  test('under interactive load, batch keeps its minimum share', async () => {
    const order: RequestClass[] = [];
    const sched = new Scheduler(() => ({ engine, source: compileSource(engine) }), { maxBatch: 4, classes: { minShare: 0.25 } });
    const all: Promise<unknown>[] = [];
    for (let i = 0; i < 40; i++) all.push(sched.submit(req(`b${i}`, i), undefined, 'batch').then(() => order.push('batch')));
    // A closed loop of 6 interactive clients: always some interactive waiting while the batch lasts.
    let stop = false;
    const client = async (c: number) => {
      for (let k = 0; !stop; k++) {
        await sched.submit(req(`i${c}-${k}`, 1000 + c * 100 + k));
        order.push('interactive');
      }
    };
    const clients = Array.from({ length: 6 }, (_, c) => client(c));
    await Promise.all(all);
    stop = true;
    await Promise.all(clients);
    // Until the batch ended, batch was served at least about a quarter of the requests.
    const lastBatch = order.lastIndexOf('batch');
    const share = order.slice(0, lastBatch + 1).filter((c) => c === 'batch').length / (lastBatch + 1);
    expect(share).toBeGreaterThanOrEqual(0.2);
  });

  test('requests sharing a context are linked once across classes', async () => {
    const shared = [randomTokens(24, 7, 5, V()), randomTokens(16, 8, 5, V())];
    const sizes: number[] = [];
    const sched = new Scheduler(() => ({ engine, source: compileSource(engine) }), { onGroup: (n) => sizes.push(n) });
    await Promise.all([sched.submit(req('i', 1, shared)), sched.submit(req('b1', 2, shared), undefined, 'batch'), sched.submit(req('b2', 3, shared), undefined, 'batch')]);
    expect(sizes).toEqual([3]);
  });
});
