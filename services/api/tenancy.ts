/**
 * The KV store key salt of a tenant. Isolated by default: the same text cached by two tenants is two entries, so
 * timing can never tell one tenant what another has cached. Sharing across tenants is an explicit deployment choice.
 */
export function tenantSalt(tenant: string, shareAcrossTenants: boolean): string {
  return shareAcrossTenants ? '' : `tenant:${tenant}`;
}
