/** POST JSON; a streamed answer is read whole and split into its SSE events (JSON, or the final '[DONE]'). */
export async function post(base: string, path: string, body: object): Promise<{ status: number; json?: any; events?: any[] }> {
  const r = await fetch(`${base}${path}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  if (!(body as { stream?: boolean }).stream || r.status !== 200) return { status: r.status, json: await r.json() };
  const text = await r.text();
  const events = text
    .split('\n\n')
    .filter((e) => e.startsWith('data: '))
    .map((e) => e.slice(6))
    .map((d) => (d === '[DONE]' ? d : JSON.parse(d)));
  return { status: r.status, events };
}

/** A completion stream's text pieces (non-empty), finish reason and usage. */
export function completionStream(events: any[]): { pieces: string[]; finish: string | null; usage?: any } {
  const pieces: string[] = [];
  let finish: string | null = null;
  let usage: any;
  for (const e of events) {
    if (e === '[DONE]') continue;
    expect(e.error).toBeUndefined();
    for (const c of e.choices ?? []) {
      const piece = c.text ?? c.delta?.content;
      if (piece) pieces.push(piece);
      finish = c.finish_reason ?? finish;
    }
    if (e.usage) usage = e.usage;
  }
  expect(events.at(-1)).toBe('[DONE]');
  return { pieces, finish, usage };
}
