import type { Logger } from 'pino';

/**
 * Run a service: `start` brings it up and returns how to close it. SIGTERM / SIGINT close it gracefully (BullMQ
 * workers finish their jobs) and exit 0; a failure to start prints one line naming the service and exits 1.
 */
export function runService(name: string, start: () => Promise<{ log: Logger; close: () => Promise<void> }>): void {
  start().then(
    ({ log, close }) => {
      const shutdown = async (signal: string) => {
        log.info({ signal }, `${name} shutting down`);
        await close();
        process.exit(0);
      };
      process.once('SIGTERM', () => void shutdown('SIGTERM'));
      process.once('SIGINT', () => void shutdown('SIGINT'));
    },
    (e) => {
      console.error(`${name}: ${e instanceof Error ? e.message : String(e)}`);
      process.exit(1);
    },
  );
}
