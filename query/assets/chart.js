// Charts drawn as SVG, no library: bars over a time axis (incomplete
// buckets hatched and outlined) and a line for daily series.

import { count, when } from './api.js';

const SVG = 'http://www.w3.org/2000/svg';

function svg(tag, attrs, ...children) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value !== undefined && value !== null) node.setAttribute(name, String(value));
  }
  for (const child of children) node.append(child);
  return node;
}

/** A "nice" upper bound for an axis: 1, 2 or 5 times a power of ten. */
function niceMax(value) {
  if (value <= 0) return 1;
  const power = 10 ** Math.floor(Math.log10(value));
  for (const step of [1, 2, 5, 10]) {
    if (value <= step * power) return step * power;
  }
  return 10 * power;
}

/**
 * Bars over time. `bars`: `{start, seconds, value, complete}`, drawn in
 * `[from, to)`; each bar carries its numbers as `data-*` attributes.
 */
export function barChart(container, { bars, from, to, label }) {
  const width = 900;
  const height = 260;
  const pad = { left: 56, right: 12, top: 12, bottom: 34 };
  const plotW = width - pad.left - pad.right;
  const plotH = height - pad.top - pad.bottom;
  const max = niceMax(Math.max(0, ...bars.map((b) => b.value)));
  const x = (t) => pad.left + ((t - from) / Math.max(1, to - from)) * plotW;
  const y = (v) => pad.top + plotH - (Math.max(0, v) / max) * plotH;

  const chart = svg('svg', {
    viewBox: `0 0 ${width} ${height}`,
    class: 'bars',
    role: 'img',
    'aria-label': label,
  });
  chart.append(
    svg(
      'defs',
      {},
      svg(
        'pattern',
        { id: 'hatch', patternUnits: 'userSpaceOnUse', width: 6, height: 6, patternTransform: 'rotate(45)' },
        svg('rect', { width: 6, height: 6, class: 'hatch-bg' }),
        svg('line', { x1: 0, y1: 0, x2: 0, y2: 6, class: 'hatch-line' }),
      ),
    ),
  );
  for (const fraction of [0, 0.5, 1]) {
    const value = max * fraction;
    chart.append(
      svg('line', { x1: pad.left, x2: width - pad.right, y1: y(value), y2: y(value), class: 'grid' }),
      svg('text', { x: pad.left - 6, y: y(value) + 4, class: 'axis', 'text-anchor': 'end' }, count(value)),
    );
  }
  const span = to - from;
  const withDate = span > 86400;
  for (const fraction of [0, 0.25, 0.5, 0.75, 1]) {
    const t = from + span * fraction;
    const anchor = fraction === 0 ? 'start' : fraction === 1 ? 'end' : 'middle';
    chart.append(
      svg('text', { x: x(t), y: height - 12, class: 'axis', 'text-anchor': anchor }, when(t, withDate)),
    );
  }
  for (const bar of bars) {
    const left = x(Math.max(from, bar.start));
    const right = x(Math.min(to, bar.start + bar.seconds));
    const w = Math.max(1, right - left - (right - left > 4 ? 1.5 : 0));
    const top = y(bar.value);
    const rect = svg('rect', {
      x: left,
      y: top,
      width: w,
      height: Math.max(bar.value > 0 ? 1 : 0, pad.top + plotH - top),
      class: `bar ${bar.complete ? 'complete' : 'incomplete'}`,
      // The pattern by attribute: a stylesheet's url(#id) may not resolve here.
      fill: bar.complete ? undefined : 'url(#hatch)',
      'data-start': bar.start,
      'data-value': bar.value,
      'data-complete': bar.complete,
    });
    rect.append(
      svg('title', {}, `${when(bar.start)}: ${count(bar.value)}${bar.complete ? '' : ' (incomplete: may still change)'}`),
    );
    chart.append(rect);
  }
  chart.append(
    svg('line', { x1: pad.left, x2: width - pad.right, y1: pad.top + plotH, y2: pad.top + plotH, class: 'baseline' }),
  );
  container.replaceChildren(chart);
}

/** A line of `(t, value)` points, for small daily series. */
export function lineChart(container, points, label) {
  const width = 420;
  const height = 120;
  const pad = 8;
  if (points.length === 0) {
    container.replaceChildren();
    return;
  }
  const values = points.map((p) => p.value);
  const low = Math.min(...values);
  const high = Math.max(...values);
  const first = points[0].t;
  const last = points[points.length - 1].t;
  const x = (t) => pad + ((t - first) / Math.max(1, last - first)) * (width - 2 * pad);
  const y = (v) => height - pad - ((v - low) / Math.max(1, high - low)) * (height - 2 * pad);
  const path = points.map((p, i) => `${i ? 'L' : 'M'}${x(p.t).toFixed(1)},${y(p.value).toFixed(1)}`).join(' ');
  const chart = svg('svg', { viewBox: `0 0 ${width} ${height}`, class: 'line', role: 'img', 'aria-label': label });
  chart.append(svg('path', { d: path, class: 'series' }));
  for (const p of points) {
    const dot = svg('circle', { cx: x(p.t), cy: y(p.value), r: 2.5, class: 'dot' });
    dot.append(svg('title', {}, `${when(p.t)}: ${count(p.value)}`));
    chart.append(dot);
  }
  container.replaceChildren(chart);
}
