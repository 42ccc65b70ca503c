// Models: /v1/models with include_unloaded, the x_odyssai details, and each model's current price.
import { get } from '../api.js';
import { fmtMoney, h, replace, table } from '../dom.js';

export async function render(main) {
  const [models, pricing] = await Promise.all([get('/v1/models?include_unloaded=true'), get('/v1/pricing').catch(() => [])]);
  const prices = new Map((pricing || []).map((p) => [p.model_key, p]));
  const x = (m) => m.x_odyssai || {};
  const yesNo = (v) => (v === true ? 'yes' : v === false ? 'no' : '—');
  replace(main, h('h1', { text: 'Models' }), h('div', { class: 'panel' }, table([
    { label: 'Id', value: (m) => h('code', { text: m.id }) },
    { label: 'Ready', value: (m) => h('span', { class: x(m).ready ? 'ok' : 'muted', text: x(m).ready ? 'ready' : 'not loaded' }) },
    { label: 'Kind', value: (m) => x(m).kind || '—' }, { label: 'Backend', value: (m) => x(m).backend || '—' },
    { label: 'Owned by', value: (m) => m.owned_by },
    { label: 'Pool / alias for', value: (m) => x(m).pool || x(m).alias_for || '—' },
    { label: 'Nodes', value: (m) => (x(m).nodes || []).join(', ') || '—' },
    { label: 'Context', value: (m) => x(m).context_length ?? '—', num: true },
    { label: 'Tools', value: (m) => yesNo(x(m).supports_tools) }, { label: 'Vision', value: (m) => yesNo(x(m).supports_vision) },
    { label: 'Input $/M', value: (m) => (prices.has(m.id) ? fmtMoney(prices.get(m.id).input_price_per_million) : '—'), num: true },
    { label: 'Output $/M', value: (m) => (prices.has(m.id) ? fmtMoney(prices.get(m.id).output_price_per_million) : '—'), num: true },
  ], models.data || [], 'No model is served or on disk.')));
}
