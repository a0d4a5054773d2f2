import { CliError, usageError } from './errors';

export const DEFAULT_API = 'http://127.0.0.1:8080';

/** An HTTP error answered by the API, with the message from its JSON error body. */
export class ApiHttpError extends CliError {
  constructor(
    readonly status: number,
    readonly apiMessage: string,
    readonly what: string,
  ) {
    super(`${what} → HTTP ${status}: ${apiMessage}`);
  }
}

function errorMessage(status: number, statusText: string, text: string): string {
  try {
    const body = JSON.parse(text) as { error?: { message?: string } | string; message?: string };
    if (typeof body.error === 'string') return body.error;
    if (body.error?.message) return body.error.message;
    if (body.message) return body.message;
  } catch {
    // not JSON: show the start of the body
  }
  const snippet = text.replace(/\s+/g, ' ').trim().slice(0, 200);
  return snippet || statusText || `status ${status}`;
}

function causeCode(e: unknown): string {
  const c = (e as { cause?: { code?: string; message?: string } }).cause;
  return c?.code ?? c?.message ?? (e as Error).message;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A small client for the REST API on node's fetch: JSON in and out, Bearer auth, clear errors. */
export class ApiClient {
  readonly base: string;

  constructor(
    base: string,
    private readonly key?: string,
    private readonly timeoutMs = 60_000,
  ) {
    let url: URL;
    try {
      url = new URL(base);
    } catch {
      throw usageError(`--api: not a URL: ${JSON.stringify(base)} (e.g. ${DEFAULT_API})`);
    }
    if (url.protocol !== 'http:' && url.protocol !== 'https:') throw usageError(`--api: expected an http(s) URL, got ${JSON.stringify(base)}`);
    this.base = url.toString().replace(/\/+$/, '');
  }

  headers(extra: Record<string, string> = {}): Record<string, string> {
    return { ...(this.key ? { authorization: `Bearer ${this.key}` } : {}), ...extra };
  }

  /** fetch with the API's base, translating network failures into one clear error. */
  async raw(method: string, path: string, init: { body?: string; headers?: Record<string, string>; signal?: AbortSignal } = {}): Promise<Response> {
    try {
      return await fetch(`${this.base}${path}`, { method, body: init.body, headers: this.headers(init.headers), signal: init.signal });
    } catch (e) {
      const name = (e as Error).name;
      if (name === 'TimeoutError' || name === 'AbortError') throw e;
      throw new CliError(
        `cannot reach the API at ${this.base} (${causeCode(e)}). Is it running? Start it with \`npm start\`, or point --api or EPIC_API_URL at it.`,
      );
    }
  }

  /**
   * A JSON request. 429 and 503 (queue full, queue briefly unavailable: nothing was enqueued) are retried after
   * their Retry-After, a few times; other non-2xx answers throw ApiHttpError with the API's message.
   */
  async json<T>(method: string, path: string, body?: unknown): Promise<T> {
    const what = `${method} ${path}`;
    for (let attempt = 1; ; attempt++) {
      let res: Response;
      let text: string;
      try {
        res = await this.raw(method, path, {
          body: body === undefined ? undefined : JSON.stringify(body),
          headers: body === undefined ? {} : { 'content-type': 'application/json' },
          signal: AbortSignal.timeout(this.timeoutMs),
        });
        text = await res.text();
      } catch (e) {
        if ((e as Error).name === 'TimeoutError') throw new CliError(`${what}: the API at ${this.base} did not answer within ${this.timeoutMs / 1000} s`);
        throw e;
      }
      if (res.ok) {
        try {
          return JSON.parse(text) as T;
        } catch {
          throw new CliError(`${what}: the API answered ${res.status} with a body that is not JSON: ${text.slice(0, 200)}`);
        }
      }
      if ((res.status === 429 || res.status === 503) && attempt < 6) {
        const after = Number(res.headers.get('retry-after'));
        await sleep(Number.isFinite(after) && after > 0 ? Math.min(after, 30) * 1000 : 500 * attempt);
        continue;
      }
      const err = new ApiHttpError(res.status, errorMessage(res.status, res.statusText, text), what);
      if (res.status === 401 || res.status === 403) {
        throw new ApiHttpError(res.status, `${err.apiMessage}${this.key ? ' (check --key or EPIC_API_KEY)' : ' (pass --key or set EPIC_API_KEY)'}`, what);
      }
      throw err;
    }
  }
}
