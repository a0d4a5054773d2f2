import pino, { type Logger } from 'pino';

/** A pino logger per service. Prompt and document text are never logged; log ids and counts. */
export function createLogger(service: string, level = process.env.LOG_LEVEL ?? 'info'): Logger {
  return pino({ name: service, level, base: { service } });
}
