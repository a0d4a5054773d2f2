import { timingSafeEqual } from 'node:crypto';
import type { NextFunction, Request, Response } from 'express';
import { ApiError } from './errors';

declare module 'express-serve-static-core' {
  interface Request {
    tenant: string;
  }
}

/** Parse `key:tenant,key:tenant`. */
export function parseApiKeys(spec: string | undefined): Map<string, string> {
  const m = new Map<string, string>();
  for (const pair of (spec ?? '').split(',').map((s) => s.trim()).filter(Boolean)) {
    const i = pair.lastIndexOf(':');
    if (i <= 0 || i === pair.length - 1) throw new Error(`API_KEYS entry must be key:tenant, got one without a tenant`);
    m.set(pair.slice(0, i), pair.slice(i + 1));
  }
  return m;
}

function safeLookup(keys: Map<string, string>, token: string): string | undefined {
  const t = Buffer.from(token);
  let found: string | undefined;
  for (const [k, tenant] of keys) {
    const b = Buffer.from(k);
    if (b.length === t.length && timingSafeEqual(b, t)) found = tenant;
  }
  return found;
}

/** Bearer API keys → tenant. Without configured keys every request is tenant `default`. */
export function auth(keys: Map<string, string>) {
  return (req: Request, _res: Response, next: NextFunction) => {
    if (!keys.size) {
      req.tenant = 'default';
      return next();
    }
    const h = req.get('authorization') ?? '';
    const m = /^Bearer\s+(\S+)$/i.exec(h);
    const tenant = m ? safeLookup(keys, m[1]) : undefined;
    if (!tenant) return next(new ApiError(401, 'missing or invalid API key (Authorization: Bearer <key>)', 'authentication_error', null, 'invalid_api_key'));
    req.tenant = tenant;
    next();
  };
}
