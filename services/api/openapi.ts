/**
 * The REST API's OpenAPI description, served at /openapi.json. Request bodies are generated from the zod schemas the
 * routes validate with (z.toJSONSchema), so their fields, types and bounds are the ones enforced.
 */
import { z } from 'zod';
import { ID_PATTERN } from '../../shared/ids';
import { CHAT_DEFAULT_MAX_TOKENS, DEFAULT_MAX_TOKENS, MAX_BATCH_REQUESTS } from './limits';
import { RequestSpec } from './resolve';
import { DocumentBody } from './routes/documents';
import { JobBody } from './routes/jobs';
import { ChatBody, CompletionBody } from './openai';
import { BatchBody, BatchLine } from './routes/batches';

/** A request body's JSON Schema as clients send it (defaults optional); rules zod checks in code are described. */
function schemaOf(schema: z.ZodType, description?: string): object {
  const { $schema: _s, ...rest } = z.toJSONSchema(schema, { io: 'input', unrepresentable: 'any' }) as Record<string, unknown>;
  return description ? { ...rest, description } : rest;
}

const errorRef = { $ref: '#/components/schemas/Error' };
const json = (schema: object) => ({ content: { 'application/json': { schema } } });
const body = (schema: object) => ({ required: true, ...json(schema) });
const errors = {
  '400': { description: 'Invalid request (the message names the field)', ...json(errorRef) },
  '401': { description: 'Missing or invalid API key', ...json(errorRef) },
  '404': { description: "Not found (also: another tenant's object, an unknown document id)", ...json(errorRef) },
  '413': { description: 'Body too large (MAX_BODY_BYTES; uploads 64 MiB)', ...json(errorRef) },
  '429': {
    description:
      'Queue full (MAX_QUEUE_DEPTH, code queue_full), or the tenant past its limit (param max_queued_requests, code tenant_queue_limit_exceeded: TENANT_MAX_QUEUED; param request_rate, code tenant_rate_limit_exceeded: TENANT_RATE); see Retry-After',
    ...json(errorRef),
  },
  '500': { description: 'Internal error', ...json(errorRef) },
  '503': { description: 'Queue Redis unavailable; see Retry-After', ...json(errorRef) },
};
const completionErrors = { ...errors, '504': { description: 'No answer within REQUEST_TIMEOUT_MS (the job is removed if no worker took it)', ...json(errorRef) } };
const id = [{ name: 'id', in: 'path', required: true, schema: { type: 'string', pattern: ID_PATTERN.source } }];
const PROMPT_RULES =
  'A request needs `question` or `prompt` (`prompt` is an alias). The prompt (documents + question) plus `max_tokens` must fit the model context. ' +
  'Without `mode`: attnlink when there are documents, full otherwise. `k`: attnlink tokens recomputed per chunk (default 16); `r`: cacheblend fraction recomputed (default 0.15).';

/** How absent sampling fields are filled (services/api/wiring.ts, shared/engine/generation.ts). */
const SAMPLING_NOTE =
  "temperature, top_p and top_k left out (or null) take the model's generation_config.json values where it says do_sample: true (GENERATION_CONFIG=auto, the default); otherwise a request without a temperature is greedy.";

export const openapi = {
  openapi: '3.1.0',
  info: {
    title: 'epic-serve',
    version: '0.1.0',
    description:
      'LLM batch serving with position-independent, content-addressed KV caching (EPIC). Documents are chunked with KVSplit and their chunks compiled ahead of time; requests name documents and a link mode (full, prefix, naive, attnlink, attnlink0, cacheblend).',
  },
  security: [{ bearer: [] }],
  components: {
    securitySchemes: { bearer: { type: 'http', scheme: 'bearer', description: 'API_KEYS; without it every request is tenant `default` and no key is needed' } },
    schemas: {
      Error: {
        type: 'object',
        properties: { error: { type: 'object', properties: { message: { type: 'string' }, type: { type: 'string' }, param: { type: ['string', 'null'] }, code: { type: ['string', 'null'] } } } },
      },
      Request: schemaOf(RequestSpec, `${PROMPT_RULES} Without \`max_tokens\`: ${DEFAULT_MAX_TOKENS}.`),
      Document: schemaOf(DocumentBody),
      Job: schemaOf(JobBody, `At most ${MAX_BATCH_REQUESTS} requests, each a Request.`),
      Completion: schemaOf(CompletionBody, `OpenAI's completion request; extensions: documents, mode, k, r, ignore_eos. ${PROMPT_RULES} Without max_tokens: ${DEFAULT_MAX_TOKENS}.`),
      ChatCompletion: schemaOf(ChatBody, `OpenAI's chat request; message contents are joined as the question. Extensions as for completions. Without max_tokens: what the context leaves, at most ${CHAT_DEFAULT_MAX_TOKENS}.`),
      Batch: schemaOf(BatchBody),
      BatchLine: schemaOf(BatchLine, `A line of the input file; \`body\` is a Completion or ChatCompletion for \`url\`. At most ${MAX_BATCH_REQUESTS} lines, unique custom_id.`),
    },
  },
  paths: {
    '/healthz': { get: { summary: 'Liveness', security: [], responses: { '200': { description: 'ok' } } } },
    '/readyz': { get: { summary: 'Readiness (queue Redis answers)', security: [], responses: { '200': { description: 'ready' }, '503': { description: 'not ready' } } } },
    '/metrics': { get: { summary: 'Prometheus metrics', security: [], responses: { '200': { description: 'text exposition' } } } },
    '/openapi.json': { get: { summary: 'This description', security: [], responses: { '200': { description: 'OpenAPI 3.1' } } } },
    '/v1/documents': {
      post: {
        summary: 'Add a document: chunked with KVSplit, chunks enqueued for precompute (one job per chunk while one is pending)',
        requestBody: body({ $ref: '#/components/schemas/Document' }),
        responses: { '201': { description: 'the document' }, ...errors },
      },
      get: { summary: 'List document ids', responses: { '200': { description: 'ids' } } },
    },
    '/v1/documents/{id}': {
      get: { summary: 'Document status: chunks, tokens, warm chunks', parameters: id, responses: { '200': { description: 'the document' }, ...errors } },
      delete: { summary: 'Delete a document', parameters: id, responses: { '200': { description: 'deleted' }, ...errors } },
    },
    '/v1/jobs': {
      post: {
        summary: 'Submit a batch of requests',
        requestBody: body({ $ref: '#/components/schemas/Job' }),
        responses: { '202': { description: 'accepted; poll /v1/jobs/{id}' }, ...errors },
      },
    },
    '/v1/jobs/{id}': { get: { summary: 'Status, progress and (when completed, or ?results=true) results', parameters: id, responses: { '200': { description: 'the job' }, ...errors } } },
    '/v1/jobs/{id}/events': { get: { summary: 'Server-sent progress events until the job ends', parameters: id, responses: { '200': { description: 'text/event-stream' }, ...errors } } },
    '/v1/jobs/{id}/cancel': {
      post: { summary: 'Cancel: requests no worker holds are dropped; held ones finish and count. A cancel left half done is finished by the next.', parameters: id, responses: { '200': { description: 'the job' }, ...errors } },
    },
    '/v1/models': { get: { summary: 'OpenAI: list models', responses: { '200': { description: 'models' } } } },
    '/v1/models/{id}': { get: { summary: 'OpenAI: one model', parameters: [{ name: 'id', in: 'path', required: true, schema: { type: 'string' } }], responses: { '200': { description: 'model' }, ...errors } } },
    '/v1/completions': {
      post: { summary: 'OpenAI: completion (stream with SSE)', description: SAMPLING_NOTE, requestBody: body({ $ref: '#/components/schemas/Completion' }), responses: { '200': { description: 'completion, or text/event-stream' }, ...completionErrors } },
    },
    '/v1/chat/completions': {
      post: { summary: 'OpenAI: chat completion (stream with SSE)', description: SAMPLING_NOTE, requestBody: body({ $ref: '#/components/schemas/ChatCompletion' }), responses: { '200': { description: 'chat completion, or text/event-stream' }, ...completionErrors } },
    },
    '/v1/files': {
      post: {
        summary: 'OpenAI: upload a batch JSONL (multipart: file, purpose=batch; up to 64 MiB)',
        requestBody: { required: true, content: { 'multipart/form-data': { schema: { type: 'object', required: ['file', 'purpose'], properties: { file: { type: 'string', format: 'binary' }, purpose: { const: 'batch' } } } } } },
        responses: { '200': { description: 'file' }, ...errors },
      },
      get: { summary: 'OpenAI: list files', responses: { '200': { description: 'files' } } },
    },
    '/v1/files/{id}': { get: { summary: 'OpenAI: file', parameters: id, responses: { '200': { description: 'file' }, ...errors } }, delete: { summary: 'OpenAI: delete file', parameters: id, responses: { '200': { description: 'deleted' }, ...errors } } },
    '/v1/files/{id}/content': { get: { summary: 'OpenAI: file content', parameters: id, responses: { '200': { description: 'JSONL' }, ...errors } } },
    '/v1/batches': {
      post: { summary: 'OpenAI: create a batch from an uploaded file (lines: BatchLine)', requestBody: body({ $ref: '#/components/schemas/Batch' }), responses: { '200': { description: 'batch' }, ...errors } },
      get: { summary: 'OpenAI: list batches', responses: { '200': { description: 'batches' } } },
    },
    '/v1/batches/{id}': { get: { summary: 'OpenAI: batch with request_counts and output_file_id', parameters: id, responses: { '200': { description: 'batch' }, ...errors } } },
    '/v1/batches/{id}/cancel': {
      post: { summary: 'OpenAI: cancel a batch; output and error files hold what finished', parameters: id, responses: { '200': { description: 'batch' }, ...errors } },
    },
    '/admin/queues': { get: { summary: 'bull-board queue UI (with API_KEYS: only keys of ADMIN_TENANT; others get 404)', responses: { '200': { description: 'HTML' }, '401': errors['401'], '404': errors['404'] } } },
  },
};
