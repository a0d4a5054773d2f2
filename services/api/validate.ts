import type { z } from 'zod';
import { ID_PATTERN } from '../../shared/catalog';
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
