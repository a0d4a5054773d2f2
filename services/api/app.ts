import { createBullBoard } from '@bull-board/api';
import { BullMQAdapter } from '@bull-board/api/bullMQAdapter';
import { ExpressAdapter } from '@bull-board/express';
import express, { type Express, type NextFunction, type Request, type Response } from 'express';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { wallClockMs } from '../../shared/serving/request';
import { auth } from './auth';
import type { ApiDeps } from './deps';
import { answerClientError, ApiError, errorBody, errorHandlerWith } from './errors';
import { openapi } from './openapi';
import { documentsRouter } from './routes/documents';
import { jobsRouter } from './routes/jobs';
import { batchesRouter } from './routes/batches';
import { chatRouter } from './routes/chat';
import { completionsRouter } from './routes/completions';
import { filesRouter } from './routes/files';

/** The HTTP API: a thin shell that validates, enqueues and answers; model work happens in the workers. */
export function createApp(d: ApiDeps): Express {
  const app = express();
  app.disable('x-powered-by');
  app.set('query parser', 'simple');
  // When the request arrived (Server-Timing's `api` part starts here).
  app.use((_req, res, next) => {
    res.locals.arrivedAt = wallClockMs();
    next();
  });
  app.use(requestChecks(typeof d.bodyLimit === 'string' ? undefined : (d.bodyLimit ?? 8 * 1024 * 1024)));

  app.get('/healthz', (_req, res) => {
    res.json({ status: 'ok' });
  });
  app.get('/readyz', async (_req, res) => {
    try {
      await d.redis.ping();
      res.json({ status: 'ready' });
    } catch (e) {
      res.status(503).set('Retry-After', '1').json({ status: 'unavailable', reason: `queue Redis: ${(e as Error).message}` });
    }
  });
  app.get('/metrics', async (_req, res) => {
    res.set('Content-Type', d.registry.contentType).send(await d.registry.metrics());
  });
  app.get('/openapi.json', (_req, res) => {
    res.json(openapi);
  });

  app.use(auth(d.apiKeys));
  const board = new ExpressAdapter();
  board.setBasePath('/admin/queues');
  createBullBoard({ queues: [new BullMQAdapter(d.inference), new BullMQAdapter(d.router.queues.sharedBatch), new BullMQAdapter(d.precompute)], serverAdapter: board });
  // bull-board answers its routes' failures itself (500 {"error":{"key":…}}, whatever the cause); thrown on, they reach
  // the API's error handler like every route's (a queue Redis that does not answer: 503 + Retry-After).
  board.setErrorHandler((err) => {
    throw err;
  });
  const admin = d.adminTenant ?? 'admin';
  app.use(
    '/admin/queues',
    (req, _res, next) => next(d.apiKeys.size && req.tenant !== admin ? new ApiError(404, 'not found', 'invalid_request_error', null, 'not_found') : undefined),
    board.getRouter(),
  );

  app.use(express.json({ limit: d.bodyLimit ?? '8mb' }));
  app.use(documentsRouter(d));
  app.use(jobsRouter(d));
  app.use(completionsRouter(d));
  app.use(chatRouter(d));
  app.use(filesRouter(d));
  app.use(batchesRouter(d));

  app.use((_req, _res, next) => next(new ApiError(404, 'not found', 'invalid_request_error', null, 'not_found')));
  app.use(
    errorHandlerWith(d.errors, (err, req, status) => {
      const e = err as Error;
      (status === 500 ? d.log?.error : d.log?.warn)?.call(d.log, { status, method: req.method, path: req.path, err: e?.message, stack: status === 500 ? e?.stack : undefined }, 'request failed');
    }, d.redis),
  );
  return app;
}

/** A multipart upload's largest body: the file (64 MiB, multer's limit in routes/files.ts) and its few small fields. */
const UPLOAD_BODY_LIMIT = 80 * 1024 * 1024;

/**
 * Checks before any route reads the request. HTTP/1.1 requires a Host header (RFC 9112 §3.2): Node's own check answers
 * an empty 400, so the server leaves it to this one (requireHostHeader: false). A declared Content-Length past what
 * any route takes is refused before a byte of the body is read (413 at once): body-parser and multer read a body they
 * refused to its end before answering, which for a declared 100 GB meant no answer at all.
 */
function requestChecks(jsonLimit: number | undefined) {
  return (req: Request, res: Response, next: NextFunction) => {
    if (req.httpVersionMajor === 1 && req.httpVersionMinor >= 1 && req.headers.host === undefined) {
      res.set('Connection', 'close');
      return next(new ApiError(400, 'an HTTP/1.1 request needs a Host header', 'invalid_request_error', null, 'bad_request'));
    }
    const declared = Number(req.headers['content-length'] ?? 0);
    const limit = req.is('multipart/form-data') ? UPLOAD_BODY_LIMIT : jsonLimit;
    if (limit !== undefined && declared > limit) {
      // A body up to twice the limit is read and dropped after the answer (Node does, on a kept-alive connection), so
      // a client still writing it reads its 413 rather than a broken pipe; past that, the connection closes.
      if (declared > 2 * limit) res.set('Connection', 'close');
      return next(new ApiError(413, `request body too large: ${declared} bytes declared, at most ${limit}`, 'invalid_request_error', null, 'body_too_large'));
    }
    next();
  };
}

/** How long a client may take to send a request's headers, and the whole request (uploads are up to 64 MiB). */
export const HEADERS_TIMEOUT_MS = 10_000;
export const REQUEST_RECEIVE_TIMEOUT_MS = 120_000;

/**
 * The API's HTTP server: requests Node's parser refuses (malformed, headers too large, too slow, an `Expect` it cannot
 * meet) are answered in the same JSON error shape as every other error.
 */
export function createApiServer(app: Express): Server {
  // Node checks both timeouts every connectionsCheckingInterval (30 s by default, which tripled the headers' limit).
  const server = createServer({ requireHostHeader: false, headersTimeout: HEADERS_TIMEOUT_MS, requestTimeout: REQUEST_RECEIVE_TIMEOUT_MS, connectionsCheckingInterval: 1000 }, app);
  server.on('clientError', answerClientError);
  // Any Expect but 100-continue (which Node answers itself): 417, as Node would, with a body.
  server.on('checkExpectation', (req: IncomingMessage, res: ServerResponse) => {
    const body = JSON.stringify(errorBody(`unsupported Expect: ${String(req.headers.expect).slice(0, 64)}`, 'invalid_request_error', null, 'expectation_failed'));
    res.writeHead(417, { 'Content-Type': 'application/json; charset=utf-8', 'Content-Length': Buffer.byteLength(body), Connection: 'close' });
    res.end(req.method === 'HEAD' ? undefined : body);
  });
  return server;
}
