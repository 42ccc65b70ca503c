// Pricing: the current price per model, a new version (effective now or later), the price history, delete.
import { api, enc, get } from '../api.js';
import { attempt, field, fmtMoney, fmtTime, formValues, h, replace, table, toast } from '../dom.js';

export async function render(main) {
  const body = h('div');
  replace(main, h('h1', { text: 'Pricing' }), body);
  async function refresh() {
    const prices = await get('/v1/pricing?limit=1000');
    const where = h('div');
    const history = h('div');
    const form = h('form', { class: 'inline', id: 'set-price' },
      field('Model', h('input', { name: 'model_key', required: true, size: 26 })),
      field('Input $ / M tokens', h('input', { name: 'input', required: true, inputmode: 'decimal', size: 8 })),
      field('Output $ / M tokens', h('input', { name: 'output', required: true, inputmode: 'decimal', size: 8 })),
      field('Effective at (blank: now)', h('input', { name: 'effective_at', type: 'datetime-local' })),
      h('button', { type: 'submit' }, 'Set price'));
    form.addEventListener('submit', (ev) => {
      ev.preventDefault();
      const v = formValues(form);
      attempt(where, async () => {
        const b = { model_key: v.model_key, input_price_per_million: v.input, output_price_per_million: v.output };
        if (v.effective_at) b.effective_at = new Date(v.effective_at).toISOString();
        await api('POST', '/v1/pricing', b);
        toast(`price of ${v.model_key} set`); refresh();
      });
    });
    const showHistory = (p) => attempt(history, async () => {
      const rows = await get(`/v1/pricing/${enc(p.model_key)}/history`);
      replace(history, h('div', { class: 'panel' }, h('h2', { text: `Price history of ${p.model_key}` }), table([
        { label: 'Effective at', value: (r) => fmtTime(r.effective_at) },
        { label: 'Input $/M', value: (r) => fmtMoney(r.input_price_per_million), num: true },
        { label: 'Output $/M', value: (r) => fmtMoney(r.output_price_per_million), num: true },
        { label: 'Set at', value: (r) => fmtTime(r.created_at) }], Array.isArray(rows) ? rows : [])));
    });
    replace(body, where, h('div', { class: 'panel' }, table([
      { label: 'Model', value: (p) => h('code', { text: p.model_key }) },
      { label: 'Input $/M', value: (p) => fmtMoney(p.input_price_per_million), num: true },
      { label: 'Output $/M', value: (p) => fmtMoney(p.output_price_per_million), num: true },
      { label: 'Effective at', value: (p) => fmtTime(p.effective_at) },
      { label: '', value: (p) => h('div', { class: 'tabs' },
        h('button', { class: 'small', type: 'button', onclick: () => showHistory(p) }, 'History'),
        h('button', { class: 'small danger', type: 'button', onclick: () => attempt(where, async () => { if (window.confirm(`Delete every price of ${p.model_key}?`)) { await api('DELETE', `/v1/pricing/${enc(p.model_key)}`); refresh(); } }) }, 'Delete')) },
    ], prices, 'No price set: every model is free.')), history, h('div', { class: 'panel' }, form));
  }
  await refresh();
}
