import type { NextFunction, Request, Response } from 'express';
import { STATUS_CODES } from 'node:http';
import type { Duplex } from 'node:stream';
import { ConnectionClosedError } from 'bullmq';
import { MaxRetriesPerRequestError } from 'ioredis/built/errors';
import type { ErrorMetrics } from '../../shared/metrics/metrics';
import { TenantLimitError } from '../../shared/qos';
import { ResolveError } from './resolve';

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

/**
 * A request the API accepted that failed in a worker (its reply, or its job's failed reason): 500, with the worker's
 * reason, which names the request's problem (an operator's log has the rest); not a bare "internal error".
 */
export class WorkerError extends Error {}

/** The answer when the queue's Redis does not answer: 503 with Retry-After. */
export function queueUnavailable(): ApiError {
  return new ApiError(503, 'the queue is unavailable; retry shortly', 'server_error', null, 'queue_unavailable', 1);
}

/** A request whose job is gone from the queue before it ended: the queue's Redis lost it (restarted empty, flushed). */
export class JobVanishedError extends Error {
  constructor(readonly jobId: string) {
    super(`request ${jobId} is no longer in the queue`);
  }
}

/** ioredis's errors for commands it gave up on: MaxRetriesPerRequestError and its base, redis-errors' AbortError. */
const AbortError = Object.getPrototypeOf(MaxRetriesPerRequestError) as new (...a: unknown[]) => Error;

/** Socket-level failures to reach a server (Node's `code`s). */
const CONNECTION_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'EPIPE', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENETUNREACH', 'ENOTFOUND', 'EAI_AGAIN']);

/**
 * What isRedisDown needs of a connection: ioredis's `status` ('ready' when it answers) and its socket. A socket that
 * closed is seen before the status changes: ioredis then refuses commands with a bare Error while still 'ready'.
 */
export interface ConnectionState {
  readonly status: string;
  readonly stream?: { readonly writable: boolean } | null;
}

function connectionDown(c: ConnectionState): boolean {
  return c.status !== 'ready' || (c.stream != null && !c.stream.writable);
}

/**
 * Errors from a Redis that does not answer (the queue's): the API answers 503 with Retry-After. Classified by class and
 * code, never by message text: ioredis's MaxRetriesPerRequestError and AbortError (commands flushed or aborted when
 * the connection dropped), BullMQ's ConnectionClosedError, a socket error's code (ECONNREFUSED, ECONNRESET, EPIPE,
 * ETIMEDOUT, …), also as an error's `cause`. ioredis rejects some commands with a bare `Error` and nothing else to
 * tell them by ("Connection is closed.", the offline queue's refusal): such a bare Error counts when `connection`, the
 * queue's, is not ready at that moment, or its socket no longer takes writes. Other classes (a TypeError, a ReplyError) are not the connection's.
 */
export function isRedisDown(e: unknown, connection?: ConnectionState): boolean {
  for (let x = e, depth = 0; x && typeof x === 'object' && depth < 4; x = (x as { cause?: unknown }).cause, depth++) {
    if (x instanceof AbortError || x instanceof ConnectionClosedError) return true;
    const code = (x as { code?: unknown }).code;
    if (typeof code === 'string' && CONNECTION_CODES.has(code)) return true;
  }
  return !!connection && connectionDown(connection) && e instanceof Error && Object.getPrototypeOf(e) === Error.prototype;
}

/**
 * The Express error handler, counting errors by kind: every error leaves as JSON, never as a stack trace. A 5xx's
 * cause goes to the log (`onServerError`): the client's "internal error" tells an operator nothing.
 */
export function errorHandlerWith(errors?: ErrorMetrics, onServerError?: (err: unknown, req: Request, status: number) => void, queue?: ConnectionState) {
  return (err: unknown, req: Request, res: Response, _next: NextFunction): void => {
    // An error after the answer started (a stream) cannot change its status: it is the server's, and is logged.
    const started = res.headersSent;
    answerError(err, res, queue);
    const s = started ? 500 : res.statusCode;
    errors?.count(s === 503 ? 'queue' : s === 504 ? 'timeout' : s >= 500 ? 'internal' : 'bad_request');
    if (s >= 500) onServerError?.(err, req, s);
  };
}

/** Multipart upload errors (multer's limits, busboy's parse errors) are the client's: 413 or 400, never 500. */
export function uploadError(err: unknown): ApiError {
  const e = err as { name?: string; code?: string; message?: string; field?: string };
  if (e?.code === 'LIMIT_FILE_SIZE') return new ApiError(413, 'file too large', 'invalid_request_error', 'file', 'body_too_large');
  if (e?.name === 'MulterError') return new ApiError(400, `multipart: ${e.message}${e.field ? ` (field ${JSON.stringify(e.field.slice(0, 64))})` : ''}`, 'invalid_request_error', 'file', 'invalid_multipart');
  return new ApiError(400, `malformed multipart body: ${e?.message ?? 'unreadable'}`, 'invalid_request_error', 'file', 'invalid_multipart');
}

/**
 * For the HTTP server's 'clientError' event (a request Node could not parse: bad request line or headers, headers
 * past the limit): answer in the same JSON error shape as every other error, then close.
 */
export function answerClientError(err: Error & { code?: string; rawPacket?: Buffer }, socket: Duplex): void {
  if (err.code === 'ECONNRESET' || !socket.writable) {
    socket.destroy();
    return;
  }
  const status = err.code === 'HPE_HEADER_OVERFLOW' ? 431 : err.code === 'ERR_HTTP_REQUEST_TIMEOUT' ? 408 : 400;
  const message = status === 431 ? 'request headers too large' : status === 408 ? 'request timed out' : 'malformed HTTP request';
  const body = JSON.stringify(errorBody(message, 'invalid_request_error', null, status === 431 ? 'headers_too_large' : 'bad_request'));
  // An answer to HEAD carries no body (the packet that failed starts with the request line when the line is in it).
  const head = err.rawPacket?.subarray(0, 5).toString('latin1') === 'HEAD ';
  socket.end(
    `HTTP/1.1 ${status} ${STATUS_CODES[status]}\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${head ? '' : body}`,
  );
}

/** Answer an error: every error leaves as JSON, never as a stack trace. `queue`: the queue's connection (isRedisDown). */
export function answerError(err: unknown, res: Response, queue?: ConnectionState): void {
  if (res.headersSent) {
    res.end();
    return;
  }
  if (err instanceof ApiError) {
    if (err.retryAfter !== undefined) res.set('Retry-After', String(err.retryAfter));
    res.status(err.status).json(errorBody(err.message, err.type, err.param, err.code));
    return;
  }
  if (err instanceof TenantLimitError) {
    // A tenant past its limit (TENANT_MAX_QUEUED, TENANT_RATE): 429, Retry-After, and the limit named in `code` and `param`.
    res.set('Retry-After', String(err.retryAfterS));
    const code = err.limit === 'max_queued_requests' ? 'tenant_queue_limit_exceeded' : 'tenant_rate_limit_exceeded';
    res.status(429).json(errorBody(err.message, 'rate_limit_error', err.limit, code));
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
  // A client's own failure (body-parser's aborted request carries ECONNABORTED and a 4xx status) is not the queue's.
  const clients = typeof e?.status === 'number' && e.status >= 400 && e.status < 500;
  if ((!clients && isRedisDown(err, queue)) || err instanceof JobVanishedError) {
    answerError(queueUnavailable(), res);
    return;
  }
  if (err instanceof RequestTimeoutError) {
    res.status(504).json(errorBody('the request timed out in the queue or the worker', 'server_error', null, 'timeout'));
    return;
  }
  if (err instanceof WorkerError) {
    res.status(500).json(errorBody(`the request failed in the worker: ${err.message}`, 'server_error', null, 'worker_error'));
    return;
  }
  if (typeof e?.status === 'number' && e.status >= 400 && e.status < 500) {
    res.status(e.status).json(errorBody(e.message ?? 'bad request', 'invalid_request_error'));
    return;
  }
  res.status(500).json(errorBody('internal error', 'server_error'));
}

/** A request that got no outcome within REQUEST_TIMEOUT_MS (504). */
export class RequestTimeoutError extends Error {
  constructor(
    readonly jobId: string,
    readonly timeoutMs: number,
  ) {
    super(`request ${jobId} timed out after ${timeoutMs} ms`);
  }
}
