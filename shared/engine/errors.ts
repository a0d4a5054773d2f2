/** Errors the engine raises for bad models and bad input. Each names the file or the limit at fault. */
export class ModelLoadError extends Error {
  override name = 'ModelLoadError';
  constructor(
    message: string,
    readonly file?: string,
  ) {
    super(message);
  }
}

export class ContextLengthError extends Error {
  override name = 'ContextLengthError';
  constructor(
    readonly tokens: number,
    readonly limit: number,
    what = 'prompt',
  ) {
    super(`${what} needs ${tokens} positions but the model's context length is ${limit}`);
  }
}

export class EngineInputError extends Error {
  override name = 'EngineInputError';
}

export class UnsupportedModeError extends Error {
  override name = 'UnsupportedModeError';
}
