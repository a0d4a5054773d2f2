import { createBullBoard } from '@bull-board/api';
import { BullMQAdapter } from '@bull-board/api/bullMQAdapter';
import { ExpressAdapter } from '@bull-board/express';
import express, { type Express } from 'express';
import { wallClockMs } from '../../shared/serving/request';
import { auth } from './auth';
import type { ApiDeps } from './deps';
import { ApiError, errorHandlerWith } from './errors';
import { openapi } from './openapi';
import { documentsRouter } from './routes/documents';
import { jobsRouter } from './routes/jobs';
import { openaiRouter } from './routes/openai';

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
  createBullBoard({ queues: [new BullMQAdapter(d.inference), new BullMQAdapter(d.precompute)], serverAdapter: board });
  const admin = d.adminTenant ?? 'admin';
  app.use(
    '/admin/queues',
    (req, _res, next) => next(d.apiKeys.size && req.tenant !== admin ? new ApiError(404, 'not found', 'invalid_request_error', null, 'not_found') : undefined),
    board.getRouter(),
  );

  app.use(express.json({ limit: d.bodyLimit ?? '8mb' }));
  app.use(documentsRouter(d));
  app.use(jobsRouter(d));
  app.use(openaiRouter(d));

  app.use((_req, _res, next) => next(new ApiError(404, 'not found', 'invalid_request_error', null, 'not_found')));
  app.use(
    errorHandlerWith(d.errors, (err, req, status) => {
      const e = err as Error;
      (status === 500 ? d.log?.error : d.log?.warn)?.call(d.log, { status, method: req.method, path: req.path, err: e?.message, stack: status === 500 ? e?.stack : undefined }, 'request failed');
    }, d.redis),
  );
  return app;
}
