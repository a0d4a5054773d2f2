/** Exit codes: 0 success, 1 error, 2 bad usage or input, 3 finished but some documents or requests failed. */
export const EXIT = { ok: 0, error: 1, usage: 2, partial: 3, interrupted: 130 } as const;

/** An error the CLI reports as one clear line (no stack trace) and exits with `code`. */
export class CliError extends Error {
  constructor(
    message: string,
    readonly code: number = EXIT.error,
  ) {
    super(message);
  }
}

export function usageError(message: string): CliError {
  return new CliError(message, EXIT.usage);
}
