import { createHash } from 'node:crypto';

import { ID_PATTERN, MAX_ID_LENGTH as MAX_ID } from '../../shared/ids';

/** The API's document id rule (shared/ids.ts). */
export { ID_PATTERN, MAX_ID };

/** A relative path with forward slashes and no leading `./`. */
export function normalisePath(rel: string): string {
  return rel.replace(/\\/g, '/').replace(/^(\.\/)+/, '').replace(/\/+/g, '/');
}

/**
 * The document id for a path relative to the ingested folder: every run of characters outside [A-Za-z0-9_-] becomes
 * `_` (so `notes/mira.txt` → `notes_mira_txt`), leading/trailing `_` trimmed. Ids past 128 characters keep their
 * first 119 characters plus `-` and 8 hex digits of the path's SHA-1, so long paths stay distinct and deterministic.
 */
export function idFromPath(rel: string): string {
  const path = normalisePath(rel);
  let id = path.replace(/[^A-Za-z0-9_-]+/g, '_').replace(/^_+|_+$/g, '');
  if (!id) id = 'doc';
  if (id.length > MAX_ID) id = `${id.slice(0, MAX_ID - 9)}-${createHash('sha1').update(path).digest('hex').slice(0, 8)}`;
  return id;
}

function withSuffix(base: string, n: number): string {
  const suffix = `-${n}`;
  return base.slice(0, MAX_ID - suffix.length) + suffix;
}

/**
 * Ids for sorted relative paths, unique: the first path (in the given order) keeps its derived id, later paths with
 * the same id get `-2`, `-3`, … (never an id another path derives to).
 */
export function assignIds(paths: string[]): string[] {
  const base = paths.map(idFromPath);
  const taken = new Set(base);
  const used = new Set<string>();
  return base.map((id) => {
    if (!used.has(id)) {
      used.add(id);
      return id;
    }
    let n = 2;
    while (taken.has(withSuffix(id, n)) || used.has(withSuffix(id, n))) n++;
    const unique = withSuffix(id, n);
    used.add(unique);
    return unique;
  });
}

/** A document reference in a batch request: a valid id as is, anything else read as a path and derived. */
export function documentRef(ref: string): string {
  return ID_PATTERN.test(ref) ? ref : idFromPath(ref);
}
