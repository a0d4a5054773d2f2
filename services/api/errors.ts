import type { NextFunction, Request, Response } from 'express';

/** An error with an HTTP status, answered in OpenAI's error shape. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly type = 'invalid_request_error',
    readonly param: string | null = null,
    readonly code: string | null = null,
  ) {
    super(message);
  }
}

export function errorBody(message: string, type: string, param: string | null = null, code: string | null = null) {
  return { error: { message, type, param, code } };
}

/** Express error handler: every error leaves as JSON, never as a stack trace. */
export function errorHandler(err: unknown, _req: Request, res: Response, _next: NextFunction): void {
  if (err instanceof ApiError) {
    res.status(err.status).json(errorBody(err.message, err.type, err.param, err.code));
    return;
  }
  const e = err as { type?: string; status?: number; message?: string };
  if (e?.type === 'entity.parse.failed') {
    res.status(400).json(errorBody(`malformed JSON body: ${e.message}`, 'invalid_request_error', null, 'invalid_json'));
    return;
  }
  if (e?.type === 'entity.too.large') {
    res.status(413).json(errorBody('request body too large', 'invalid_request_error', null, 'body_too_large'));
    return;
  }
  if (typeof e?.status === 'number' && e.status >= 400 && e.status < 500) {
    res.status(e.status).json(errorBody(e.message ?? 'bad request', 'invalid_request_error'));
    return;
  }
  res.status(500).json(errorBody('internal error', 'server_error'));
}
