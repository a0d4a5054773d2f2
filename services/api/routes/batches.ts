import { Router } from 'express';
import { z } from 'zod';
import type { BatchRecord, FileRecord } from '../../../shared/catalog';
import type { ServeResult } from '../../../shared/serving/result';
import type { ApiDeps } from '../deps';
import { ApiError } from '../errors';
import { MAX_BATCH_REQUESTS } from '../limits';
import { ChatBody, chatObject, CompletionBody, completionObject, maxTokensDefault, prepare } from '../openai';
import { resolveAll, type Prepared } from '../requests';
import { cancelBatch, newId, startBatch } from '../submit';
import { checkId, parseBody } from '../validate';

export const BatchBody = z
  .object({
    input_file_id: z.string().min(1).max(128),
    endpoint: z.enum(['/v1/completions', '/v1/chat/completions']),
    completion_window: z.literal('24h'),
    metadata: z.record(z.string(), z.string()).nullable().optional(),
  })
  .strict();

export const BatchLine = z
  .object({
    custom_id: z.string().min(1).max(512),
    method: z.literal('POST'),
    url: z.string(),
    body: z.record(z.string(), z.unknown()),
  })
  .strict();

function batchObject(b: BatchRecord) {
  const status = b.status;
  return {
    id: b.id,
    object: 'batch',
    endpoint: b.kind,
    errors: null,
    input_file_id: b.inputFileId,
    completion_window: '24h',
    status,
    output_file_id: b.outputFileId ?? null,
    error_file_id: b.errorFileId ?? null,
    created_at: b.createdAt,
    in_progress_at: b.createdAt,
    expires_at: b.createdAt + 24 * 3600,
    finalizing_at: b.completedAt ?? null,
    completed_at: status === 'completed' ? (b.completedAt ?? null) : null,
    failed_at: null,
    expired_at: null,
    cancelling_at: b.cancelledAt ?? null,
    cancelled_at: status === 'cancelled' ? (b.cancelledAt ?? null) : null,
    request_counts: { total: b.total, completed: b.completed, failed: b.failed },
    metadata: b.metadata,
  };
}

/**
 * A finished batch's output and error files (ids derived from the batch id). A completed batch's are written once. A
 * cancelled batch's hold what finished before the cancel, as OpenAI's do; a request a worker held at the cancel may
 * still finish after it, so they are written again when more results have landed since.
 */
function finalizer(d: ApiDeps): (b: BatchRecord) => Promise<BatchRecord> {
  // One writer per batch in this API: two GETs writing a cancelled batch's files at once could leave the older
  // content last with the newer count beside it (never rewritten again).
  const finalizing = new Map<string, Promise<BatchRecord>>();
  return (b) => {
    const key = `${b.tenant}\0${b.id}`;
    const running = finalizing.get(key);
    if (running) return running;
    const p = writeOutputs(d, b).finally(() => finalizing.delete(key));
    finalizing.set(key, p);
    return p;
  };
}

async function writeOutputs(d: ApiDeps, b: BatchRecord): Promise<BatchRecord> {
  if (b.status !== 'completed' && b.status !== 'cancelled') return b;
  if (b.status === 'completed' && b.outputFileId) return b;
  if (b.status === 'cancelled' && b.outputFileId && (await d.batches.resultCount(b.tenant, b.id)) === b.outputCount) return b;
  const results = await d.batches.results(b.tenant, b.id);
  const out: string[] = [];
  const err: string[] = [];
  for (const x of results) {
    const custom_id = b.customIds?.[x.index] ?? String(x.index);
    const reqId = `req_${b.id}_${x.index}`;
    if (x.ok) {
      const r = x.body as ServeResult;
      const body = b.kind === '/v1/chat/completions' ? chatObject(r.id, d.model.id, r) : completionObject(r.id, d.model.id, r);
      out.push(JSON.stringify({ id: `batch_req_${b.id}_${x.index}`, custom_id, response: { status_code: 200, request_id: reqId, body }, error: null }));
    } else {
      err.push(JSON.stringify({ id: `batch_req_${b.id}_${x.index}`, custom_id, response: null, error: { code: 'server_error', message: (x.body as { error?: string }).error ?? 'failed' } }));
    }
  }
  const now = Math.floor(Date.now() / 1000);
  const write = async (suffix: string, lines: string[]) => {
    const content = Buffer.from(lines.map((l) => l + '\n').join(''));
    const rec: FileRecord = { id: `file-${b.id}-${suffix}`, tenant: b.tenant, filename: `${b.id}_${suffix}.jsonl`, purpose: 'batch_output', bytes: content.length, createdAt: now };
    await d.files.put(rec, content);
    return rec.id;
  };
  const outputFileId = await write('output', out);
  const errorFileId = err.length ? await write('errors', err) : undefined;
  return (await d.batches.update(b.tenant, b.id, { outputFileId, errorFileId, outputCount: results.length })) ?? b;
}

/** OpenAI's batches: a file of completion or chat requests run as one batch; its output and error files when it ends. */
export function batchesRouter(d: ApiDeps): Router {
  const r = Router();
  const finalize = finalizer(d);
  r.post('/v1/batches', async (req, res) => {
    const body = parseBody(BatchBody, req.body);
    const fileId = checkId(body.input_file_id, 'file');
    const content = await d.files.content(req.tenant, fileId);
    if (!content) throw new ApiError(404, `file ${fileId} not found`, 'invalid_request_error', 'input_file_id', 'not_found');
    const lines = content.toString('utf8').split('\n').filter((l) => l.trim());
    if (!lines.length) throw new ApiError(400, `file ${fileId} has no requests`, 'invalid_request_error', 'input_file_id');
    // The same bound as POST /v1/jobs: validating and tokenizing a batch runs on the API's one thread.
    if (lines.length > MAX_BATCH_REQUESTS) {
      throw new ApiError(400, `file ${fileId} has ${lines.length} requests; a batch takes at most ${MAX_BATCH_REQUESTS}`, 'invalid_request_error', 'input_file_id');
    }
    const id = newId('batch_');
    const customIds: string[] = [];
    const seen = new Set<string>();
    const specs: Prepared[] = [];
    lines.forEach((l, i) => {
      let parsed: unknown;
      try {
        parsed = JSON.parse(l);
      } catch {
        throw new ApiError(400, `line ${i + 1} of ${fileId} is not JSON`, 'invalid_request_error', 'input_file_id');
      }
      const line = parseBody(BatchLine, parsed, `line ${i + 1}`);
      if (line.url !== body.endpoint) throw new ApiError(400, `line ${i + 1}: url ${line.url} differs from the batch endpoint ${body.endpoint}`, 'invalid_request_error', 'input_file_id');
      if (seen.has(line.custom_id)) throw new ApiError(400, `line ${i + 1}: duplicate custom_id ${line.custom_id}`, 'invalid_request_error', 'input_file_id');
      seen.add(line.custom_id);
      customIds.push(line.custom_id);
      const b = body.endpoint === '/v1/completions' ? parseBody(CompletionBody, line.body, `line ${i + 1}.body`) : parseBody(ChatBody, line.body, `line ${i + 1}.body`);
      specs.push(prepare(d, b, `line ${i + 1}`));
    });
    const requests = await resolveAll(d, req.tenant, specs, (i) => `${id}-r${i}`, (i) => `line ${i + 1}`, maxTokensDefault(body.endpoint === '/v1/chat/completions' ? 'chat' : 'completion'));
    await d.admission.admit(requests.length);
    const rec: BatchRecord = {
      id,
      tenant: req.tenant,
      kind: body.endpoint,
      status: 'in_progress',
      total: requests.length,
      completed: 0,
      failed: 0,
      createdAt: Math.floor(Date.now() / 1000),
      inputFileId: fileId,
      customIds,
      metadata: body.metadata ?? {},
    };
    await startBatch(d, rec, requests);
    res.json(batchObject(rec));
  });
  r.get('/v1/batches', async (req, res) => {
    const all = (await d.batches.list(req.tenant)).filter((b) => b.kind !== 'jobs');
    const data = await Promise.all(all.map((b) => finalize(b)));
    res.json({ object: 'list', data: data.map(batchObject), first_id: data[0]?.id ?? null, last_id: data.at(-1)?.id ?? null, has_more: false });
  });
  r.get('/v1/batches/:id', async (req, res) => {
    const b = await d.batches.get(req.tenant, checkId(req.params.id, 'batch'));
    if (!b || b.kind === 'jobs') throw new ApiError(404, `batch ${req.params.id} not found`, 'invalid_request_error', 'id', 'not_found');
    res.json(batchObject(await finalize(b)));
  });
  r.post('/v1/batches/:id/cancel', async (req, res) => {
    const b = await d.batches.get(req.tenant, checkId(req.params.id, 'batch'));
    if (!b || b.kind === 'jobs') throw new ApiError(404, `batch ${req.params.id} not found`, 'invalid_request_error', 'id', 'not_found');
    res.json(batchObject(await finalize(await cancelBatch(d, b))));
  });
  return r;
}
