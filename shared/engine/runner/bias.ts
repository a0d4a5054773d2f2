import type { KVCache } from '../cache';
import type { RowInput } from './types';

/** Additive bias for keys a query must not see. Finite, so a padding row stays finite. */
export const NEG_INF = -1e9;

/**
 * The additive attention bias [B, 1, S, P + S] of a primitive call: query s of row b sees a valid cached slot whose
 * position is at most its own, and the call's tokens at positions at most its own. The common shapes (increasing
 * positions, a cache wholly before the new tokens) are filled by ranges; anything else is checked key by key.
 */
export function buildBias(
  cache: KVCache,
  rows: RowInput[],
  S: number,
  P: number,
  slotValid: Uint8Array = cache.slotValid,
  out?: Float32Array,
): Float32Array {
  const B = cache.batch;
  const C = cache.capacity;
  const T = P + S;
  // `out`, when given, arrives filled with NEG_INF (BufferPool.acquire's fill).
  const bias = out ?? new Float32Array(B * S * T).fill(NEG_INF);
  for (let b = 0; b < B; b++) {
    const r = rows[b];
    const n = r.tokens.length;
    let increasing = true;
    let first = Infinity;
    for (let s = 0; s < n; s++) {
      first = Math.min(first, r.positions[s]);
      if (s && r.positions[s] <= r.positions[s - 1]) increasing = false;
    }
    const valid: number[] = [];
    let pastBefore = true;
    // Valid slots' positions never decrease with the slot index (chunks placed in prompt order): then the past a query
    // sees is every valid slot up to one index, a copy of a prefix of pastRow.
    let monotone = true;
    let lastPos = -Infinity;
    // The past passed is the cache's first P slots (all of them, or a compacted prefix; P = 1 with no valid slot is
    // the masked placeholder of an empty past).
    for (let j = 0; j < Math.min(P, C); j++) {
      if (!slotValid[b * C + j]) continue;
      valid.push(j);
      const pos = cache.slotPos[b * C + j];
      if (pos >= first) pastBefore = false;
      if (pos < lastPos) monotone = false;
      lastPos = pos;
    }
    const pastRow = new Float32Array(P).fill(NEG_INF);
    for (const j of valid) pastRow[j] = 0;
    for (let s = 0; s < S; s++) {
      const rowOff = (b * S + s) * T;
      if (s >= n) {
        bias[rowOff + P + s] = 0; // padding query: sees only itself
        continue;
      }
      const q = r.positions[s];
      if (pastBefore) bias.set(pastRow, rowOff);
      else if (monotone) {
        // How many valid slots have position <= q (binary search), then copy pastRow up to the last of them.
        let lo = 0;
        let hi = valid.length;
        while (lo < hi) {
          const mid = (lo + hi) >> 1;
          if (cache.slotPos[b * C + valid[mid]] <= q) lo = mid + 1;
          else hi = mid;
        }
        if (lo) bias.set(pastRow.subarray(0, valid[lo - 1] + 1), rowOff);
      } else for (const j of valid) if (cache.slotPos[b * C + j] <= q) bias[rowOff + j] = 0;
      if (increasing) bias.fill(0, rowOff + P, rowOff + P + s + 1);
      else for (let k = 0; k < n; k++) if (r.positions[k] <= q) bias[rowOff + P + k] = 0;
    }
  }
  return bias;
}
