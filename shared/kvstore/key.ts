/**
 * Content-addressed chunk keys.
 *
 * key = SHA-256 over (domain tag, model id, tenant salt, compile variant, token ids), hex. Strings are length-prefixed
 * and tokens are int32 little-endian, so no two different inputs serialise to the same bytes. The same chunk of text
 * in two documents (same tokens, model, tenant and variant) gets one key; EPIC chunks are position independent, so —
 * unlike vLLM's prefix block hashes — a key does not chain over what came before the chunk.
 *
 * The tenant salt isolates tenants the way vLLM's `cache_salt` does: without it, timing would tell one tenant whether
 * another has cached a text. The variant names how the chunk was compiled (e.g. `legolink0:sink=4`), since different
 * compile modes give different KV for the same tokens.
 */
import { createHash } from 'node:crypto';
import { ID_PATTERN } from '../ids';

const DOMAIN = 'epic-serve/kv-chunk/v1';

export interface ChunkKeyInput {
  modelId: string;
  tokens: ArrayLike<number>;
  /** Tenant isolation salt; '' (default) = shared across tenants. */
  tenantSalt?: string;
  /** Compile variant (how the KV was produced); '' (default) = plain chunk-alone compile. */
  variant?: string;
}

/** Pattern every store key must match (hex SHA-256 from `chunkKey`, or any short filename-safe id). */
export const KEY_PATTERN = ID_PATTERN;

declare const chunkKeyBrand: unique symbol;
/**
 * A chunk's content address, as chunkKey makes it. Branded (as node-llama-cpp brands `Token`): a plain string — a
 * document id, a catalog Redis key, a tenant salt — does not type-check where a chunk key is meant, while a ChunkKey
 * still goes wherever a string does (the store's own keys are any filename-safe id).
 */
export type ChunkKey = string & { readonly [chunkKeyBrand]: true };

export function chunkKey(input: ChunkKeyInput): ChunkKey {
  const h = createHash('sha256');
  const str = (s: string) => {
    const b = Buffer.from(s, 'utf8');
    const len = Buffer.allocUnsafe(4);
    len.writeUInt32LE(b.length, 0);
    h.update(len);
    h.update(b);
  };
  str(DOMAIN);
  str(input.modelId);
  str(input.tenantSalt ?? '');
  str(input.variant ?? '');
  const n = input.tokens.length;
  const toks = Buffer.allocUnsafe(4 + 4 * n);
  toks.writeUInt32LE(n, 0);
  for (let i = 0; i < n; i++) toks.writeInt32LE(input.tokens[i] | 0, 4 + 4 * i);
  h.update(toks);
  return h.digest('hex') as ChunkKey;
}

export function assertValidKey(key: string): void {
  if (!KEY_PATTERN.test(key)) throw new Error(`invalid KV store key ${JSON.stringify(key)} (want ${KEY_PATTERN})`);
}
