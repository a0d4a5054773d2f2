import express, { type Express } from 'express';
import type { Queue, QueueEvents } from 'bullmq';
import type { Registry } from 'prom-client';
import { z } from 'zod';
import type { ModelConfig, TextTokenizer } from '../../shared/engine';
import type { GenerateJob, GenerateResult } from '../../shared/queue/contracts';
import { ApiError, errorHandler } from './errors';

export interface ApiDeps {
  model: ModelConfig;
  tokenizer: TextTokenizer;
  inference: Queue;
  inferenceEvents: QueueEvents;
  registry: Registry;
  /** Resolves when the queue's Redis answers. */
  ping: () => Promise<unknown>;
  requestTimeoutMs: number;
  bodyLimit?: string;
}

const CompletionRequest = z.object({
  model: z.string().optional(),
  prompt: z.string(),
  max_tokens: z.number().int().min(0).default(16),
  stop: z.union([z.string(), z.array(z.string()).max(4)]).optional(),
});

function parse<T>(schema: z.ZodType<T>, body: unknown): T {
  const r = schema.safeParse(body);
  if (!r.success) {
    const i = r.error.issues[0];
    throw new ApiError(400, `${i.path.join('.') || 'body'}: ${i.message}`, 'invalid_request_error', i.path.join('.') || null);
  }
  return r.data;
}

/** The HTTP API: a thin shell that validates, enqueues and answers; model work happens in the worker. */
export function createApp(deps: ApiDeps): Express {
  const app = express();
  app.disable('x-powered-by');
  app.use(express.json({ limit: deps.bodyLimit ?? '4mb' }));

  app.get('/healthz', (_req, res) => {
    res.json({ status: 'ok' });
  });

  app.get('/readyz', async (_req, res) => {
    try {
      await deps.ping();
      res.json({ status: 'ready' });
    } catch (e) {
      res.status(503).set('Retry-After', '1').json({ status: 'unavailable', reason: `queue Redis: ${(e as Error).message}` });
    }
  });

  app.get('/metrics', async (_req, res) => {
    res.set('Content-Type', deps.registry.contentType).send(await deps.registry.metrics());
  });

  app.get('/v1/models', (_req, res) => {
    res.json({ object: 'list', data: [{ id: deps.model.id, object: 'model', created: 0, owned_by: 'epic-serve' }] });
  });

  app.post('/v1/completions', async (req, res) => {
    const body = parse(CompletionRequest, req.body);
    if (body.model && body.model !== deps.model.id) {
      throw new ApiError(404, `model '${body.model}' does not exist; this server serves '${deps.model.id}'`, 'invalid_request_error', 'model', 'model_not_found');
    }
    const promptTokens = 1 + deps.tokenizer.encode(body.prompt).length;
    if (promptTokens + body.max_tokens > deps.model.contextLength) {
      throw new ApiError(
        400,
        `prompt (${promptTokens} tokens) plus max_tokens (${body.max_tokens}) exceeds the model's context length of ${deps.model.contextLength}`,
        'invalid_request_error',
        'max_tokens',
        'context_length_exceeded',
      );
    }
    const job: GenerateJob = {
      prompt: body.prompt,
      maxTokens: body.max_tokens,
      stop: body.stop === undefined ? undefined : Array.isArray(body.stop) ? body.stop : [body.stop],
    };
    const added = await deps.inference.add('generate', job);
    const result = (await added.waitUntilFinished(deps.inferenceEvents, deps.requestTimeoutMs)) as GenerateResult;
    res.json({
      id: `cmpl-${added.id}`,
      object: 'text_completion',
      created: Math.floor(Date.now() / 1000),
      model: deps.model.id,
      choices: [{ index: 0, text: result.text, finish_reason: result.finishReason, logprobs: null }],
      usage: {
        prompt_tokens: result.promptTokens,
        completion_tokens: result.completionTokens,
        total_tokens: result.promptTokens + result.completionTokens,
      },
    });
  });

  app.use((_req, _res, next) => next(new ApiError(404, 'not found', 'invalid_request_error', null, 'not_found')));
  app.use(errorHandler);
  return app;
}
