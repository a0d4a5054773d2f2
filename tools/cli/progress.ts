import { Presets, SingleBar } from 'cli-progress';

const active = new Set<SingleBar>();
let hint = '';

/**
 * A progress bar on stderr (drawn only when stderr is a terminal, so pipes and logs stay clean). `done()` stops it;
 * an interrupt stops every bar still running so the cursor and line come back.
 */
export function progressBar(format: string): SingleBar & { done: () => void } {
  const bar = new SingleBar({ stream: process.stderr, format, hideCursor: true, barsize: 30, etaBuffer: 50, fps: 10 }, Presets.shades_classic);
  active.add(bar);
  return Object.assign(bar, {
    done: () => {
      bar.stop();
      active.delete(bar);
    },
  });
}

/** What to tell the user if they interrupt now (e.g. that a submitted job keeps running). */
export function setInterruptHint(text: string): void {
  hint = text;
}

/** Ctrl-C: stop the bars, say what keeps running, exit 130. */
export function installInterruptHandler(): void {
  process.once('SIGINT', () => {
    for (const b of active) b.stop();
    process.stderr.write(`\ninterrupted${hint ? `; ${hint}` : ''}\n`);
    process.exit(130);
  });
}

/** Notes for the user on stderr. */
export function note(message: string): void {
  process.stderr.write(`${message}\n`);
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

export function seconds(ms: number): string {
  return `${(ms / 1000).toFixed(1)} s`;
}
