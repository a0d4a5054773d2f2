import { QUEUES, type RequestClass } from '../queue/contracts';

/** A worker id: it names the worker's own queue, so it is what a BullMQ queue name may hold (no ':'). */
export const WORKER_ID_PATTERN = /^[A-Za-z0-9_.-]{1,64}$/;

/**
 * The shared inference queue of a request class: QUEUES.inference for interactive requests (the name it had before
 * classes), `inference-batch` for batch requests.
 */
export function sharedQueueName(cls: RequestClass = 'interactive'): string {
  return cls === 'batch' ? `${QUEUES.inference}-batch` : QUEUES.inference;
}

/**
 * A worker's own inference queue of a request class: `inference-w-<id>` (interactive), `inference-batch-w-<id>`
 * (batch). No worker id makes one name the other's (an interactive name never starts with `inference-batch`).
 */
export function workerQueueName(workerId: string, cls: RequestClass = 'interactive'): string {
  if (!WORKER_ID_PATTERN.test(workerId)) throw new Error(`invalid worker id ${JSON.stringify(workerId)} (want ${WORKER_ID_PATTERN})`);
  return `${sharedQueueName(cls)}-w-${workerId}`;
}

/**
 * The routing index's Redis keys, beside the queues under the queue prefix. The queue prefix holds a {hash tag}
 * (BullMQ needs one on a Redis Cluster, and the default `{epic}` is one), so every key here shares the queues' slot
 * and the index's scripts, which touch several keys, run on a cluster.
 *
 * - `workers`: sorted set, worker id → when its heartbeat runs out (ms, Redis's clock). Live: score > now.
 * - `orphans`: sorted set, dead worker id → when its adopter's claim runs out (another worker then adopts its queue).
 * - `queues`: set of every worker id that ever had a queue (the API's cancel and admission look at their queues).
 * - `chunks:<id>`: hash, chunk key → 'm' (memory tier) or 'd' (disk tier); it expires with the worker's heartbeat.
 */
export class RoutingKeys {
  readonly workers: string;
  readonly orphans: string;
  readonly queues: string;
  constructor(readonly queuePrefix: string) {
    this.workers = `${queuePrefix}:routing:workers`;
    this.orphans = `${queuePrefix}:routing:orphans`;
    this.queues = `${queuePrefix}:routing:queues`;
  }

  chunks(workerId: string): string {
    return `${this.queuePrefix}:routing:chunks:${workerId}`;
  }

  /** Every key of the index (tests and benches drop them). */
  pattern(): string {
    return `${this.queuePrefix}:routing:*`;
  }
}
