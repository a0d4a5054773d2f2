import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { usageError } from './errors';

/** `.txt,.md` or `txt, MD` → ['.txt', '.md']. */
export function parseExtensions(spec: string): string[] {
  const exts = spec
    .split(',')
    .map((e) => e.trim().toLowerCase())
    .filter(Boolean)
    .map((e) => (e.startsWith('.') ? e : `.${e}`));
  if (!exts.length) throw usageError(`--ext: no extensions in ${JSON.stringify(spec)} (e.g. --ext .txt,.md)`);
  return [...new Set(exts)];
}

const byCodeUnit = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);

/**
 * Files under `root` whose names end in one of `exts` (case-insensitive), as relative paths with `/`, sorted by
 * code unit (the same order on every machine and locale). Hidden files and folders (a leading `.`) are skipped and
 * symbolic links to folders are not followed, so the walk always ends.
 */
export function listTextFiles(root: string, exts: string[]): string[] {
  let st;
  try {
    st = statSync(root);
  } catch {
    throw usageError(`no such folder: ${root}`);
  }
  if (!st.isDirectory()) throw usageError(`not a folder: ${root}`);
  const out: string[] = [];
  const walk = (dir: string, rel: string) => {
    for (const e of readdirSync(dir, { withFileTypes: true })) {
      if (e.name.startsWith('.')) continue;
      const path = join(dir, e.name);
      const r = rel ? `${rel}/${e.name}` : e.name;
      if (e.isDirectory()) walk(path, r);
      else if (e.isFile() || (e.isSymbolicLink() && statSync(path, { throwIfNoEntry: false })?.isFile())) {
        const lower = e.name.toLowerCase();
        if (exts.some((x) => lower.endsWith(x))) out.push(r);
      }
    }
  };
  walk(root, '');
  return out.sort(byCodeUnit);
}
