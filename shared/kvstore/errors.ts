/**
 * Errors of the KV store. A blob that fails validation is never served: the tier that held it deletes it, the store
 * counts it and recomputes the chunk.
 *
 * - `CorruptBlobError`: the bytes are damaged (bad magic, truncated, wrong length, checksum mismatch, nonsense header).
 * - `IncompatibleBlobError`: the bytes are intact but were written for something else (another format version, model
 *   id, dtype or KV shape).
 */
export type CorruptReason = 'magic' | 'truncated' | 'length' | 'checksum' | 'header';
export type IncompatibleReason = 'version' | 'model' | 'dtype' | 'shape';

export abstract class KVBlobError extends Error {
  abstract readonly kind: 'corrupt' | 'incompatible';
  abstract readonly reason: CorruptReason | IncompatibleReason;
}

export class CorruptBlobError extends KVBlobError {
  override readonly name = 'CorruptBlobError';
  readonly kind = 'corrupt' as const;
  constructor(
    readonly reason: CorruptReason,
    detail: string,
  ) {
    super(`corrupt KV blob (${reason}): ${detail}`);
  }
}

export class IncompatibleBlobError extends KVBlobError {
  override readonly name = 'IncompatibleBlobError';
  readonly kind = 'incompatible' as const;
  constructor(
    readonly reason: IncompatibleReason,
    detail: string,
  ) {
    super(`incompatible KV blob (${reason}): ${detail}`);
  }
}

/** A block handed to the store that does not match its own declared shape, or the store's model shape. */
export class InvalidBlockError extends Error {
  override readonly name = 'InvalidBlockError';
}

export function isKVBlobError(e: unknown): e is KVBlobError {
  return e instanceof KVBlobError;
}
