import { Router, type Response } from 'express';
import { z } from 'zod';
import type { BatchRecord } from '../../../shared/catalog';
import { MAX_BATCH_REQUESTS } from '../limits';
import { resolveAll } from '../requests';
import type { ApiDeps } from '../deps';
import { ApiError } from '../errors';
import { cancelBatch, newId, startBatch } from '../submit';
import { checkId, parseBody } from '../validate';

export const JobBody = z
  .object({
    requests: z.array(z.unknown()).min(1).max(MAX_BATCH_REQUESTS),
    metadata: z.record(z.string(), z.union([z.string(), z.number(), z.boolean(), z.null()])).optional(),
  })
  .strict();

const TERMINAL = new Set(['completed', 'failed', 'expired', 'cancelled']);

function jobView(b: BatchRecord) {
  return {
    id: b.id,
    object: 'job',
    status: b.status,
    total: b.total,
    completed: b.completed,
    failed: b.failed,
    progress: b.total ? (b.completed + b.failed) / b.total : 1,
    created_at: b.createdAt,
    completed_at: b.completedAt ?? null,
    metadata: b.metadata,
  };
}

async function getJob(d: ApiDeps, tenant: string, id: string): Promise<BatchRecord> {
  const b = await d.batches.get(tenant, checkId(id, 'job'));
  if (!b || b.kind !== 'jobs') throw new ApiError(404, `job ${id} not found`, 'invalid_request_error', 'id', 'not_found');
  return b;
}

/** Native batch jobs: POST a batch → 202; GET status, progress and results; SSE progress; cancel. */
export function jobsRouter(d: ApiDeps): Router {
  const r = Router();

  r.post('/v1/jobs', async (req, res) => {
    const body = parseBody(JobBody, req.body);
    const id = newId('job_');
    const requests = await resolveAll(d, req.tenant, body.requests.map((spec) => ({ spec })), (i) => `${id}-r${i}`, (i) => `requests[${i}]`);
    await d.admission.admit(requests.length);
    const b: BatchRecord = {
      id,
      tenant: req.tenant,
      kind: 'jobs',
      status: 'in_progress',
      total: requests.length,
      completed: 0,
      failed: 0,
      createdAt: Math.floor(Date.now() / 1000),
      metadata: body.metadata ?? {},
    };
    await startBatch(d, b, requests);
    res.status(202).location(`/v1/jobs/${id}`).json(jobView(b));
  });

  r.get('/v1/jobs/:id', async (req, res) => {
    const b = await getJob(d, req.tenant, req.params.id);
    const withResults = b.status === 'completed' || req.query.results === 'true';
    const results = withResults
      ? (await d.batches.results(req.tenant, b.id)).map((x) => ({ index: x.index, ok: x.ok, ...(x.ok ? { result: x.body } : { error: x.body }) }))
      : undefined;
    res.json({ ...jobView(b), results });
  });

  r.get('/v1/jobs/:id/events', async (req, res: Response) => {
    let b = await getJob(d, req.tenant, req.params.id);
    res.writeHead(200, { 'Content-Type': 'text/event-stream', 'Cache-Control': 'no-cache', Connection: 'keep-alive' });
    let closed = false;
    req.on('close', () => (closed = true));
    let last = '';
    while (!closed) {
      const v = JSON.stringify(jobView(b));
      if (v !== last) {
        res.write(`event: progress\ndata: ${v}\n\n`);
        last = v;
      }
      if (TERMINAL.has(b.status)) break;
      await new Promise((r) => setTimeout(r, 250));
      b = (await d.batches.get(req.tenant, b.id)) ?? b;
    }
    if (!closed) res.write(`event: done\ndata: ${JSON.stringify({ id: b.id, status: b.status })}\n\n`);
    res.end();
  });

  r.post('/v1/jobs/:id/cancel', async (req, res) => {
    res.json(jobView(await cancelBatch(d, await getJob(d, req.tenant, req.params.id))));
  });

  return r;
}
