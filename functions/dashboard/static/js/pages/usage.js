// Usage: filters (user, key, model, date range), spend and tokens over time, breakdowns by model and by user,
// CSV export of the rows shown. Rows come from /v1/usage (up to 1000 per read, paged), totals from the summary.
import { get, query } from '../api.js';
import { barChart, legend, timeChart } from '../chart.js';
import { card, errorBox, field, fmtInt, fmtMoney, fmtTime, formValues, h, num, replace, table } from '../dom.js';

const PAGE = 1000;
const MAX_ROWS = 10000;
const CSV_COLUMNS = ['timestamp', 'id', 'user_id', 'api_key_id', 'api_key_name', 'model', 'provider', 'endpoint', 'status',
  'status_code', 'prompt_tokens', 'completion_tokens', 'total_tokens', 'cost', 'latency_ms'];

async function allRows(filters) {
  const rows = [];
  for (let skip = 0; skip < MAX_ROWS; skip += PAGE) {
    const page = await get(`/v1/usage${query({ ...filters, skip, limit: PAGE })}`);
    rows.push(...page);
    if (page.length < PAGE) break;
  }
  return rows;
}

export function buckets(rows) {
  if (!rows.length) return { size: 60e3, points: [] };
  const times = rows.map((r) => Date.parse(r.timestamp));
  const span = Math.max(...times) - Math.min(...times);
  const size = span <= 6 * 3600e3 ? 60e3 : span <= 4 * 86400e3 ? 3600e3 : 86400e3;
  const map = new Map();
  rows.forEach((r, i) => {
    const t = Math.floor(times[i] / size) * size;
    const b = map.get(t) || { cost: 0, tokens: 0 };
    b.cost += num(r.cost); b.tokens += num(r.total_tokens);
    map.set(t, b);
  });
  return { size, points: [...map.entries()].sort((a, b) => a[0] - b[0]) };
}

function group(rows, key) {
  const map = new Map();
  for (const r of rows) {
    const k = r[key] || '(none)';
    const g = map.get(k) || { label: k, cost: 0, tokens: 0, requests: 0 };
    g.cost += num(r.cost); g.tokens += num(r.total_tokens); g.requests += 1;
    map.set(k, g);
  }
  return [...map.values()];
}

function csvCell(v) {
  const s = v === null || v === undefined ? '' : String(v);
  // a cell a spreadsheet would run as a formula is quoted as text
  const safe = /^[=+\-@\t\r]/.test(s) ? `'${s}` : s;
  return /[",\n\r]/.test(safe) ? `"${safe.replace(/"/g, '""')}"` : safe;
}

export function toCsv(rows) {
  return [CSV_COLUMNS.join(','), ...rows.map((r) => CSV_COLUMNS.map((c) => csvCell(r[c])).join(','))].join('\r\n');
}

export async function render(main) {
  const [users, keys] = await Promise.all([get('/v1/users?limit=1000'), get('/v1/keys?limit=1000')]);
  const state = JSON.parse(sessionStorage.getItem('isthmus.dashboard.usageFilters') || '{}');
  const form = h('form', { class: 'inline', id: 'usage-filters' },
    field('User', h('select', { name: 'user_id' }, h('option', { value: '', text: 'all' }), users.map((u) => h('option', { value: u.user_id, text: u.user_id, selected: state.user_id === u.user_id })))),
    field('Key', h('select', { name: 'api_key_id' }, h('option', { value: '', text: 'all' }), keys.map((k) => h('option', { value: k.id, text: k.key_name || k.id, selected: state.api_key_id === k.id })))),
    field('Model', h('input', { name: 'model', value: state.model || '' })),
    field('From', h('input', { name: 'start', type: 'date', value: state.start || '' })),
    field('To', h('input', { name: 'end', type: 'date', value: state.end || '' })),
    h('button', { type: 'submit' }, 'Apply'),
    h('button', { type: 'button', class: 'ghost', id: 'usage-refresh', onclick: () => draw() }, 'Refresh'),
    h('button', { type: 'button', class: 'ghost', id: 'export-csv', onclick: () => exportCsv() }, 'Export CSV'));
  const body = h('div', { id: 'usage-body' });
  let rows = [];
  replace(main, h('h1', { text: 'Usage' }), h('div', { class: 'panel' }, form), body);

  function filters() {
    const v = formValues(form);
    sessionStorage.setItem('isthmus.dashboard.usageFilters', JSON.stringify(v));
    return { user_id: v.user_id, api_key_id: v.api_key_id, model: v.model,
      start_date: v.start ? new Date(`${v.start}T00:00:00`).toISOString() : '',
      end_date: v.end ? new Date(`${v.end}T23:59:59.999`).toISOString() : '' };
  }
  function exportCsv() {
    const blob = new Blob([toCsv(rows)], { type: 'text/csv' });
    const link = h('a', { href: URL.createObjectURL(blob), download: `isthmus-usage-${new Date().toISOString().slice(0, 10)}.csv` });
    document.body.append(link); link.click(); link.remove();
    setTimeout(() => URL.revokeObjectURL(link.href), 1000);
  }
  let generation = 0;
  async function draw() {
    const mine = ++generation;
    body.dataset.loading = 'true';
    try {
      const f = filters();
      const [all, summary] = await Promise.all([allRows(f), get(`/v1/usage/summary${query(f)}`)]);
      if (mine !== generation) return;  // a later draw (another filter, a refresh) owns the page
      rows = all;
      const t = summary.totals;
      const { points } = buckets(rows);
      replace(body,
        h('div', { class: 'cards' }, card('Spend', fmtMoney(t.cost)), card('Requests', fmtInt(t.requests)),
          card('Tokens', fmtInt(t.total_tokens)), card('Errors', fmtInt(t.errors), num(t.errors) ? 'warn' : '')),
        h('h2', { text: 'Spend and tokens over time' }),
        h('div', { class: 'panel', id: 'usage-chart', 'data-rows': String(rows.length) }, legend(['spend (USD)', 'tokens']),
          timeChart([{ name: 'spend', points: points.map(([x, b]) => [x, b.cost]) }, { name: 'tokens', points: points.map(([x, b]) => [x, b.tokens]) }],
            { dual: true, format: [(v) => (v ? `$${v.toPrecision(2)}` : '$0'), (v) => (Number.isInteger(v) ? fmtInt(v) : v.toFixed(1))], label: 'spend and tokens over time' })),
        h('div', { class: 'row2' },
          h('div', { class: 'panel' }, h('h2', { text: 'Spend by model' }), barChart(group(rows, 'model').map((g) => ({ label: g.label, value: g.cost })), { format: fmtMoney, label: 'spend by model' })),
          h('div', { class: 'panel' }, h('h2', { text: 'Spend by user' }), barChart(group(rows, 'user_id').map((g) => ({ label: g.label, value: g.cost })), { format: fmtMoney, label: 'spend by user' }))),
        h('h2', { text: `Requests (${rows.length}${rows.length >= MAX_ROWS ? '+' : ''})` }),
        h('div', { class: 'panel' }, table([
          { label: 'Time', value: (r) => fmtTime(r.timestamp) }, { label: 'User', value: (r) => r.user_id },
          { label: 'Key', value: (r) => r.api_key_name || r.api_key_id }, { label: 'Model', value: (r) => r.model },
          { label: 'Status', value: (r) => h('span', { class: r.status === 'success' ? 'ok' : 'bad', text: r.status }) },
          { label: 'Tokens', value: (r) => fmtInt(r.total_tokens), num: true },
          { label: 'Cost', value: (r) => fmtMoney(r.cost), num: true },
          { label: 'Latency', value: (r) => (r.latency_ms == null ? '—' : `${r.latency_ms} ms`), num: true },
        ], rows.slice(0, 200), 'No request matches.')));
    } catch (err) {
      if (mine === generation) replace(body, errorBox(err));
    } finally {
      if (mine === generation) delete body.dataset.loading;
    }
  }
  form.addEventListener('submit', (ev) => { ev.preventDefault(); draw(); });
  await draw();
}
