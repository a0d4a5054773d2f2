import { z } from 'zod';

/** Queue names and job payloads: the plain data that crosses from the API to the workers. */
export const QUEUES = {
  inference: 'inference',
  precompute: 'precompute',
} as const;

export const GenerateJob = z.object({
  /** Prompt text; the worker adds BOS. */
  prompt: z.string(),
  maxTokens: z.number().int().min(0),
  stop: z.array(z.string()).optional(),
});
export type GenerateJob = z.infer<typeof GenerateJob>;

export interface GenerateResult {
  text: string;
  promptTokens: number;
  completionTokens: number;
  finishReason: 'stop' | 'length';
  /** Milliseconds from the worker taking the job to the first token. */
  ttftMs: number;
  totalMs: number;
}
