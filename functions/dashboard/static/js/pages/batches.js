// Batches and files: listed once their APIs exist (today they answer 501, and the page says so).
import { get } from '../api.js';
import { errorBox, fmtBytes, fmtTime, h, replace, table } from '../dom.js';

async function section(title, path, columns) {
  const r = await get(path, { allow: [501, 404] }).catch((err) => ({ error: err }));
  if (r.error) return [h('h2', { text: title }), errorBox(r.error)];
  if (r.status !== 200) return [h('h2', { text: title }), h('p', { class: 'muted not-available', text: `${title}: not available on this gateway yet (${path} answered ${r.status}).` })];
  const items = Array.isArray(r.data) ? r.data : r.data?.data || [];
  return [h('h2', { text: title }), h('div', { class: 'panel' }, table(columns, items, `No ${title.toLowerCase()} yet.`))];
}

export async function render(main) {
  const [batches, files] = await Promise.all([
    section('Batches', '/v1/batches', [
      { label: 'Id', value: (b) => b.id }, { label: 'Status', value: (b) => b.status },
      { label: 'Progress', value: (b) => (b.request_counts ? `${b.request_counts.completed + b.request_counts.failed} / ${b.request_counts.total}` : '—') },
      { label: 'Created', value: (b) => fmtTime((b.created_at || 0) * 1000) },
      { label: 'Output', value: (b) => (b.output_file_id ? h('code', { text: b.output_file_id }) : '—') }]),
    section('Files', '/v1/files', [
      { label: 'Id', value: (f) => f.id }, { label: 'Name', value: (f) => f.filename }, { label: 'Purpose', value: (f) => f.purpose },
      { label: 'Size', value: (f) => fmtBytes(f.bytes), num: true }, { label: 'Created', value: (f) => fmtTime((f.created_at || 0) * 1000) }]),
  ]);
  replace(main, h('h1', { text: 'Batches & files' }), batches, files);
}
