/** A small dependency-free SVG grouped bar chart (groups of bars with a legend), for bench reports. */
export interface BarGroup {
  label: string;
  bars: { series: string; value: number }[];
}

export function groupedBarsSvg(groups: BarGroup[], opts: { title: string; yLabel: string; yMax?: number }): string {
  const W = 760;
  const H = 420;
  const m = { l: 70, r: 150, t: 40, b: 50 };
  const series = [...new Set(groups.flatMap((g) => g.bars.map((b) => b.series)))];
  const yMax = opts.yMax ?? Math.max(1e-9, ...groups.flatMap((g) => g.bars.map((b) => b.value))) * 1.1;
  const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;');
  const py = (v: number) => H - m.b - (v / yMax) * (H - m.t - m.b);
  const gw = (W - m.l - m.r) / Math.max(1, groups.length);
  const bw = (gw * 0.8) / Math.max(1, series.length);
  const color = (i: number) => `hsl(${(i * 137) % 360} 60% 50%)`;
  const out: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" font-family="sans-serif" font-size="12">`,
    `<rect width="${W}" height="${H}" fill="white"/>`,
    `<text x="${(W - m.r + m.l) / 2}" y="22" text-anchor="middle" font-size="15">${esc(opts.title)}</text>`,
    `<line x1="${m.l}" y1="${H - m.b}" x2="${W - m.r}" y2="${H - m.b}" stroke="black"/>`,
    `<line x1="${m.l}" y1="${m.t}" x2="${m.l}" y2="${H - m.b}" stroke="black"/>`,
    `<text transform="translate(18 ${H / 2}) rotate(-90)" text-anchor="middle">${esc(opts.yLabel)}</text>`,
  ];
  for (let i = 0; i <= 5; i++) {
    const v = (yMax * i) / 5;
    out.push(`<line x1="${m.l}" y1="${py(v)}" x2="${W - m.r}" y2="${py(v)}" stroke="#eee"/>`);
    out.push(`<text x="${m.l - 8}" y="${py(v) + 4}" text-anchor="end">${v.toFixed(2)}</text>`);
  }
  groups.forEach((g, gi) => {
    const x0 = m.l + gi * gw + gw * 0.1;
    g.bars.forEach((b) => {
      const si = series.indexOf(b.series);
      const x = x0 + si * bw;
      out.push(`<rect x="${x}" y="${py(b.value)}" width="${bw - 2}" height="${H - m.b - py(b.value)}" fill="${color(si)}"/>`);
      out.push(`<text x="${x + bw / 2}" y="${py(b.value) - 4}" text-anchor="middle" font-size="10">${b.value.toFixed(2)}</text>`);
    });
    out.push(`<text x="${m.l + gi * gw + gw / 2}" y="${H - m.b + 18}" text-anchor="middle">${esc(g.label)}</text>`);
  });
  series.forEach((s, i) => {
    out.push(`<rect x="${W - m.r + 15}" y="${m.t + i * 20}" width="12" height="12" fill="${color(i)}"/>`);
    out.push(`<text x="${W - m.r + 32}" y="${m.t + i * 20 + 10}">${esc(s)}</text>`);
  });
  out.push('</svg>');
  return out.join('\n');
}
