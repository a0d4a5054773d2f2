import type { Request, Response } from 'express';
import { wallClockMs } from '../../shared/serving/request';
import type { ApiDeps } from './deps';
import { ApiError } from './errors';
import { ChatBody, chatObject, CompletionBody, completionObject, maxTokensDefault, prepare, type CompletionKind } from './openai';
import { resolveAll } from './requests';
import { streamCompletion, type StreamShape } from './stream';
import { newId, runOne, type OneRun } from './submit';
import { parseBody } from './validate';

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

/**
 * POST /v1/completions and /v1/chat/completions: validate, resolve the documents, enqueue, and answer with the result
 * (a JSON object with Server-Timing) or a stream (stream.ts).
 */
export async function serveCompletion(d: ApiDeps, req: Request, res: Response, kind: CompletionKind): Promise<void> {
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
    const [request] = await resolveAll(d, req.tenant, [prepared], () => id, () => 'body', maxTokensDefault(kind));
    await d.admission.admit(1);
    const run = await runOne(d, req.tenant, request);
    const r = run.result;
    res.set('Server-Timing', serverTiming(t0, run));
    return void res.json(kind === 'completion' ? completionObject(id, d.model.id, r) : chatObject(id, d.model.id, r));
  }
  const [request] = await resolveAll(d, req.tenant, [prepared], () => id, () => 'body', maxTokensDefault(kind));
  const created = Math.floor(Date.now() / 1000);
  const shape: StreamShape =
    kind === 'completion'
      ? {
          chunk: (delta, finish, extra = {}) => ({ id, object: 'text_completion', created, model: d.model.id, choices: [{ index: 0, text: delta ?? '', finish_reason: finish, logprobs: null }], ...extra }),
          finalDelta: '',
        }
      : {
          chunk: (delta, finish, extra = {}) => ({
            id,
            object: 'chat.completion.chunk',
            created,
            model: d.model.id,
            choices: [{ index: 0, delta: delta === null ? {} : { content: delta }, finish_reason: finish, logprobs: null }],
            ...extra,
          }),
          finalDelta: null,
          // The assistant's role first, as OpenAI's chat streams begin.
          opening: { id, object: 'chat.completion.chunk', created, model: d.model.id, choices: [{ index: 0, delta: { role: 'assistant', content: '' }, finish_reason: null, logprobs: null }] },
        };
  await streamCompletion(d, req.tenant, res, request, { ...shape, includeUsage: !!body.stream_options?.include_usage });
}
