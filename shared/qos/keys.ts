import type { RequestClass } from '../queue/contracts';

/**
 * Quality of service's Redis keys, beside the queues under the queue prefix. The queue prefix holds a {hash tag} (as
 * shared/routing/keys.ts explains), so these keys share the queues' slot and the scripts that touch a queue's lists
 * and these keys together run on a Redis Cluster.
 *
 * - `fair:<queue>`: hash, a queue's fair queuing state: `v` (its virtual time) and `t:<tenant>` (each tenant's last tag).
 * - `queued:<class>:<tenant>`: sorted set of a tenant's job ids that wait to start, scored by when they were admitted
 *   (added at enqueue, removed when the job starts or is removed): the exact count TENANT_MAX_QUEUED caps, and the
 *   waiting-requests metric.
 * - `rate:<tenant>`: hash, a tenant's token bucket (TENANT_RATE).
 * - `tenants`: set of every tenant that enqueued (the metric reads their sets).
 */
export class QosKeys {
  readonly tenants: string;
  constructor(readonly queuePrefix: string) {
    this.tenants = `${queuePrefix}:qos:tenants`;
  }

  fair(queueName: string): string {
    return `${this.queuePrefix}:qos:fair:${queueName}`;
  }

  /** BullMQ's own keys of a queue (its `wait` list and `prioritized` zset): the fair queuing script reads their sizes. */
  queueKey(queueName: string, type: 'wait' | 'prioritized'): string {
    return `${this.queuePrefix}:${queueName}:${type}`;
  }

  queued(cls: RequestClass, tenant: string): string {
    return `${this.queuePrefix}:qos:queued:${cls}:${tenant}`;
  }

  rate(tenant: string): string {
    return `${this.queuePrefix}:qos:rate:${tenant}`;
  }

  /** Every key of quality of service (tests and benches drop them). */
  pattern(): string {
    return `${this.queuePrefix}:qos:*`;
  }
}
