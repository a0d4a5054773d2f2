/**
 * Bounded tenant label values for metrics: the first `max` tenants a process sees keep their names, every later one is
 * `other` (a process that sees many tenants does not grow a series per tenant). The order is each process's own, so a
 * tenant seen late by one process may be `other` there and named in another.
 */
export class TenantLabels {
  private readonly named = new Set<string>();
  constructor(readonly max = 20) {}

  of(tenant: string): string {
    if (this.named.has(tenant)) return tenant;
    if (this.named.size < this.max && tenant !== OTHER) {
      this.named.add(tenant);
      return tenant;
    }
    return OTHER;
  }
}

export const OTHER = 'other';
