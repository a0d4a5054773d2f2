import { pathToFileURL } from 'node:url';

/**
 * Node's arguments to run a TypeScript file in one process: node --import tsx. Not `tsx file`, which runs it in a
 * child process and relays signals to it, killing the child with SIGKILL when it does not confirm one within 30 ms
 * (a service busy in onnxruntime, or any process on a loaded machine, can take longer): its graceful shutdown never
 * ran.
 */
export function tsArgs(file: string, ...args: string[]): string[] {
  return ['--import', pathToFileURL(require.resolve('tsx')).href, file, ...args];
}
