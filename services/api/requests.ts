import type { ServeRequest } from '../../shared/serving/request';
import type { ApiDeps } from './deps';
import { RequestSpec, resolveRequest, ResolveError, type DefaultMaxTokens } from './resolve';
import { tenantSalt } from './tenancy';
import { parseBody } from './validate';

/** A client request ready to resolve: its spec (checked against RequestSpec here), and tokens before its documents (a chat template's head). */
export interface Prepared {
  spec: unknown;
  prefix?: number[];
}

/**
 * Resolve client requests to the worker's requests (documents to chunks, limits checked): /v1/jobs, completions, chat
 * and batch files alike. An error names the request it is about (`where`).
 */
export async function resolveAll(
  d: ApiDeps,
  tenant: string,
  items: readonly Prepared[],
  idOf: (i: number) => string,
  where: (i: number) => string,
  defaultMaxTokens?: DefaultMaxTokens,
): Promise<ServeRequest[]> {
  const salt = tenantSalt(tenant, d.shareAcrossTenants);
  const out: ServeRequest[] = [];
  for (let i = 0; i < items.length; i++) {
    const spec = parseBody(RequestSpec, items[i].spec, where(i));
    try {
      out.push(await resolveRequest(d, spec, idOf(i), tenant, salt, defaultMaxTokens, items[i].prefix));
    } catch (e) {
      if (e instanceof ResolveError) throw new ResolveError(`${where(i)}: ${e.message}`, e.status, e.param ? `${where(i)}.${e.param}` : where(i), e.code);
      throw e;
    }
  }
  return out;
}
