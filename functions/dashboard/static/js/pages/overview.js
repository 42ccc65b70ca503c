// Overview: health and readiness, nodes with heartbeat age, pools, requests and tokens per minute, spend and
// errors today; refreshed every 5 s while the page is open.
import { get, query } from '../api.js';
import { legend, timeChart } from '../chart.js';
import { card, errorBox, fmtAge, fmtInt, fmtMoney, h, num, replace, table } from '../dom.js';

const REFRESH_MS = 5000;

export function perMinute(rows, since) {
  const buckets = new Map();
  for (const r of rows) {
    const t = Date.parse(r.timestamp);
    if (Number.isNaN(t) || t < since) continue;
    const m = Math.floor(t / 60e3) * 60e3;
    const b = buckets.get(m) || { requests: 0, tokens: 0 };
    b.requests += 1; b.tokens += num(r.total_tokens);
    buckets.set(m, b);
  }
  return [...buckets.entries()].sort((a, b) => a[0] - b[0]);
}

async function settle(promise) {
  try { return { value: await promise }; } catch (error) { return { error }; }
}

export async function render(main) {
  const body = h('div', { id: 'overview' });
  replace(main, h('h1', { text: 'Overview' }), body);
  let timer = null;
  let stopped = false;
  async function refresh() {
    const now = Date.now();
    const midnight = new Date(); midnight.setHours(0, 0, 0, 0);
    const [health, ready, nodes, clusters, rows, today] = await Promise.all([
      settle(get('/health')), settle(get('/health/readiness', { allow: [503] })), settle(get('/admin/nodes')),
      settle(get('/admin/clusters')),
      settle(get(`/v1/usage${query({ start_date: new Date(now - 3600e3).toISOString(), limit: 1000 })}`)),
      settle(get(`/v1/usage/summary${query({ start_date: midnight.toISOString() })}`)),
    ]);
    if (stopped) return;
    const nodeList = nodes.value?.nodes || [];
    const minutes = rows.value ? perMinute(rows.value, now - 3600e3) : [];
    const last = minutes.filter(([m]) => m >= Math.floor(now / 60e3) * 60e3 - 60e3);
    const rpm = last.reduce((s, [, b]) => s + b.requests, 0) / Math.max(1, last.length);
    const tpm = last.reduce((s, [, b]) => s + b.tokens, 0) / Math.max(1, last.length);
    const totals = today.value?.totals;
    const readyState = ready.value?.data?.status;
    const cards = h('div', { class: 'cards' },
      card('Health', health.value ? `${health.value.status} · v${health.value.version}` : 'down', health.value ? 'ok' : 'bad'),
      card('Readiness', readyState || 'unknown', readyState === 'ready' ? 'ok' : 'bad'),
      card('Nodes up', nodes.value ? `${nodeList.filter((n) => n.up).length} / ${nodeList.length}` : '—'),
      card('Requests / min', rows.value ? rpm.toFixed(1) : '—'),
      card('Tokens / min', rows.value ? fmtInt(tpm) : '—'),
      card('Spend today', totals ? fmtMoney(totals.cost) : '—'),
      card('Requests today', totals ? fmtInt(totals.requests) : '—'),
      card('Errors today', totals ? fmtInt(totals.errors) : '—', totals && num(totals.errors) ? 'warn' : ''));
    const pools = (clusters.value?.clusters || []).flatMap((c) => Object.entries(c.pools || {}).map(([alias, p]) => ({ cluster: c.cluster_id, alias, ...p })));
    const errors = [health, nodes, clusters, rows, today].filter((x) => x.error).map((x) => errorBox(x.error));
    replace(body, errors, cards,
      h('h2', { text: 'Nodes' }),
      h('div', { class: 'panel' }, table([
        { label: 'Node', value: (n) => n.node_id }, { label: 'Cluster', value: (n) => n.cluster_id },
        { label: 'State', value: (n) => h('span', { class: n.up ? 'ok' : 'bad', text: n.up ? (n.load?.loading_model ? 'loading' : 'up') : 'down' }) },
        { label: 'Heartbeat', value: (n) => `${fmtAge(n.last_seen_age_s)} ago` },
        { label: 'Loaded model', value: (n) => n.load?.loaded_model || n.load?.loading_model || '—' },
        { label: 'Active', value: (n) => fmtInt(n.load?.active), num: true },
        { label: 'Platform', value: (n) => [n.chip, n.platform].filter(Boolean).join(' · ') || '—' },
      ], nodeList, 'No node has enrolled.')),
      h('h2', { text: 'Models loaded per pool' }),
      h('div', { class: 'panel' }, table([
        { label: 'Cluster', value: (p) => p.cluster }, { label: 'Alias', value: (p) => p.alias },
        { label: 'Model', value: (p) => p.model }, { label: 'Mode', value: (p) => p.mode },
        { label: 'Ready nodes', value: (p) => `${(p.ready_nodes || []).length} / ${(p.nodes || []).length}`, num: true },
      ], pools, 'No model is loaded on a pool.')),
      h('h2', { text: 'Recent errors (last hour)' }),
      h('div', { class: 'panel' }, table([
        { label: 'Time', value: (r) => new Date(r.timestamp).toLocaleTimeString() }, { label: 'Model', value: (r) => r.model },
        { label: 'Status', value: (r) => h('span', { class: 'bad', text: `${r.status} ${r.status_code ?? ''}` }) },
        { label: 'User', value: (r) => r.user_id }, { label: 'Message', value: (r) => r.error_message },
      ], (rows.value || []).filter((r) => r.status !== 'success').slice(0, 5), 'No error in the last hour.')),
      h('h2', { text: 'Requests and tokens per minute (last hour)' }),
      h('div', { class: 'panel' }, legend(['requests', 'tokens']),
        timeChart([{ name: 'requests', points: minutes.map(([m, b]) => [m, b.requests]) },
          { name: 'tokens', points: minutes.map(([m, b]) => [m, b.tokens]) }],
        { dual: true, format: [(v) => (Number.isInteger(v) ? String(v) : v.toFixed(2)), (v) => fmtInt(v)], label: 'requests and tokens per minute' })));
  }
  async function loop() {
    await refresh();
    // when the first data is on screen (the browser test prints it next to first contentful paint)
    if (!performance.getEntriesByName('isthmus:overview-rendered').length) performance.mark('isthmus:overview-rendered');
    if (!stopped) timer = setTimeout(loop, REFRESH_MS);
  }
  await loop();
  return () => { stopped = true; clearTimeout(timer); };
}
