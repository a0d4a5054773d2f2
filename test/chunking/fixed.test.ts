import { ChunkingError, KVSPLIT_DEFAULTS, splitFixed } from '../../shared/chunking';
import { chunkProblems, generateDocument, tokenizer } from './generate';

describe('splitFixed', () => {
  it('fills each chunk with whole words up to chunkTokens', () => {
    const text = 'Mira lives in Lisbon and she works at the company.';
    const chunks = splitFixed(text, tokenizer, { chunkTokens: 6 });
    expect(chunks.map((c) => c.text)).toEqual(['Mira lives in ', 'Lisbon ', 'and she works at the ', 'company.']);
    expect(chunks.map((c) => c.tokens.length)).toEqual([6, 6, 5, 2]);
  });

  it('ignores sentence and paragraph boundaries', () => {
    const text = 'the city lives. she works.\n\nhe was born.';
    const chunks = splitFixed(text, tokenizer, { chunkTokens: 3 });
    expect(chunks.map((c) => c.text)).toEqual(['the city ', 'lives. she ', 'works.\n\nhe ', 'was born.']);
  });

  it('holds its invariants on 300 generated documents', () => {
    const problems: string[] = [];
    for (let seed = 0; seed < 300; seed++) {
      const { text } = generateDocument(seed);
      const chunkTokens = 1 + (seed % 50);
      const chunks = splitFixed(text, tokenizer, { chunkTokens });
      const found = chunkProblems(text, chunks, chunkTokens);
      if (JSON.stringify(splitFixed(text, tokenizer, { chunkTokens })) !== JSON.stringify(chunks)) found.push('not deterministic');
      chunks.forEach((c, i) => {
        // Greedy: the next chunk's first word would not have fitted, unless a word over chunkTokens was cut
        // between characters around here (its pieces are packed on their own).
        const next = chunks[i + 1];
        const wholeWords = (i === 0 || /\s$/.test(chunks[i - 1].text)) && /\s$/.test(c.text);
        if (next && wholeWords) {
          const firstWord = /^\S*\s*/.exec(next.text)![0];
          if (c.tokens.length + tokenizer.encode(firstWord).length <= chunkTokens) found.push(`chunk ${i} not full`);
        }
      });
      problems.push(...found.map((p) => `seed ${seed} chunkTokens ${chunkTokens}: ${p}`));
    }
    expect(problems).toEqual([]);
  });

  it('defaults to the KVSplit target and validates chunkTokens', () => {
    const text = Array.from({ length: 200 }, () => 'the city of').join(' ');
    expect(splitFixed(text, tokenizer)[0].tokens.length).toBe(KVSPLIT_DEFAULTS.targetTokens);
    expect(splitFixed('  ', tokenizer, { chunkTokens: 4 })).toEqual([]);
    for (const bad of [{ chunkTokens: 0 }, { chunkTokens: 1.5 }, { chunkTokens: -3 }, { size: 4 }]) {
      expect(() => splitFixed(text, tokenizer, bad as never)).toThrow(ChunkingError);
      expect(() => splitFixed(text, tokenizer, bad as never)).toThrow(/invalid fixed-size chunking options/);
    }
  });
});
