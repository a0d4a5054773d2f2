import { randomUUID } from 'node:crypto';
import { Template } from '@huggingface/jinja';

/** A chat message as the template sees it (content already flattened to text). */
export interface ChatMessage {
  role: string;
  content: string;
  name?: string;
}

/** What rendering needs of a tokenizer (TextTokenizer has it). */
export interface ChatTemplating {
  readonly chatTemplate?: string;
  readonly bosToken?: string;
  readonly eosToken?: string;
}

/**
 * A conversation as prompt text around the documents: `prefix`, then every document's chunks, then `question`.
 * `prefix` undefined: the model has no chat template, and the prompt is the tokenizer's own prefix (BOS or nothing)
 * and the message contents joined by newlines (the format of the project's own models).
 */
export interface ChatPrompt {
  prefix?: string;
  question: string;
  /** Where the documents were put: in the system message (added when the conversation has none), or the first user message. */
  documentsIn?: 'system' | 'user';
}

export class ChatTemplateError extends Error {}

const compiled = new Map<string, Template>();
function compile(source: string): Template {
  let t = compiled.get(source);
  if (!t) {
    try {
      t = new Template(source);
    } catch (e) {
      throw new ChatTemplateError(`the model's chat template does not parse: ${(e as Error).message}`);
    }
    compiled.set(source, t);
  }
  return t;
}

/** Stands where the documents go while the template renders; unique per process, so no message can contain it by chance. */
const PLACEHOLDER = `<|epic-documents-${randomUUID()}|>`;

/** The template rendered with the generation prompt, as transformers' apply_chat_template(add_generation_prompt=True). */
export function renderChat(tok: ChatTemplating, messages: ChatMessage[]): string {
  if (!tok.chatTemplate) throw new ChatTemplateError('the model has no chat template');
  try {
    return compile(tok.chatTemplate).render({
      messages,
      add_generation_prompt: true,
      bos_token: tok.bosToken ?? '',
      eos_token: tok.eosToken ?? '',
    });
  } catch (e) {
    if (e instanceof ChatTemplateError) throw e;
    throw new ChatTemplateError(`the model's chat template failed to render this conversation: ${(e as Error).message}`);
  }
}

function occurrences(text: string, s: string): number {
  let n = 0;
  for (let i = text.indexOf(s); i >= 0; i = text.indexOf(s, i + s.length)) n++;
  return n;
}

/**
 * The prompt of a chat request, split around its documents so they stay position-independent chunks.
 *
 * Where documents go: at the end of the system message, after a blank line when it has text of its own; a conversation
 * without a system message gets one holding only the documents, at its start. The template is rendered with a
 * placeholder there (add_generation_prompt true, bos_token and eos_token set), and the rendered text is split at it:
 * everything before is the prefix (BOS, the system header, the system prompt: the same for every request with the same
 * system prompt, so it is shared), the documents' chunks follow, and everything after (the end of the system turn, the
 * conversation, the assistant's generation prompt) is the question. A template that drops or rewrites the system
 * message (it renders no placeholder, or fails) gets the documents at the start of the first user message instead,
 * followed by a blank line. Without documents the whole rendered conversation is the question, after an empty prefix
 * (the template writes BOS itself).
 */
export function chatPrompt(tok: ChatTemplating, messages: ChatMessage[], withDocuments: boolean): ChatPrompt {
  if (!tok.chatTemplate) {
    return { question: messages.map((m) => m.content).filter(Boolean).join('\n') };
  }
  if (!withDocuments) return { prefix: '', question: renderChat(tok, messages) };
  const attempts: [ChatPrompt['documentsIn'], () => ChatMessage[]][] = [
    [
      'system',
      () =>
        messages[0]?.role === 'system'
          ? [{ ...messages[0], content: messages[0].content ? `${messages[0].content}\n\n${PLACEHOLDER}` : PLACEHOLDER }, ...messages.slice(1)]
          : [{ role: 'system', content: PLACEHOLDER }, ...messages],
    ],
    [
      'user',
      () => {
        const i = messages.findIndex((m) => m.role === 'user');
        if (i < 0) return messages;
        const m = messages[i];
        return [...messages.slice(0, i), { ...m, content: m.content ? `${PLACEHOLDER}\n\n${m.content}` : PLACEHOLDER }, ...messages.slice(i + 1)];
      },
    ],
  ];
  let lastError: Error | undefined;
  for (const [where, build] of attempts) {
    let text: string;
    try {
      text = renderChat(tok, build());
    } catch (e) {
      lastError = e as Error;
      continue;
    }
    if (occurrences(text, PLACEHOLDER) !== 1) continue;
    const at = text.indexOf(PLACEHOLDER);
    return { prefix: text.slice(0, at), question: text.slice(at + PLACEHOLDER.length), documentsIn: where };
  }
  throw new ChatTemplateError(
    `the model's chat template has no place for documents: neither a system message nor the first user message renders them once` +
      (lastError ? ` (${lastError.message})` : ''),
  );
}
