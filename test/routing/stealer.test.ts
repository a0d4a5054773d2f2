/**
 * The Stealer's policy (shared/routing/steal.ts) with its inputs as plain functions: which queue it takes from, when
 * it stops, and how its interval backs off. The mechanism (BullMQ jobs taken from a stopped worker's queue) is
 * test/faults/steal.test.ts's, with real processes.
 */
import { Stealer, type Stolen } from '../../shared/routing/steal';
import { workerQueueName } from '../../shared/routing/keys';

async function until(cond: () => boolean, what: string, ms = 5000): Promise<void> {
  const t0 = Date.now();
  while (!cond()) {
    if (Date.now() - t0 > ms) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 2));
  }
}

interface World {
  waiting: Map<string, number>;
  idle: boolean;
  /** Times the stealer asked whether this worker is idle (once per look). */
  idleAsked: number;
  looks: number[];
  taken: string[];
  running: Array<() => void>;
}

function stealer(w: World, o: { intervalMs: number; maxInFlight?: number }): Stealer {
  return new Stealer({
    workerId: 'me',
    live: async () => ['me', 'a', 'b'],
    waiting: async (names) => {
      w.looks.push(Date.now());
      return names.map((n) => w.waiting.get(n) ?? 0);
    },
    idle: () => {
      w.idleAsked++;
      return w.idle;
    },
    take: async (name): Promise<Stolen | undefined> => {
      const n = w.waiting.get(name) ?? 0;
      if (!n) return undefined;
      w.waiting.set(name, n - 1);
      w.taken.push(name);
      return { done: new Promise<void>((r) => w.running.push(r)) };
    },
    intervalMs: o.intervalMs,
    maxInFlight: o.maxInFlight,
  });
}

const world = (): World => ({ waiting: new Map(), idle: true, idleAsked: 0, looks: [], taken: [], running: [] });

test('takes interactive jobs before batch ones, the fullest queue first, up to maxInFlight, never its own', async () => {
  const w = world();
  w.waiting.set(workerQueueName('a', 'interactive'), 1);
  w.waiting.set(workerQueueName('b', 'interactive'), 2);
  w.waiting.set(workerQueueName('a', 'batch'), 5);
  w.waiting.set(workerQueueName('me', 'interactive'), 9);
  const s = stealer(w, { intervalMs: 5, maxInFlight: 4 });
  s.start();
  await until(() => w.taken.length === 4, '4 stolen jobs');
  expect(w.taken).toEqual([
    workerQueueName('b', 'interactive'),
    workerQueueName('b', 'interactive'),
    workerQueueName('a', 'interactive'),
    workerQueueName('a', 'batch'),
  ]);
  // At maxInFlight it takes no more (three more looks, none reading the queues) until one of them is done.
  const asked = w.idleAsked;
  const looks = w.looks.length;
  await until(() => w.idleAsked >= asked + 3, 'three looks with 4 in hand');
  expect(w.taken).toHaveLength(4);
  expect(w.looks.length).toBe(looks);
  w.running.shift()!();
  await until(() => w.taken.length === 5, 'a fifth once one is done');
  expect(w.waiting.get(workerQueueName('me', 'interactive'))).toBe(9);
  for (const r of w.running) r();
  await s.close();
});

test('backs off only after looks that find nothing; a busy spell does not delay the first look once idle', async () => {
  const w = world();
  const base = 50;
  const s = stealer(w, { intervalMs: base });
  s.start();
  // Idle and nothing to take: the gaps between looks grow (50, 100, 200, 400 ms).
  await until(() => w.looks.length >= 5, '5 looks', 10_000);
  const gaps = w.looks.slice(1).map((t, i) => t - w.looks[i]);
  expect(gaps[3]).toBeGreaterThan(gaps[0] * 3);
  // Busy for 1.2 s: no reads of the other queues, and a look every base interval (backing off here would leave
  // a handful: 50 + 100 + 200 + 400 + 800 ms).
  w.idle = false;
  const looksBefore = w.looks.length;
  const askedBefore = w.idleAsked;
  await new Promise((r) => setTimeout(r, 1200));
  expect(w.looks.length - looksBefore).toBeLessThanOrEqual(1); // at most the one look already under way
  expect(w.idleAsked - askedBefore).toBeGreaterThanOrEqual(8);
  // Work appears in another worker's queue as this one goes idle: taken within a few base intervals, not 16.
  w.waiting.set(workerQueueName('a', 'interactive'), 1);
  const idleAt = Date.now();
  w.idle = true;
  await until(() => w.taken.length === 1, 'the job taken');
  expect(Date.now() - idleAt).toBeLessThan(6 * base);
  for (const r of w.running) r();
  await s.close();
});
