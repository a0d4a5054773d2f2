import { z } from 'zod';
import { ChunkingError } from './chunk';

/**
 * Default chunk sizes in tokens. Their ratio (1.5) also fills in whichever of the two a caller leaves out:
 * `{ targetTokens: 100 }` means max 150, `{ maxTokens: 600 }` means target 400.
 */
export const KVSPLIT_DEFAULTS = Object.freeze({ targetTokens: 256, maxTokens: 384 });

export interface KVSplitOptions {
  /** A chunk stops growing once it has this many tokens (it may pass it, up to `maxTokens`, to keep a unit whole). */
  targetTokens?: number;
  /** No chunk has more tokens than this. */
  maxTokens?: number;
}

export interface FixedSplitOptions {
  /** Tokens per chunk; defaults to `KVSPLIT_DEFAULTS.targetTokens`. */
  chunkTokens?: number;
}

const size = z.number().int().positive();

const KVSplitSchema = z
  .strictObject({ targetTokens: size.optional(), maxTokens: size.optional() })
  .transform(({ targetTokens, maxTokens }) => {
    const ratio = KVSPLIT_DEFAULTS.maxTokens / KVSPLIT_DEFAULTS.targetTokens;
    if (targetTokens === undefined && maxTokens === undefined) return { ...KVSPLIT_DEFAULTS };
    if (maxTokens === undefined) return { targetTokens: targetTokens!, maxTokens: Math.ceil(targetTokens! * ratio) };
    if (targetTokens === undefined) return { targetTokens: Math.max(1, Math.floor(maxTokens / ratio)), maxTokens };
    return { targetTokens, maxTokens };
  })
  .refine((o) => o.maxTokens >= o.targetTokens, {
    message: 'maxTokens must be at least targetTokens',
    path: ['maxTokens'],
  });

const FixedSchema = z.strictObject({ chunkTokens: size.default(KVSPLIT_DEFAULTS.targetTokens) });

function parse<T>(schema: z.ZodType<T>, what: string, options: unknown): T {
  const parsed = schema.safeParse(options ?? {});
  if (!parsed.success) throw new ChunkingError(`invalid ${what} options: ${z.prettifyError(parsed.error)}`);
  return parsed.data;
}

export function resolveKVSplitOptions(options?: KVSplitOptions): Required<KVSplitOptions> {
  return parse(KVSplitSchema, 'KVSplit', options);
}

export function resolveFixedOptions(options?: FixedSplitOptions): Required<FixedSplitOptions> {
  return parse(FixedSchema, 'fixed-size chunking', options);
}
