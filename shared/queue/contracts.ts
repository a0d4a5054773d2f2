import { z } from 'zod';
import { ROUTING_DECISIONS } from '../routing/modes';
import { ServeRequest } from '../serving/request';
import type { ServeResult } from '../serving/result';

/** Queue names and job payloads: the plain data that crosses from the API to the workers. */
export const QUEUES = {
  inference: 'inference',
  precompute: 'precompute',
} as const;

/**
 * Request classes (quality of service): `interactive` (/v1/completions, /v1/chat/completions, plain and streamed) goes
 * before `batch` (/v1/jobs, /v1/batches), which keeps a minimum share (BATCH_MIN_SHARE). Each class has its own queues.
 */
export const REQUEST_CLASSES = ['interactive', 'batch'] as const;
export type RequestClass = (typeof REQUEST_CLASSES)[number];

/** One request to serve. `batchId`/`index` tie it to a batch; `stream` asks for tokens as they are generated. */
export const InferenceJob = z.object({
  tenant: z.string(),
  request: ServeRequest,
  batchId: z.string().optional(),
  index: z.number().int().nonnegative().optional(),
  stream: z.boolean().default(false),
  /** A channel to publish the result (or the last attempt's error) on as soon as it is known: see services/api/replies.ts. */
  replyTo: z.string().optional(),
  /** Where the API's router sent it (shared/routing): a worker counts a `fallback` job it took from the shared queue as stolen. */
  route: z.enum(ROUTING_DECISIONS).optional(),
  /** Its request class (absent: interactive, as jobs enqueued before classes existed). */
  class: z.enum(REQUEST_CLASSES).default('interactive'),
  /** Its start tag in its queue's fair queuing (shared/qos/fair.ts): the worker advances the queue's virtual time to it. */
  tag: z.number().nonnegative().optional(),
});
export type InferenceJob = z.input<typeof InferenceJob>;

/** Job id of a batch's request: idempotent, so a re-submitted request is not run twice. */
export function batchJobId(batchId: string, index: number): string {
  return `${batchId}-${index}`;
}

/** What a worker publishes on a job's `replyTo` channel. */
export interface Reply {
  id: string;
  result?: ServeResult;
  error?: string;
}

/** An event on a streamed request's channel: text as it is generated, then the last event (done, a result or an error). */
export interface StreamEvent {
  delta?: string;
  done?: boolean;
  result?: ServeResult;
  error?: string;
}
