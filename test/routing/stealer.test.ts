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
  /** Times the stealer asked whether this worker is idle (once at each look, and again before each take). */
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
      // Called once per class a look reads: one time stamp a look, at its first (interactive) read.
      if (names.includes(workerQueueName('a', 'interactive'))) w.looks.push(Date.now());
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
  // Fake timers: the intervals are exact, whatever else runs on the machine.
  jest.useFakeTimers();
  try {
    const w = world();
    const base = 50;
    const s = stealer(w, { intervalMs: base });
    const t0 = Date.now();
    s.start();
    // Idle, nothing to take: each look doubles the interval, up to 16 × base.
    await jest.advanceTimersByTimeAsync(1550);
    expect(w.looks.map((t) => t - t0)).toEqual([50, 150, 350, 750, 1550]);
    // Busy for 2 s: no reads of the other queues, and a look (skipped) every base interval once the 800 ms wait set
    // before the spell has run out. Backing off on skipped looks too would leave two (at 2,350 and 3,150 ms).
    w.idle = false;
    const asked = w.idleAsked;
    await jest.advanceTimersByTimeAsync(2000);
    expect(w.looks).toHaveLength(5);
    expect(w.idleAsked - asked).toBe(25); // 2,350, then 2,400, 2,450, ..., 3,550
    // Work appears in another worker's queue as this one goes idle: taken at the next base interval.
    w.waiting.set(workerQueueName('a', 'interactive'), 1);
    w.idle = true;
    await jest.advanceTimersByTimeAsync(base);
    expect(w.taken).toEqual([workerQueueName('a', 'interactive')]);
    for (const r of w.running) r();
    await s.close();
  } finally {
    jest.useRealTimers();
  }
});
