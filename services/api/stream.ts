import type { Response } from 'express';
import type { ServeRequest } from '../../shared/serving/request';
import type { ApiDeps } from './deps';
import { runStreaming } from './submit';
import { usage } from './usage';

/** What a streamed completion looks like on the wire (a completion's chunks or a chat's). */
export interface StreamShape {
  /** A chunk carrying `delta` (null: none) and `finish` (null: not finished), with `extra` fields. */
  chunk(delta: string | null, finish: string | null, extra?: object): object;
  /** The delta of the chunk that carries the finish reason ('' for completions, null for chat). */
  finalDelta: string | null;
  /** Sent as soon as the stream starts (chat: the assistant's role). */
  opening?: object;
  /** stream_options.include_usage: a last chunk with the usage and no choices. */
  includeUsage?: boolean;
}

/**
 * How a stream stands. It ends once (`ended`): with the worker's last event, a timeout, or the client leaving,
 * whichever comes first (a failed stream can be announced twice: by the worker and by its failure handler). Apart from
 * how it ended, it records whether the enqueue failed (`failed`: answered as an error instead of a stream, unless the
 * client is gone), whether the client left (`gone`) and whether it timed out (`timedOut`): either takes a job no worker
 * has taken out of the queue.
 */
class StreamState {
  ended = false;
  failed: unknown;
  gone = false;
  timedOut = false;
  readonly finished: Promise<void>;
  private resolveFinished!: () => void;

  constructor() {
    this.finished = new Promise<void>((resolve) => (this.resolveFinished = resolve));
  }

  /** Ends the stream; false when it had already ended. */
  end(): boolean {
    if (this.ended) return false;
    this.ended = true;
    this.resolveFinished();
    return true;
  }
}

/**
 * Stream a request's tokens to the client as server-sent events (OpenAI's `data: {chunk}` … `data: [DONE]`). The
 * headers go out as soon as the job is enqueued, so a client whose request waits in the queue sees at once that it
 * was accepted. Returns once the stream is over; throws the enqueue's error (queue full, Redis down) when the stream
 * never started and the client is still there.
 */
export async function streamCompletion(d: ApiDeps, tenant: string, res: Response, request: ServeRequest, shape: StreamShape): Promise<void> {
  const send = (o: object | string) => res.write(`data: ${typeof o === 'string' ? o : JSON.stringify(o)}\n\n`);
  const s = new StreamState();
  let stop: (() => Promise<void>) | undefined;
  const startStream = () => {
    if (res.headersSent) return;
    res.writeHead(200, { 'Content-Type': 'text/event-stream', 'Cache-Control': 'no-cache', Connection: 'keep-alive' });
    res.flushHeaders();
    if (shape.opening) send(shape.opening);
  };
  const started = runStreaming(d, tenant, request, (e) => {
    if (s.ended) return;
    if (!res.headersSent) startStream();
    if (e.delta) send(shape.chunk(e.delta, null));
    if (e.done) {
      if (e.error) send({ error: { message: e.error, type: 'server_error', param: null, code: null } });
      else if (e.result) {
        send(shape.chunk(shape.finalDelta, e.result.finishReason));
        if (shape.includeUsage) send({ ...shape.chunk(null, null), choices: [], usage: usage(e.result) });
      }
      send('[DONE]');
      s.end();
    }
  }).then(
    (stopFn) => {
      stop = stopFn;
      if (!s.ended) startStream();
    },
    (err) => {
      // Enqueue failed (queue full, Redis down): answer with the error instead of a stream.
      s.failed = err;
      s.end();
    },
  );
  const timeout = setTimeout(() => {
    if (!s.end()) return;
    s.timedOut = true;
    if (!res.headersSent) startStream();
    send({ error: { message: 'timed out', type: 'server_error', param: null, code: 'timeout' } });
    send('[DONE]');
  }, d.requestTimeoutMs);
  res.on('close', () => {
    if (res.writableFinished) return;
    s.gone = true;
    s.end();
  });
  await s.finished;
  clearTimeout(timeout);
  await started; // the enqueue has settled, so its subscription and job are known
  await stop?.();
  if (s.failed) {
    if (!s.gone) throw s.failed;
    return;
  }
  // Timed out, or the client went away: a job no worker has taken goes rather than run for no one (one that runs
  // finishes). After `started`: a job enqueued after the client left goes too.
  // A job no worker took goes, and no longer counts as its tenant's queued request.
  if ((s.gone || s.timedOut) && (await d.router.queues.remove(request.id).catch(() => 0)) > 0) await d.qos.limits.release(tenant, 'interactive', [request.id]).catch(() => undefined);
  res.end();
}
