import type { z } from 'zod';
import { ID_PATTERN } from '../../shared/catalog';
import { supportedModes, type ModelConfig } from '../../shared/engine';
import type { ServeRequest } from '../../shared/serving/request';
import { ApiError } from './errors';

export function parseBody<T>(schema: z.ZodType<T>, body: unknown, where = ''): T {
  const r = schema.safeParse(body);
  if (!r.success) {
    const i = r.error.issues[0];
    const path = [where, ...i.path.map(String)].filter(Boolean).join('.');
    throw new ApiError(400, `${path || 'body'}: ${i.message}`, 'invalid_request_error', path || null);
  }
  return r.data;
}

export function checkId(id: string, what: string): string {
  if (!ID_PATTERN.test(id)) throw new ApiError(404, `${what} not found`, 'invalid_request_error', 'id', 'not_found');
  return id;
}

/**
 * Refuse (400) a request whose link mode the model cannot serve (CacheBlend without per-layer graphs), from the model's
 * config alone, before anything is enqueued: a worker would fail it on every attempt. `where` names a batch's request.
 */
export function checkModes(model: ModelConfig, requests: readonly ServeRequest[], where: (i: number) => string = () => ''): void {
  const { refused } = supportedModes(model);
  requests.forEach((r, i) => {
    const why = refused[r.mode.mode];
    if (!why) return;
    const at = where(i);
    throw new ApiError(400, `${at ? `${at}: ` : ''}mode '${r.mode.mode}' is not available: ${why}`, 'invalid_request_error', at ? `${at}.mode` : 'mode', 'mode_not_supported');
  });
}
