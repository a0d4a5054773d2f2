/**
 * Where text may be cut, one splitter per level: paragraph > line > sentence > word. Each splitter returns pieces
 * that concatenate back to its input; a separator (and the whitespace after it) stays with the piece before it, and
 * whitespace at the very start stays with the first piece, so no piece is whitespace alone unless the input is.
 */
export type Splitter = (text: string) => string[];

/** Cuts after every match of `separator` that `accept` allows; never yields an empty or whitespace-only leading piece. */
function splitAfter(text: string, separator: RegExp, accept: (m: RegExpExecArray) => boolean = () => true): string[] {
  const pieces: string[] = [];
  let start = 0;
  for (const m of text.matchAll(separator)) {
    const end = m.index + m[0].length;
    if (end >= text.length || !accept(m)) continue;
    const piece = text.slice(start, end);
    if (!/\S/.test(piece)) continue; // leading whitespace joins the next piece
    pieces.push(piece);
    start = end;
  }
  pieces.push(text.slice(start));
  return pieces;
}

/** A blank line (whitespace allowed on it) ends a paragraph. */
export const splitParagraphs: Splitter = (text) => splitAfter(text, /\n[^\S\n]*\n\s*/g);

export const splitLines: Splitter = (text) => splitAfter(text, /\n\s*/g);

/**
 * Words whose trailing "." does not end a sentence. "etc." and "no." are left out on purpose: they often do. Decimals ("3.5")
 * and inner dots ("e.g") never split because a sentence end needs whitespace after the punctuation.
 */
const ABBREVIATIONS = new Set([
  'e.g', 'i.e', 'vs', 'cf', 'al', 'approx', 'mr', 'mrs', 'ms', 'dr', 'prof', 'st', 'jr', 'sr', 'fig', 'eq',
]);

/**
 * A sentence ends at ".", "!" or "?" (closing quotes or brackets may follow) before whitespace or the end of text.
 * A lone "." does not end one after a known abbreviation, after a single capital letter (an initial, "J. Smith"),
 * or before a lowercase letter.
 */
export const splitSentences: Splitter = (text) =>
  splitAfter(text, /[.!?]+["'\u201d\u2019)\]]*\s+/gu, (m) => {
    const punct = /^[.!?]+/.exec(m[0])![0];
    if (punct !== '.') return true;
    const next = text.charAt(m.index + m[0].length);
    if (/\p{Ll}/u.test(next)) return false;
    const word = /[\p{L}\p{N}.]*$/u.exec(text.slice(0, m.index))![0];
    if (/^\p{Lu}$/u.test(word)) return false;
    return !ABBREVIATIONS.has(word.toLowerCase());
  });

export const splitWords: Splitter = (text) => splitAfter(text, /\s+/g);
