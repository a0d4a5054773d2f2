/** What incremental decoding needs of a tokenizer. */
export interface Decodes {
  decode(ids: ArrayLike<number>): string;
}

/**
 * Incremental detokenizing, as vLLM's detokenizer and transformers' TextStreamer do it: each new token's text is the
 * decoded window [prefix, …, new] minus the decoded [prefix, …, read], where the window starts at the tokens emitted
 * last (context for decoders whose text depends on neighbours: WordPiece's spaces, SentencePiece's); while that text ends in U+FFFD (a multi-byte
 * character split across tokens: byte-level BPE gives an emoji as 2-4 byte tokens) nothing is emitted and the window
 * waits for the next token. The concatenation of what `push` returns, plus `flush()` at the end, is the text of all
 * the tokens, and never holds a broken character that a later token completes.
 */
export class IncrementalDetokenizer {
  private readonly ids: number[] = [];
  /** Start of the decoding window (context already emitted). */
  private prefixOffset = 0;
  /** Tokens before this index have had their text emitted. */
  private readOffset = 0;
  /** All text emitted so far. */
  text = '';

  constructor(private readonly tok: Decodes) {}

  get tokens(): readonly number[] {
    return this.ids;
  }

  /** Add a token; returns the text it completes ('' while a character is still incomplete). */
  push(token: number): string {
    this.ids.push(token);
    const prefixText = this.tok.decode(this.ids.slice(this.prefixOffset, this.readOffset));
    let full = this.tok.decode(this.ids.slice(this.prefixOffset));
    let delta: string;
    if (full.startsWith(prefixText)) delta = full.slice(prefixText.length);
    else {
      // The window decodes differently from its prefix (a decoder that rewrites across tokens): diff the whole text.
      full = this.tok.decode(this.ids);
      delta = full.startsWith(this.text) ? full.slice(this.text.length) : '';
    }
    if (!delta || delta.endsWith('\uFFFD')) return '';
    // The next window starts at the tokens just emitted: their text is complete, and they give the new token the
    // context its text may depend on.
    this.prefixOffset = this.readOffset;
    this.readOffset = this.ids.length;
    this.text += delta;
    return delta;
  }

  /** Text still held back at the end (bytes no later token completed: decoded as U+FFFD, as a plain decode would). */
  flush(): string {
    if (this.readOffset === this.ids.length) return '';
    const prefixText = this.tok.decode(this.ids.slice(this.prefixOffset, this.readOffset));
    const full = this.tok.decode(this.ids.slice(this.prefixOffset));
    let delta = full.startsWith(prefixText) ? full.slice(prefixText.length) : undefined;
    if (delta === undefined) {
      const all = this.tok.decode(this.ids);
      delta = all.startsWith(this.text) ? all.slice(this.text.length) : '';
    }
    this.readOffset = this.ids.length;
    this.prefixOffset = this.ids.length;
    this.text += delta;
    return delta;
  }
}
