/** A small dependency-free SVG scatter chart (labelled points), for bench reports. */
export interface Point {
  label: string;
  x: number;
  y: number;
}

export function scatterSvg(points: Point[], opts: { title: string; xLabel: string; yLabel: string; logX?: boolean }): string {
  const W = 760;
  const H = 480;
  const m = { l: 70, r: 30, t: 40, b: 60 };
  const fx = (v: number) => (opts.logX ? Math.log10(Math.max(v, 1e-9)) : v);
  const xs = points.map((p) => fx(p.x));
  const ys = points.map((p) => p.y);
  let [x0, x1] = [Math.min(...xs), Math.max(...xs)];
  let [y0, y1] = [Math.min(...ys), Math.max(...ys)];
  if (x1 - x0 < 1e-9) [x0, x1] = [x0 - 1, x1 + 1];
  if (y1 - y0 < 1e-9) [y0, y1] = [y0 - 0.05, y1 + 0.05];
  const padX = (x1 - x0) * 0.08;
  const padY = (y1 - y0) * 0.1;
  [x0, x1, y0, y1] = [x0 - padX, x1 + padX, y0 - padY, y1 + padY];
  const px = (v: number) => m.l + ((fx(v) - x0) / (x1 - x0)) * (W - m.l - m.r);
  const py = (v: number) => H - m.b - ((v - y0) / (y1 - y0)) * (H - m.t - m.b);
  const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;');
  const ticks = (a: number, b: number, n: number) => Array.from({ length: n + 1 }, (_, i) => a + ((b - a) * i) / n);
  const out: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" font-family="sans-serif" font-size="12">`,
    `<rect width="${W}" height="${H}" fill="white"/>`,
    `<text x="${W / 2}" y="22" text-anchor="middle" font-size="15">${esc(opts.title)}</text>`,
    `<line x1="${m.l}" y1="${H - m.b}" x2="${W - m.r}" y2="${H - m.b}" stroke="black"/>`,
    `<line x1="${m.l}" y1="${m.t}" x2="${m.l}" y2="${H - m.b}" stroke="black"/>`,
  ];
  for (const t of ticks(x0, x1, 6)) {
    const v = opts.logX ? 10 ** t : t;
    const x = m.l + ((t - x0) / (x1 - x0)) * (W - m.l - m.r);
    out.push(`<line x1="${x}" y1="${H - m.b}" x2="${x}" y2="${H - m.b + 5}" stroke="black"/>`);
    out.push(`<text x="${x}" y="${H - m.b + 18}" text-anchor="middle">${v.toFixed(v < 10 ? 2 : 1)}</text>`);
  }
  for (const t of ticks(y0, y1, 6)) {
    const y = py(t);
    out.push(`<line x1="${m.l - 5}" y1="${y}" x2="${m.l}" y2="${y}" stroke="black"/>`);
    out.push(`<text x="${m.l - 8}" y="${y + 4}" text-anchor="end">${t.toFixed(3)}</text>`);
    out.push(`<line x1="${m.l}" y1="${y}" x2="${W - m.r}" y2="${y}" stroke="#eee"/>`);
  }
  out.push(`<text x="${W / 2}" y="${H - 15}" text-anchor="middle">${esc(opts.xLabel)}</text>`);
  out.push(`<text transform="translate(18 ${H / 2}) rotate(-90)" text-anchor="middle">${esc(opts.yLabel)}</text>`);
  points.forEach((p, i) => {
    const x = px(p.x);
    const y = py(p.y);
    out.push(`<circle cx="${x}" cy="${y}" r="4" fill="hsl(${(i * 47) % 360} 70% 45%)"/>`);
    out.push(`<text x="${x + 6}" y="${y - 6 - (i % 3) * 4}">${esc(p.label)}</text>`);
  });
  out.push('</svg>');
  return out.join('\n');
}
