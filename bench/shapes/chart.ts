/** Grouped bar chart (log y) with an optional limit tick per bar, dependency-free SVG, for bench:shapes. */
export interface BarGroup {
  group: string;
  bars: { label: string; value: number; limit?: number }[];
}

export function barsSvg(groups: BarGroup[], opts: { title: string; yLabel: string }): string {
  const n = groups.reduce((s, g) => s + g.bars.length, 0);
  const bw = 34;
  const gap = 30;
  const m = { l: 80, r: 20, t: 50, b: 120 };
  const W = Math.max(640, m.l + m.r + n * (bw + 6) + groups.length * gap);
  const H = 520;
  const vals = groups.flatMap((g) => g.bars.flatMap((b) => [b.value, b.limit ?? b.value])).filter((v) => v > 0 && Number.isFinite(v));
  const lo = Math.floor(Math.log10(Math.min(...vals)));
  const hi = Math.ceil(Math.log10(Math.max(...vals)));
  const py = (v: number) => H - m.b - ((Math.log10(v) - lo) / Math.max(1, hi - lo)) * (H - m.t - m.b);
  const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;');
  const out = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" font-family="sans-serif" font-size="12">`,
    `<rect width="${W}" height="${H}" fill="white"/>`,
    `<text x="${W / 2}" y="22" text-anchor="middle" font-size="14">${esc(opts.title)}</text>`,
    `<text x="${W / 2}" y="40" text-anchor="middle" font-size="11" fill="#555">bars: measured TTFT p50; black tick: full's TTFT ÷ the mode's FLOP ratio (the FLOP limit)</text>`,
    `<line x1="${m.l}" y1="${H - m.b}" x2="${W - m.r}" y2="${H - m.b}" stroke="black"/>`,
    `<line x1="${m.l}" y1="${m.t}" x2="${m.l}" y2="${H - m.b}" stroke="black"/>`,
    `<text transform="translate(20 ${(H - m.b + m.t) / 2}) rotate(-90)" text-anchor="middle">${esc(opts.yLabel)}</text>`,
  ];
  for (let e = lo; e <= hi; e++) {
    for (const k of [1, 2, 5]) {
      const v = k * 10 ** e;
      if (Math.log10(v) > hi) continue;
      const y = py(v);
      out.push(`<line x1="${m.l}" y1="${y}" x2="${W - m.r}" y2="${y}" stroke="${k === 1 ? '#ccc' : '#eee'}"/>`);
      out.push(`<text x="${m.l - 6}" y="${y + 4}" text-anchor="end">${v >= 1 ? v.toFixed(0) : v.toPrecision(1)}</text>`);
    }
  }
  let x = m.l + gap / 2;
  groups.forEach((g) => {
    const x0 = x;
    g.bars.forEach((b, i) => {
      const y = py(Math.max(b.value, 10 ** lo));
      out.push(`<rect x="${x}" y="${y}" width="${bw}" height="${H - m.b - y}" fill="hsl(${(i * 53) % 360} 60% 55%)"/>`);
      out.push(`<text x="${x + bw / 2}" y="${y - 4}" text-anchor="middle" font-size="10">${b.value.toFixed(b.value < 100 ? 1 : 0)}</text>`);
      if (b.limit && b.limit > 0) {
        const ly = py(b.limit);
        out.push(`<line x1="${x - 3}" y1="${ly}" x2="${x + bw + 3}" y2="${ly}" stroke="black" stroke-width="2.5"/>`);
      }
      out.push(`<text transform="translate(${x + bw / 2 + 4} ${H - m.b + 8}) rotate(60)" font-size="11">${esc(b.label)}</text>`);
      x += bw + 6;
    });
    out.push(`<text x="${(x0 + x - 6) / 2}" y="${H - 12}" text-anchor="middle" font-size="13">${esc(g.group)}</text>`);
    x += gap;
  });
  out.push('</svg>');
  return out.join('\n');
}
