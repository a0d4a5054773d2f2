/** Grouped bar chart (log y), dependency-free SVG, for bench:peer: one group per measurement, one bar per engine. */
export interface PeerGroup {
  group: string;
  unit: string;
  bars: { label: string; value: number | null }[];
}

const COLORS = ['#2b6cb0', '#c05621', '#dd6b20', '#718096'];

export function peerSvg(groups: PeerGroup[], opts: { title: string; subtitle: string }): string {
  const bw = 44;
  const gap = 40;
  const m = { l: 70, r: 20, t: 60, b: 90 };
  const n = groups.reduce((s, g) => s + g.bars.length, 0);
  const W = Math.max(720, m.l + m.r + n * (bw + 6) + groups.length * gap);
  const H = 480;
  const vals = groups.flatMap((g) => g.bars.map((b) => b.value)).filter((v): v is number => v != null && v > 0 && Number.isFinite(v));
  const lo = Math.floor(Math.log10(Math.min(...vals)));
  const hi = Math.ceil(Math.log10(Math.max(...vals)));
  const py = (v: number) => H - m.b - ((Math.log10(v) - lo) / Math.max(1, hi - lo)) * (H - m.t - m.b);
  const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;');
  const labels = [...new Set(groups.flatMap((g) => g.bars.map((b) => b.label)))];
  const out = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" font-family="sans-serif" font-size="12">`,
    `<rect width="${W}" height="${H}" fill="white"/>`,
    `<text x="${W / 2}" y="22" text-anchor="middle" font-size="14">${esc(opts.title)}</text>`,
    `<text x="${W / 2}" y="40" text-anchor="middle" font-size="11" fill="#555">${esc(opts.subtitle)}</text>`,
    `<line x1="${m.l}" y1="${H - m.b}" x2="${W - m.r}" y2="${H - m.b}" stroke="black"/>`,
    `<line x1="${m.l}" y1="${m.t}" x2="${m.l}" y2="${H - m.b}" stroke="black"/>`,
    `<text transform="translate(18 ${(H - m.b + m.t) / 2}) rotate(-90)" text-anchor="middle">ms (log)</text>`,
  ];
  for (let e = lo; e <= hi; e++) {
    for (const k of [1, 2, 5]) {
      const v = k * 10 ** e;
      if (Math.log10(v) > hi) continue;
      out.push(`<line x1="${m.l - 4}" y1="${py(v)}" x2="${W - m.r}" y2="${py(v)}" stroke="#eee"/>`);
      out.push(`<text x="${m.l - 6}" y="${py(v) + 4}" text-anchor="end" font-size="10">${v >= 1 ? v : v.toPrecision(1)}</text>`);
    }
  }
  let x = m.l + gap / 2;
  for (const g of groups) {
    const x0 = x;
    for (const b of g.bars) {
      const c = COLORS[labels.indexOf(b.label) % COLORS.length];
      if (b.value != null && b.value > 0) {
        const y = py(b.value);
        out.push(`<rect x="${x}" y="${y}" width="${bw}" height="${H - m.b - y}" fill="${c}"/>`);
        out.push(`<text x="${x + bw / 2}" y="${y - 4}" text-anchor="middle" font-size="10">${b.value >= 100 ? b.value.toFixed(0) : b.value.toPrecision(3)}</text>`);
      }
      x += bw + 6;
    }
    out.push(`<text x="${(x0 + x - 6) / 2}" y="${H - m.b + 18}" text-anchor="middle">${esc(g.group)}</text>`);
    out.push(`<text x="${(x0 + x - 6) / 2}" y="${H - m.b + 33}" text-anchor="middle" font-size="10" fill="#555">${esc(g.unit)}</text>`);
    x += gap;
  }
  labels.forEach((l, i) => {
    const lx = m.l + 10 + i * 170;
    out.push(`<rect x="${lx}" y="${H - 30}" width="12" height="12" fill="${COLORS[i % COLORS.length]}"/>`);
    out.push(`<text x="${lx + 16}" y="${H - 20}">${esc(l)}</text>`);
  });
  out.push('</svg>');
  return out.join('\n') + '\n';
}
