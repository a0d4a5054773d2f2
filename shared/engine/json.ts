import { readFileSync } from 'node:fs';
import type { z } from 'zod';
import { ModelLoadError } from './errors';

/** A model folder's JSON file, or a ModelLoadError saying `<what> not found` / `<what> is not valid JSON`, naming the file. */
export function readJson(file: string, what: string): unknown {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    throw new ModelLoadError(`${what} not found: ${file} (${(e as Error).message})`, file);
  }
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new ModelLoadError(`${what} is not valid JSON: ${file}: ${(e as Error).message}`, file);
  }
}

/** A JSON file checked against a schema: a ModelLoadError `<what> <file> is invalid: <field>: <message>; …` otherwise. */
export function readJsonAs<T extends z.ZodTypeAny>(file: string, what: string, schema: T): z.infer<T> {
  return checkJson(file, what, schema, readJson(file, what));
}

/** readJsonAs for a file already read. */
export function checkJson<T extends z.ZodTypeAny>(file: string, what: string, schema: T, json: unknown): z.infer<T> {
  const parsed = schema.safeParse(json);
  if (!parsed.success) {
    const issues = parsed.error.issues.map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`).join('; ');
    throw new ModelLoadError(`${what} ${file} is invalid: ${issues}`, file);
  }
  return parsed.data;
}
