/** The REST API's OpenAPI description, served at /openapi.json. */
import { MIN_R } from '../../shared/linking';
const errorRef = { $ref: '#/components/schemas/Error' };
const json = (schema: object) => ({ content: { 'application/json': { schema } } });
const errors = {
  '400': { description: 'Invalid request', ...json(errorRef) },
  '401': { description: 'Missing or invalid API key', ...json(errorRef) },
  '404': { description: 'Not found (also: another tenant\'s object)', ...json(errorRef) },
  '413': { description: 'Body too large', ...json(errorRef) },
  '429': { description: 'Queue full; see Retry-After', ...json(errorRef) },
  '503': { description: 'Queue Redis unavailable; see Retry-After', ...json(errorRef) },
};
const id = [{ name: 'id', in: 'path', required: true, schema: { type: 'string', pattern: '^[A-Za-z0-9_-]{1,128}$' } }];

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
    securitySchemes: { bearer: { type: 'http', scheme: 'bearer' } },
    schemas: {
      Error: {
        type: 'object',
        properties: { error: { type: 'object', properties: { message: { type: 'string' }, type: { type: 'string' }, param: { type: ['string', 'null'] }, code: { type: ['string', 'null'] } } } },
      },
      Mode: { type: 'string', enum: ['full', 'prefix', 'naive', 'attnlink', 'attnlink0', 'cacheblend'] },
      DocumentRef: { oneOf: [{ type: 'string', description: 'a document id' }, { type: 'object', properties: { text: { type: 'string' } }, required: ['text'] }] },
      Request: {
        type: 'object',
        properties: {
          documents: { type: 'array', items: { $ref: '#/components/schemas/DocumentRef' }, maxItems: 64 },
          question: { type: 'string', description: 'text after the documents' },
          prompt: { type: 'string', description: 'alias of question' },
          max_tokens: { type: 'integer', minimum: 0, default: 16 },
          mode: { $ref: '#/components/schemas/Mode' },
          k: { type: 'integer', minimum: 0, description: 'attnlink: tokens recomputed per chunk (default 16)' },
          r: { type: 'number', minimum: MIN_R, maximum: 1, description: 'cacheblend: fraction recomputed (default 0.15)' },
          stop: { oneOf: [{ type: 'string' }, { type: 'array', items: { type: 'string' }, maxItems: 4 }] },
          ignore_eos: { type: 'boolean', description: 'generate max_tokens tokens even past the end token (as vLLM)' },
        },
      },
    },
  },
  paths: {
    '/healthz': { get: { summary: 'Liveness', security: [], responses: { '200': { description: 'ok' } } } },
    '/readyz': { get: { summary: 'Readiness (queue Redis answers)', security: [], responses: { '200': { description: 'ready' }, '503': { description: 'not ready' } } } },
    '/metrics': { get: { summary: 'Prometheus metrics', security: [], responses: { '200': { description: 'text exposition' } } } },
    '/v1/documents': {
      post: {
        summary: 'Add a document: chunked with KVSplit, chunks enqueued for precompute (deduplicated by chunk id)',
        requestBody: json({ type: 'object', required: ['text'], properties: { text: { type: 'string' }, id: { type: 'string' }, metadata: { type: 'object' } } }),
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
        requestBody: json({ type: 'object', required: ['requests'], properties: { requests: { type: 'array', items: { $ref: '#/components/schemas/Request' } }, metadata: { type: 'object' } } }),
        responses: { '202': { description: 'accepted; poll /v1/jobs/{id}' }, ...errors },
      },
    },
    '/v1/jobs/{id}': { get: { summary: 'Status, progress and (when completed, or ?results=true) results', parameters: id, responses: { '200': { description: 'the job' }, ...errors } } },
    '/v1/jobs/{id}/events': { get: { summary: 'Server-sent progress events until the job ends', parameters: id, responses: { '200': { description: 'text/event-stream' } } } },
    '/v1/jobs/{id}/cancel': { post: { summary: 'Cancel: requests not yet started are dropped', parameters: id, responses: { '200': { description: 'the job' }, ...errors } } },
    '/v1/models': { get: { summary: 'OpenAI: list models', responses: { '200': { description: 'models' } } } },
    '/v1/completions': { post: { summary: 'OpenAI: completion (stream with SSE); extensions: documents, mode, k, r', responses: { '200': { description: 'completion' }, ...errors } } },
    '/v1/chat/completions': { post: { summary: 'OpenAI: chat completion (message contents joined as the question); extensions as above', responses: { '200': { description: 'chat completion' }, ...errors } } },
    '/v1/files': { post: { summary: 'OpenAI: upload a batch JSONL (multipart, purpose=batch)', responses: { '200': { description: 'file' }, ...errors } }, get: { summary: 'OpenAI: list files', responses: { '200': { description: 'files' } } } },
    '/v1/files/{id}': { get: { summary: 'OpenAI: file', parameters: id, responses: { '200': { description: 'file' }, ...errors } }, delete: { summary: 'OpenAI: delete file', parameters: id, responses: { '200': { description: 'deleted' } } } },
    '/v1/files/{id}/content': { get: { summary: 'OpenAI: file content', parameters: id, responses: { '200': { description: 'JSONL' }, ...errors } } },
    '/v1/batches': { post: { summary: 'OpenAI: create a batch from an uploaded file', responses: { '200': { description: 'batch' }, ...errors } }, get: { summary: 'OpenAI: list batches', responses: { '200': { description: 'batches' } } } },
    '/v1/batches/{id}': { get: { summary: 'OpenAI: batch with request_counts and output_file_id', parameters: id, responses: { '200': { description: 'batch' }, ...errors } } },
    '/v1/batches/{id}/cancel': { post: { summary: 'OpenAI: cancel a batch', parameters: id, responses: { '200': { description: 'batch' }, ...errors } } },
    '/admin/queues': { get: { summary: 'bull-board queue UI (behind the API key)', responses: { '200': { description: 'HTML' } } } },
  },
};
