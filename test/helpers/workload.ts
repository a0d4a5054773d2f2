import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { defaultModelDir } from '../../shared/config';

const ROOT = join(__dirname, '..', '..');
const EVAL = join(ROOT, 'data', 'eval', 'qa-heldout.jsonl');

/** The model the pipeline tests serve: the trained default when present, else the random fixture. */
export function pipelineModel(): string {
  return defaultModelDir();
}

const WORDS = 'the a an of to in and is was on for with by at from as it that this he she they his her their what where who when which lives works born city company'.split(' ');

/** Documents and questions in the served model's vocabulary: the held-out set's for the trained model. */
export function workload(modelDir: string, nDocs = 8): { documents: string[]; questions: string[] } {
  if (modelDir.endsWith('epic-qa') && existsSync(EVAL)) {
    const items = readFileSync(EVAL, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l));
    return { documents: items[0].documents.slice(0, nDocs), questions: items.map((i: { question: string }) => i.question) };
  }
  let s = 7;
  const word = () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return WORDS[s % WORDS.length];
  };
  const sentence = (n: number) => Array.from({ length: n }, word).join(' ') + ' .';
  const documents = Array.from({ length: nDocs }, () => Array.from({ length: 6 }, () => sentence(8)).join(' '));
  const questions = Array.from({ length: 120 }, () => `Q : ${Array.from({ length: 4 }, word).join(' ')} ? A :`);
  return { documents, questions };
}
