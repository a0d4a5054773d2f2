import { Router, type Request, type Response } from 'express';
import multer from 'multer';
import { z } from 'zod';
import type { BatchRecord, FileRecord } from '../../../shared/catalog';
import { DEFAULT_MAX_TOKENS, MAX_BATCH_REQUESTS, MAX_TOKENS_CAP } from '../limits';
import type { ServeResult } from '../../../shared/serving/result';
import { ModeSpec, SamplingFields, type ServeRequest } from '../../../shared/serving/request';
import { maxTextChars, RequestSpec, resolveRequest, ResolveError, type DefaultMaxTokens } from '../resolve';
import { tenantSalt } from '../tenancy';
import { chatPrompt, ChatTemplateError, type ChatMessage } from '../../../shared/engine/chat';
import type { ApiDeps } from '../deps';
import { ApiError, uploadError } from '../errors';
import { cancelBatch, newId, runOne, runStreaming, startBatch, type OneRun } from '../submit';
import { wallClockMs } from '../../../shared/serving/request';
import { usage } from '../usage';
import { checkId, parseBody } from '../validate';

/**
 * OpenAI-compatible endpoints. Documents go in the extension field `documents` (ids of POSTed documents, or
 * `{text}` inline); `mode`, `k` and `r` pick the link mode. Reuse is reported in usage.prompt_tokens_details.cached_tokens.
 */
const Extensions = {
  documents: z.array(z.union([z.string().min(1).max(128), z.object({ text: z.string().min(1) }).strict()])).max(64).optional(),
  mode: ModeSpec.shape.mode.unwrap().optional(),
  k: ModeSpec.shape.k,
  r: ModeSpec.shape.r,
};
const Common = {
  model: z.string().optional(),
  max_tokens: z.number().int().min(0).max(MAX_TOKENS_CAP).nullable().optional(),
  max_completion_tokens: z.number().int().min(0).max(MAX_TOKENS_CAP).nullable().optional(),
  stop: z.union([z.string(), z.array(z.string()).max(4)]).nullable().optional(),
  stream: z.boolean().nullable().optional(),
  stream_options: z.object({ include_usage: z.boolean().optional() }).nullable().optional(),
  n: z.literal(1).nullable().optional(),
  /** temperature, top_p, top_k (vLLM's extension), seed: absent temperature is greedy. */
  ...SamplingFields,
  user: z.string().max(256).optional(),
  /** vLLM's extension: generate max_tokens tokens even past <eos>. */
  ignore_eos: z.boolean().optional(),
  ...Extensions,
};
export const CompletionBody = z.object({ ...Common, prompt: z.union([z.string(), z.array(z.string()).length(1)]) });
const ChatMessage = z.object({
  role: z.enum(['system', 'user', 'assistant', 'developer', 'tool']),
  content: z.union([z.string(), z.array(z.object({ type: z.literal('text'), text: z.string() }))]).nullable(),
  name: z.string().optional(),
});
export const ChatBody = z.object({ ...Common, messages: z.array(ChatMessage).min(1) });
type CompletionBody = z.infer<typeof CompletionBody>;
type ChatBody = z.infer<typeof ChatBody>;

function chatMessages(messages: ChatBody['messages']): ChatMessage[] {
  return messages.map((m) => ({
    role: m.role,
    content: typeof m.content === 'string' ? m.content : (m.content ?? []).map((p) => p.text).join(''),
    ...(m.name !== undefined ? { name: m.name } : {}),
  }));
}

/** A body ready to resolve: its request spec, and for a chat with the model's template the tokens before the documents. */
interface Prepared {
  spec: ReturnType<typeof toSpec>;
  prefix?: number[];
}

/**
 * A completion's spec, or a chat's: rendered with the model's chat template and split around the documents
 * (shared/engine/chat.ts: prefix | documents' chunks | question); a model without a template joins the contents.
 */
function prepare(d: ApiDeps, body: CompletionBody | ChatBody, where: string): Prepared {
  for (const id of Object.keys(body.logit_bias ?? {})) {
    if (Number(id) >= d.model.vocabSize) {
      throw new ApiError(400, `${where}: logit_bias names token ${id}, outside the vocabulary (${d.model.vocabSize} tokens)`, 'invalid_request_error', 'logit_bias');
    }
  }
  if ('prompt' in body) return { spec: toSpec(body, [body.prompt].flat()[0]) };
  const messages = chatMessages(body.messages);
  // The template's text is tokenized whole: bound it before rendering, as resolveRequest bounds a question.
  const chars = messages.reduce((n, m) => n + m.content.length, 0);
  if (chars > maxTextChars(d)) {
    throw new ApiError(400, `${where}: the messages' text (${chars} characters) exceeds the model's context length (${d.model.contextLength} tokens)`, 'invalid_request_error', 'messages', 'context_length_exceeded');
  }
  let p;
  try {
    p = chatPrompt(d.tokenizer, messages, (body.documents?.length ?? 0) > 0);
  } catch (e) {
    if (e instanceof ChatTemplateError) throw new ApiError(400, `${where}: ${e.message}`, 'invalid_request_error', 'messages');
    throw e;
  }
  return { spec: toSpec(body, p.question), prefix: p.prefix === undefined ? undefined : d.tokenizer.encode(p.prefix) };
}

/** Resolve prepared bodies to the worker's requests (documents to chunks, limits checked), as jobs' resolveAll does. */
async function resolvePrepared(
  d: ApiDeps,
  tenant: string,
  items: Prepared[],
  idOf: (i: number) => string,
  where: (i: number) => string,
  defaultMaxTokens: DefaultMaxTokens,
): Promise<ServeRequest[]> {
  const salt = tenantSalt(tenant, d.shareAcrossTenants);
  const out: ServeRequest[] = [];
  for (let i = 0; i < items.length; i++) {
    const spec = parseBody(RequestSpec, items[i].spec, where(i));
    try {
      out.push(await resolveRequest(d, spec, idOf(i), tenant, salt, defaultMaxTokens, items[i].prefix));
    } catch (e) {
      if (e instanceof ResolveError) throw new ResolveError(`${where(i)}: ${e.message}`, e.status, e.param ? `${where(i)}.${e.param}` : where(i), e.code);
      throw e;
    }
  }
  return out;
}

/** max_tokens when a request gives none: 16 for completions (OpenAI's default); for chat the rest of the context, at most CHAT_DEFAULT_MAX_TOKENS. */
function maxTokensDefault(kind: 'completion' | 'chat'): DefaultMaxTokens {
  return kind === 'chat' ? 'rest' : DEFAULT_MAX_TOKENS;
}

function toSpec(body: CompletionBody | ChatBody, text: string) {
  return {
    documents: body.documents ?? [],
    question: text,
    // Absent: maxTokensDefault's, applied by resolveAll once the prompt's length is known.
    max_tokens: body.max_completion_tokens ?? body.max_tokens ?? undefined,
    mode: body.mode,
    k: body.k,
    r: body.r,
    stop: body.stop ?? undefined,
    ignore_eos: body.ignore_eos,
    temperature: body.temperature,
    top_p: body.top_p,
    top_k: body.top_k,
    seed: body.seed,
    logit_bias: body.logit_bias,
  };
}

export function completionObject(id: string, model: string, r: ServeResult) {
  return {
    id,
    object: 'text_completion',
    created: Math.floor(Date.now() / 1000),
    model,
    choices: [{ index: 0, text: r.text, finish_reason: r.finishReason, logprobs: null }],
    usage: usage(r),
  };
}

export function chatObject(id: string, model: string, r: ServeResult) {
  return {
    id,
    object: 'chat.completion',
    created: Math.floor(Date.now() / 1000),
    model,
    choices: [{ index: 0, message: { role: 'assistant', content: r.text, refusal: null }, finish_reason: r.finishReason, logprobs: null }],
    usage: usage(r),
  };
}

/**
 * Where a completion's time went (W3C Server-Timing, milliseconds): `api` (parse, validate, resolve documents, enqueue),
 * `queue` (enqueued until a worker took it), `prefill` (fetch chunks, link, first token) and `decode` (the rest of
 * the tokens) in the worker, `worker` (the worker's own bookkeeping around them), `reply` (result back to the API);
 * `total` is arrival until the header is written (the parts, and the API's own work after the reply).
 */
function serverTiming(t0: number, run: OneRun): string {
  const r = run.result;
  // `total`: arrival until this header is written, so a client can tell the server's time from the HTTP round trip.
  const parts = [`total;dur=${(wallClockMs() - t0).toFixed(3)}`, `api;dur=${(run.enqueuedAt - t0).toFixed(3)}`];
  if (r.worker) parts.push(`queue;dur=${Math.max(0, r.worker.pickedAt - run.enqueuedAt).toFixed(3)}`);
  parts.push(`prefill;dur=${r.prefillMs.toFixed(3)}`, `decode;dur=${r.decodeMs.toFixed(3)}`);
  if (r.worker) {
    const w = r.worker;
    parts.push(`worker;dur=${Math.max(0, w.doneAt - w.pickedAt - r.prefillMs - r.decodeMs).toFixed(3)}`, `reply;dur=${Math.max(0, run.answeredAt - w.doneAt).toFixed(3)}`);
  }
  return parts.join(', ');
}

async function serve(d: ApiDeps, req: Request, res: Response, kind: 'completion' | 'chat') {
  const body: CompletionBody | ChatBody = kind === 'completion' ? parseBody(CompletionBody, req.body) : parseBody(ChatBody, req.body);
  if (body.model && body.model !== d.model.id) {
    throw new ApiError(404, `model '${body.model}' does not exist; this server serves '${d.model.id}'`, 'invalid_request_error', 'model', 'model_not_found');
  }
  const prepared = prepare(d, body, 'body');
  const id = newId(kind === 'completion' ? 'cmpl-' : 'chatcmpl-');
  if (!body.stream) {
    const t0: number = res.locals.arrivedAt ?? wallClockMs();
    // Documents first, then admission: a request that can never succeed (an unknown document, too many tokens) hears
    // its 4xx, not a 429 that invites a retry. Both are usually answered from memory (the document cache; a recent
    // queue count), so in turn costs no more than together.
    const [request] = await resolvePrepared(d, req.tenant, [prepared], () => id, () => 'body', maxTokensDefault(kind));
    await d.admission.admit(1);
    const run = await runOne(d, req.tenant, request);
    const r = run.result;
    res.set('Server-Timing', serverTiming(t0, run));
    return void res.json(kind === 'completion' ? completionObject(id, d.model.id, r) : chatObject(id, d.model.id, r));
  }
  const [request] = await resolvePrepared(d, req.tenant, [prepared], () => id, () => 'body', maxTokensDefault(kind));
  const created = Math.floor(Date.now() / 1000);
  const chunk = (delta: string | null, finish: string | null, extra: object = {}) =>
    kind === 'completion'
      ? { id, object: 'text_completion', created, model: d.model.id, choices: [{ index: 0, text: delta ?? '', finish_reason: finish, logprobs: null }], ...extra }
      : {
          id,
          object: 'chat.completion.chunk',
          created,
          model: d.model.id,
          choices: [{ index: 0, delta: delta === null ? {} : { content: delta }, finish_reason: finish, logprobs: null }],
          ...extra,
        };
  const send = (o: object | string) => res.write(`data: ${typeof o === 'string' ? o : JSON.stringify(o)}\n\n`);
  // The stream ends once: with the worker's last event, a timeout, or the client leaving, whichever comes first (a
  // failed stream can be announced twice: by the worker and by its failure handler).
  let ended = false;
  let endStream!: () => void;
  const finished = new Promise<void>((resolve) => (endStream = resolve));
  const end = () => {
    if (ended) return false;
    ended = true;
    endStream();
    return true;
  };
  let stop: (() => Promise<void>) | undefined;
  let failed: unknown;
  let gone = false;
  const started = runStreaming(d, req.tenant, request, (e) => {
    if (ended) return;
    if (!res.headersSent) startStream();
    if (e.delta) send(chunk(e.delta, null));
    if (e.done) {
      if (e.error) send({ error: { message: e.error, type: 'server_error', param: null, code: null } });
      else if (e.result) {
        send(chunk(kind === 'chat' ? null : '', e.result.finishReason));
        if (body.stream_options?.include_usage) send({ ...chunk(null, null), choices: [], usage: usage(e.result) });
      }
      send('[DONE]');
      end();
    }
  }).then(
    (s) => {
      stop = s;
      if (!ended) startStream();
    },
    (err) => {
      // Enqueue failed (queue full, Redis down): answer with the error instead of a stream.
      failed = err;
      end();
    },
  );
  function startStream() {
    if (res.headersSent) return;
    res.writeHead(200, { 'Content-Type': 'text/event-stream', 'Cache-Control': 'no-cache', Connection: 'keep-alive' });
    // Now, not with the first token: a client whose request waits in the queue sees at once that it was accepted.
    res.flushHeaders();
    if (kind === 'chat') send({ id, object: 'chat.completion.chunk', created, model: d.model.id, choices: [{ index: 0, delta: { role: 'assistant', content: '' }, finish_reason: null, logprobs: null }] });
  }
  let timedOut = false;
  const timeout = setTimeout(() => {
    if (!end()) return;
    timedOut = true;
    if (!res.headersSent) startStream();
    send({ error: { message: 'timed out', type: 'server_error', param: null, code: 'timeout' } });
    send('[DONE]');
  }, d.requestTimeoutMs);
  res.on('close', () => {
    if (res.writableFinished) return;
    gone = true;
    end();
  });
  await finished;
  clearTimeout(timeout);
  await started; // the enqueue has settled, so its subscription and job are known
  await stop?.();
  if (failed) {
    if (!gone) throw failed;
    return;
  }
  // Timed out, or the client went away: a job no worker has taken goes rather than run for no one (one that runs
  // finishes). After `started`: a job enqueued after the client left goes too.
  if (gone || timedOut) await d.inference.remove(id).catch(() => 0);
  res.end();
}

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

function fileObject(f: FileRecord) {
  return { id: f.id, object: 'file', bytes: f.bytes, created_at: f.createdAt, filename: f.filename, purpose: f.purpose, status: 'processed', status_details: null };
}

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
function finalize(d: ApiDeps, b: BatchRecord): Promise<BatchRecord> {
  // One writer per batch in this process: two GETs writing a cancelled batch's files at once could leave the older
  // content last with the newer count beside it (never rewritten again).
  const key = `${b.tenant}\0${b.id}`;
  const running = finalizing.get(key);
  if (running) return running;
  const p = writeOutputs(d, b).finally(() => finalizing.delete(key));
  finalizing.set(key, p);
  return p;
}
const finalizing = new Map<string, Promise<BatchRecord>>();

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

export function openaiRouter(d: ApiDeps): Router {
  const r = Router();
  const multipart = multer({ storage: multer.memoryStorage(), limits: { fileSize: 64 * 1024 * 1024, files: 1, fields: 8, parts: 10 } }).single('file');
  const upload = (req: Request, res: Response, next: (err?: unknown) => void) => multipart(req, res, (err?: unknown) => next(err ? uploadError(err) : undefined));

  r.get('/v1/models', (_req, res) => {
    res.json({ object: 'list', data: [{ id: d.model.id, object: 'model', created: 0, owned_by: 'epic-serve' }] });
  });
  r.get('/v1/models/:id', (req, res) => {
    if (req.params.id !== d.model.id) throw new ApiError(404, `model '${req.params.id}' does not exist`, 'invalid_request_error', 'model', 'model_not_found');
    res.json({ id: d.model.id, object: 'model', created: 0, owned_by: 'epic-serve' });
  });
  r.post('/v1/completions', (req, res) => serve(d, req, res, 'completion'));
  r.post('/v1/chat/completions', (req, res) => serve(d, req, res, 'chat'));

  r.post('/v1/files', upload, async (req, res) => {
    const purpose = typeof req.body?.purpose === 'string' ? req.body.purpose : undefined;
    if (purpose !== 'batch') throw new ApiError(400, `purpose must be 'batch'`, 'invalid_request_error', 'purpose');
    if (!req.file) throw new ApiError(400, 'a file is required (multipart field "file")', 'invalid_request_error', 'file');
    const rec: FileRecord = {
      id: newId('file-'),
      tenant: req.tenant,
      filename: req.file.originalname.replace(/[^\w.-]/g, '_').slice(0, 255) || 'upload.jsonl',
      purpose,
      bytes: req.file.size,
      createdAt: Math.floor(Date.now() / 1000),
    };
    await d.files.put(rec, req.file.buffer);
    res.json(fileObject(rec));
  });
  r.get('/v1/files', async (req, res) => {
    res.json({ object: 'list', data: (await d.files.list(req.tenant)).map(fileObject), has_more: false });
  });
  r.get('/v1/files/:id', async (req, res) => {
    const f = await d.files.get(req.tenant, checkId(req.params.id, 'file'));
    if (!f) throw new ApiError(404, `file ${req.params.id} not found`, 'invalid_request_error', 'id', 'not_found');
    res.json(fileObject(f));
  });
  r.get('/v1/files/:id/content', async (req, res) => {
    const c = await d.files.content(req.tenant, checkId(req.params.id, 'file'));
    if (!c) throw new ApiError(404, `file ${req.params.id} not found`, 'invalid_request_error', 'id', 'not_found');
    res.type('application/jsonl').send(c);
  });
  r.delete('/v1/files/:id', async (req, res) => {
    const id = checkId(req.params.id, 'file');
    if (!(await d.files.delete(req.tenant, id))) throw new ApiError(404, `file ${id} not found`, 'invalid_request_error', 'id', 'not_found');
    res.json({ id, object: 'file', deleted: true });
  });

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
    const requests = await resolvePrepared(d, req.tenant, specs, (i) => `${id}-r${i}`, (i) => `line ${i + 1}`, maxTokensDefault(body.endpoint === '/v1/chat/completions' ? 'chat' : 'completion'));
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
    const data = await Promise.all(all.map((b) => finalize(d, b)));
    res.json({ object: 'list', data: data.map(batchObject), first_id: data[0]?.id ?? null, last_id: data.at(-1)?.id ?? null, has_more: false });
  });
  r.get('/v1/batches/:id', async (req, res) => {
    const b = await d.batches.get(req.tenant, checkId(req.params.id, 'batch'));
    if (!b || b.kind === 'jobs') throw new ApiError(404, `batch ${req.params.id} not found`, 'invalid_request_error', 'id', 'not_found');
    res.json(batchObject(await finalize(d, b)));
  });
  r.post('/v1/batches/:id/cancel', async (req, res) => {
    const b = await d.batches.get(req.tenant, checkId(req.params.id, 'batch'));
    if (!b || b.kind === 'jobs') throw new ApiError(404, `batch ${req.params.id} not found`, 'invalid_request_error', 'id', 'not_found');
    res.json(batchObject(await finalize(d, await cancelBatch(d, b))));
  });
  return r;
}
