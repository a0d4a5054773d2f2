import { splitLines, splitParagraphs, splitSentences, splitWords } from '../../shared/chunking/boundaries';

describe('boundaries', () => {
  it('cuts sentences at . ! ? before whitespace, keeping abbreviations, initials and decimals whole', () => {
    const text =
      'The value is 3.5 today. It was e.g. fine. Dr. Smith came (J. R. Tolkien wrote). He left! Why? "Yes." She said. End';
    expect(splitSentences(text)).toEqual([
      'The value is 3.5 today. ',
      'It was e.g. fine. ',
      'Dr. Smith came (J. R. Tolkien wrote). ',
      'He left! ',
      'Why? ',
      '"Yes." ',
      'She said. ',
      'End',
    ]);
  });

  it('does not end a sentence before a lowercase word', () => {
    expect(splitSentences('It weighs 5 kg. per unit. Then etc. And so on.')).toEqual([
      'It weighs 5 kg. per unit. ',
      'Then etc. ',
      'And so on.',
    ]);
  });

  it('attaches separators to the piece before and leading whitespace to the first piece', () => {
    expect(splitParagraphs('  \n\nOne.\nTwo.\n \n\n Three.\n')).toEqual(['  \n\nOne.\nTwo.\n \n\n ', 'Three.\n']);
    expect(splitLines('One.\n  Two.\nThree')).toEqual(['One.\n  ', 'Two.\n', 'Three']);
    expect(splitWords(' a  b\tc ')).toEqual([' a  ', 'b\t', 'c ']);
  });

  it('returns the input as one piece when there is nothing to cut, and [""] for ""', () => {
    expect(splitParagraphs('One line.')).toEqual(['One line.']);
    expect(splitWords('')).toEqual(['']);
    expect(splitWords('   ')).toEqual(['   ']);
  });
});
