/**
 * The routing rule (shared/routing/score.ts) against the rule as its comment states it, computed the plain way here:
 * cached tokens by tier and home, minus λ × backlog, the best score winning and ties going to the highest rendezvous
 * weight of the request's context. Random inputs with many ties (few distinct token counts and backlogs).
 */
import { rng } from '../faults/fuzz';
import { DEFAULT_WEIGHTS, homeOf, rendezvous, scoreWorkers, type Residence, type ScoreWeights } from '../../shared/routing/score';

function reference(tokens: number[], chunkHashes: number[], held: Residence[][], backlog: number[], workerHashes: number[], contextHash: number, w: ScoreWeights): number {
  const scores = workerHashes.map((_, i) => {
    let cached = 0;
    tokens.forEach((t, c) => {
      if (held[i][c] === 'm') cached += t;
      else if (held[i][c] === 'd') cached += t * w.disk;
      else if (held.every((row) => row[c] === undefined) && homeOf(chunkHashes[c], workerHashes) === i) cached += t * w.home;
    });
    return cached - w.load * backlog[i];
  });
  const top = Math.max(...scores);
  const tied = scores.map((s, i) => (s === top ? i : -1)).filter((i) => i >= 0);
  return tied.reduce((a, b) => (rendezvous(contextHash, workerHashes[b]) > rendezvous(contextHash, workerHashes[a]) ? b : a));
}

test('scoreWorkers picks what the stated rule picks (2,000 random cases, ties included)', () => {
  const r = rng(7);
  const rnd = r.next;
  const pick = r.pick;
  let ties = 0;
  for (let n = 0; n < 2000; n++) {
    const workers = 1 + Math.floor(rnd() * 8);
    const k = Math.floor(rnd() * 6);
    const tokens = Array.from({ length: k }, () => pick([64, 128, 256]));
    const chunkHashes = Array.from({ length: k }, () => Math.floor(rnd() * 2 ** 32));
    const held = Array.from({ length: workers }, () => Array.from({ length: k }, () => pick<Residence>(['m', 'd', undefined, undefined])));
    const backlog = Array.from({ length: workers }, () => pick([0, 0, 1, 2]));
    const workerHashes = Array.from({ length: workers }, () => Math.floor(rnd() * 2 ** 32));
    const contextHash = Math.floor(rnd() * 2 ** 32);
    const w = pick([DEFAULT_WEIGHTS, { disk: 0.5, home: 0, load: 64 }, { disk: 0, home: 1, load: 0 }]);
    const got = scoreWorkers({ tokens, chunkHashes, held, backlog, workerHashes, contextHash }, w);
    expect([n, got.best]).toEqual([n, reference(tokens, chunkHashes, held, backlog, workerHashes, contextHash, w)]);
    if (got.scores.filter((s) => s === got.scores[got.best]).length > 1) ties++;
  }
  // the tie-break was exercised, not only strict winners
  expect(ties).toBeGreaterThan(200);
});
