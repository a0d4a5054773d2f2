/** ROUTING: how the API picks an inference queue per request (router.ts). */
export const ROUTING_MODES = ['cache', 'round-robin', 'shared'] as const;
export type RoutingMode = (typeof ROUTING_MODES)[number];

/**
 * What became of a job: the API's router sends it to `best` (the best-scoring worker's own queue), `fallback` (the
 * shared queue: no live worker, or the best one's own queue is backed up past the bound), `round_robin`, `shared`
 * (ROUTING=shared); workers count `stolen` (a fallback job an idle worker took from the shared queue) and `adopted`
 * (a job of a dead worker's queue).
 */
export const ROUTING_DECISIONS = ['best', 'stolen', 'fallback', 'round_robin', 'shared', 'adopted'] as const;
export type RoutingDecision = (typeof ROUTING_DECISIONS)[number];
