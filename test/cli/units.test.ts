import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { defaultOut, readRequests, resultLines } from '../../tools/cli/batch';
import { parseExtensions } from '../../tools/cli/files';
import { assignIds, documentRef, idFromPath, ID_PATTERN } from '../../tools/cli/ids';

describe('CLI pieces', () => {
  test('ids come from relative paths, sanitised, at most 128 characters, unique', () => {
    expect(idFromPath('notes/mira.txt')).toBe('notes_mira_txt');
    expect(idFromPath('./a b/ç.md')).toBe('a_b_md');
    expect(idFromPath('...')).toBe('doc');
    const long = `${'x'.repeat(200)}.txt`;
    const id = idFromPath(long);
    expect(id).toHaveLength(128);
    expect(id).toMatch(ID_PATTERN);
    expect(idFromPath(`${'x'.repeat(200)}.md`)).not.toBe(id);
    expect(idFromPath(long)).toBe(id);
    expect(assignIds(['a b.txt', 'a_b.txt', 'a.b.txt', 'a-b.txt'])).toEqual(['a_b_txt', 'a_b_txt-2', 'a_b_txt-3', 'a-b_txt']);
    // a_b_txt-2 is a path's own id, so the collision skips to -3.
    expect(assignIds(['a_b_txt-2', 'a b.txt', 'a_b.txt'])).toEqual(['a_b_txt-2', 'a_b_txt', 'a_b_txt-3']);
    const many = assignIds(Array.from({ length: 3 }, () => long));
    expect(new Set(many).size).toBe(3);
    for (const m of many) expect(m.length).toBeLessThanOrEqual(128);
    expect(documentRef('people_mira_txt')).toBe('people_mira_txt');
    expect(documentRef('people/mira.txt')).toBe('people_mira_txt');
  });

  test('extensions and default output path', () => {
    expect(parseExtensions('.txt, MD,,txt')).toEqual(['.txt', '.md']);
    expect(() => parseExtensions(' , ')).toThrow(/no extensions/);
    expect(defaultOut('/x/requests.jsonl')).toBe('/x/requests.results.jsonl');
    expect(defaultOut('/x/reqs')).toBe('/x/reqs.results.jsonl');
  });

  test('JSONL requests: overrides, paths to ids, every bad line numbered', () => {
    const dir = mkdtempSync(join(tmpdir(), 'epic-cli-unit-'));
    try {
      const f = join(dir, 'r.jsonl');
      writeFileSync(f, '\uFEFF{"documents": ["a/b.txt", {"text": "x"}], "question": "q", "mode": "full"}\r\n\r\n{"prompt": "p"}\r\n');
      const { requests, lines } = readRequests(f, { mode: 'attnlink', k: 3 });
      expect(lines).toEqual([1, 3]);
      expect(requests[0]).toEqual({ documents: ['a_b_txt', { text: 'x' }], question: 'q', mode: 'attnlink', k: 3 });
      writeFileSync(f, Array.from({ length: 12 }, () => 'nope').join('\n'));
      expect(() => readRequests(f)).toThrow(/r\.jsonl:1: not valid JSON[\s\S]*r\.jsonl:10:[\s\S]*and 2 more bad lines/);
      writeFileSync(f, '\n\n');
      expect(() => readRequests(f)).toThrow(/no requests/);
      expect(() => readRequests(join(dir, 'missing.jsonl'))).toThrow(/cannot read .*ENOENT/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('result lines: one per request, failures and missing results as ok:false', () => {
    const lines = resultLines(
      {
        id: 'job_x',
        status: 'cancelled',
        total: 3,
        completed: 1,
        failed: 1,
        progress: 2 / 3,
        results: [
          { index: 0, ok: true, result: { text: 'hi', tokens: [5, 6], finishReason: 'length', promptTokens: 9, cachedTokens: 4, computedTokens: 5, mode: 'full' } },
          { index: 1, ok: false, error: { error: 'boom' } },
        ],
      },
      [1, 2, 5],
    );
    expect(lines).toEqual([
      { index: 0, line: 1, ok: true, text: 'hi', finish_reason: 'length', mode: 'full', usage: { prompt_tokens: 9, completion_tokens: 2, cached_tokens: 4, computed_tokens: 5 } },
      { index: 1, line: 2, ok: false, error: 'boom' },
      { index: 2, line: 5, ok: false, error: 'no result (job cancelled)' },
    ]);
  });
});
