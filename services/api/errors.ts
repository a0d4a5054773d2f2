import type { NextFunction, Request, Response } from 'express';
import type { ErrorMetrics } from '../../shared/metrics/metrics';
import { ResolveError } from '../../shared/serving/resolve';

/** An error with an HTTP status, answered in OpenAI's error shape. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly type = 'invalid_request_error',
    readonly param: string | null = null,
    readonly code: string | null = null,
    readonly retryAfter?: number,
  ) {
    super(message);
  }
}

export function errorBody(message: string, type: string, param: string | null = null, code: string | null = null) {
  return { error: { message, type, param, code } };
}

/** Errors from a Redis that does not answer (the queue's): the API answers 503 with Retry-After. */
export function isRedisDown(e: unknown): boolean {
  const m = (e as Error)?.message ?? '';
  return /enableOfflineQueue|Connection is closed|ECONNREFUSED|ECONNRESET|Stream isn't writeable|MaxRetriesPerRequest|ETIMEDOUT|connect E/.test(m);
}

/** The Express error handler, counting errors by kind: every error leaves as JSON, never as a stack trace. */
export function errorHandlerWith(errors?: ErrorMetrics) {
  return (err: unknown, req: Request, res: Response, next: NextFunction): void => {
    errorHandler(err, req, res, next);
    const s = res.statusCode;
    errors?.count(s === 503 ? 'queue' : s === 504 ? 'timeout' : s >= 500 ? 'internal' : 'bad_request');
  };
}

/** Express error handler: every error leaves as JSON, never as a stack trace. */
export function errorHandler(err: unknown, _req: Request, res: Response, _next: NextFunction): void {
  if (res.headersSent) {
    res.end();
    return;
  }
  if (err instanceof ApiError) {
    if (err.retryAfter !== undefined) res.set('Retry-After', String(err.retryAfter));
    res.status(err.status).json(errorBody(err.message, err.type, err.param, err.code));
    return;
  }
  if (err instanceof ResolveError) {
    res.status(err.status).json(errorBody(err.message, 'invalid_request_error', err.param, err.code));
    return;
  }
  const e = err as { type?: string; status?: number; message?: string; code?: string };
  if (e?.type === 'entity.parse.failed') {
    res.status(400).json(errorBody(`malformed JSON body: ${e.message}`, 'invalid_request_error', null, 'invalid_json'));
    return;
  }
  if (e?.type === 'entity.too.large' || e?.code === 'LIMIT_FILE_SIZE') {
    res.status(413).json(errorBody('request body too large', 'invalid_request_error', null, 'body_too_large'));
    return;
  }
  if (/timed out/i.test(e?.message ?? '')) {
    res.status(504).json(errorBody('the request timed out in the queue or the worker', 'server_error', null, 'timeout'));
    return;
  }
  if (isRedisDown(err)) {
    res.set('Retry-After', '1').status(503).json(errorBody('the queue is unavailable; retry shortly', 'server_error', null, 'queue_unavailable'));
    return;
  }
  if (typeof e?.status === 'number' && e.status >= 400 && e.status < 500) {
    res.status(e.status).json(errorBody(e.message ?? 'bad request', 'invalid_request_error'));
    return;
  }
  res.status(500).json(errorBody('internal error', 'server_error'));
}
