import { createServer, type Server } from 'node:http';
import { Registry } from 'prom-client';
import { registerProcessMetrics } from './metrics';

/**
 * A per-process Prometheus registry with Node's process metrics under the project prefix, every series labelled
 * `service`. Add the project's metrics with the factories in ./metrics.ts.
 */
export function createRegistry(service: string): Registry {
  const registry = new Registry();
  registry.setDefaultLabels({ service });
  registerProcessMetrics(registry);
  return registry;
}

/**
 * `/metrics` on its own port, for processes without an HTTP API (workers). The host defaults to `METRICS_HOST` from
 * the environment, else 127.0.0.1 (containers set METRICS_HOST=0.0.0.0 so Prometheus can reach them).
 */
export function serveMetrics(registry: Registry, port: number, host = process.env.METRICS_HOST || '127.0.0.1'): Promise<Server> {
  const server = createServer(async (req, res) => {
    const path = (req.url ?? '').split('?')[0];
    if (path === '/metrics') {
      try {
        const body = await registry.metrics();
        res.setHeader('Content-Type', registry.contentType);
        res.end(body);
      } catch (e) {
        res.statusCode = 500;
        res.end(`metrics collection failed: ${(e as Error).message}\n`);
      }
    } else if (path === '/healthz') {
      res.end('ok');
    } else {
      res.statusCode = 404;
      res.end();
    }
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve(server));
  });
}
