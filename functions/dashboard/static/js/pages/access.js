// Keys, users and budgets: the full CRUD of the control surface. A new or rotated key's secret is shown once,
// with a copy button, and is gone when the page changes.
import { api, enc, get } from '../api.js';
import { attempt, copyButton, errorBox, field, fmtMoney, fmtTime, formValues, h, replace, table, toast } from '../dom.js';

function secretOnce(where, title, secret) {
  // the page moved on while the key was made: the secret must still be seen once
  if (!where) { window.prompt(`${title}: copy it now, it is shown once`, secret); return; }
  replace(where, h('div', { class: 'panel new-secret' }, h('strong', { text: title }),
    h('p', { class: 'muted', text: 'Shown once: copy it now, it cannot be read again.' }),
    h('div', { class: 'secret' }, h('span', { class: 'secret-value', text: secret }), copyButton(secret))));
}

// metadata is whatever clients stored: shown as JSON text, never interpreted
function parseMetadata(text) {
  if (!text) return null;
  try { return JSON.parse(text); } catch { throw new Error('Metadata must be a JSON object, e.g. {"team": "research"}'); }
}
const metadata = (row) => (row.metadata && Object.keys(row.metadata).length ? h('code', { text: JSON.stringify(row.metadata) }) : '');

function submitter(form, where, action) {
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    attempt(where, () => action(formValues(form)));
  });
  return form;
}

async function usersTab(body, refresh) {
  const [users, budgets] = await Promise.all([get('/v1/users?limit=1000'), get('/v1/budgets?limit=1000')]);
  const where = h('div');
  const form = submitter(h('form', { class: 'inline', id: 'new-user' },
    field('User id', h('input', { name: 'user_id', required: true })), field('Alias', h('input', { name: 'alias' })),
    field('Budget', h('select', { name: 'budget_id' }, h('option', { value: '', text: '(none)' }), budgets.map((b) => h('option', { value: b.budget_id, text: b.name ? `${b.name} (${b.budget_id})` : b.budget_id })))),
    field('Metadata (JSON object)', h('input', { name: 'metadata', placeholder: '{"team": "research"}' })),
    h('button', { type: 'submit' }, 'Create user')), where, async (v) => {
    await api('POST', '/v1/users', { user_id: v.user_id, alias: v.alias || null, budget_id: v.budget_id || null,
      metadata: parseMetadata(v.metadata) });
    toast(`user ${v.user_id} created`); refresh();
  });
  replace(body, where, h('div', { class: 'panel' }, table([
    { label: 'User', value: (u) => u.user_id }, { label: 'Alias', value: (u) => u.alias },
    { label: 'Budget', value: (u) => u.budget_id }, { label: 'Spend', value: (u) => fmtMoney(u.spend), num: true },
    { label: 'Reserved', value: (u) => fmtMoney(u.reserved), num: true },
    { label: 'Blocked', value: (u) => (u.blocked ? 'blocked' : '') },
    { label: 'Metadata', value: metadata },
    { label: '', value: (u) => h('div', { class: 'tabs' },
      h('button', { class: 'small', type: 'button', onclick: () => attempt(where, () => api('PATCH', `/v1/users/${enc(u.user_id)}`, { blocked: !u.blocked }).then(refresh)) }, u.blocked ? 'Unblock' : 'Block'),
      h('button', { class: 'small', type: 'button', onclick: () => attempt(where, async () => {
        const next = window.prompt(`Budget id for ${u.user_id} (empty: none)`, u.budget_id || '');
        if (next !== null) { await api('PATCH', `/v1/users/${enc(u.user_id)}`, { budget_id: next.trim() || null }); refresh(); }
      }) }, 'Budget…'),
      h('button', { class: 'small danger', type: 'button', onclick: () => attempt(where, async () => { if (window.confirm(`Delete user ${u.user_id}?`)) { await api('DELETE', `/v1/users/${enc(u.user_id)}`); refresh(); } }) }, 'Delete')) },
  ], users, 'No user yet.')), h('div', { class: 'panel' }, form));
}

async function budgetsTab(body, refresh) {
  const budgets = await get('/v1/budgets?limit=1000');
  const where = h('div');
  const logs = h('div');
  const form = submitter(h('form', { class: 'inline', id: 'new-budget' },
    field('Budget id', h('input', { name: 'budget_id' })), field('Name', h('input', { name: 'name' })),
    field('Max budget (USD)', h('input', { name: 'max_budget', inputmode: 'decimal', required: true })),
    field('Period', h('select', { name: 'period' }, h('option', { value: '', text: 'none' }),
      [['86400', 'daily (rolling)'], ['604800', 'weekly (rolling)'], ['2592000', '30 days (rolling)']].map(([v, t]) => h('option', { value: v, text: t })))),
    h('button', { type: 'submit' }, 'Create budget')), where, async (v) => {
    const b = { max_budget: v.max_budget, name: v.name || null, budget_id: v.budget_id || null };
    if (v.period) b.budget_duration_sec = Number(v.period);
    await api('POST', '/v1/budgets', b);
    toast('budget created'); refresh();
  });
  const showLogs = (b) => attempt(logs, async () => {
    const rows = await get(`/v1/budgets/${enc(b.budget_id)}/reset-logs`);
    replace(logs, h('div', { class: 'panel' }, h('h2', { text: `Reset log of ${b.budget_id}` }),
      table([{ label: 'User', value: (r) => r.user_id }, { label: 'Reset at', value: (r) => fmtTime(r.reset_at) },
        { label: 'Spend before', value: (r) => fmtMoney(r.previous_spend ?? r.spend), num: true }], Array.isArray(rows) ? rows : (rows.logs || []), 'No reset yet.')));
  });
  replace(body, where, h('div', { class: 'panel' }, table([
    { label: 'Budget', value: (b) => b.budget_id }, { label: 'Name', value: (b) => b.name },
    { label: 'Max', value: (b) => (b.max_budget == null ? '∞' : fmtMoney(b.max_budget)), num: true },
    { label: 'Period', value: (b) => (b.budget_duration_sec ? `${b.budget_duration_sec / 86400} d` : b.reset_alignment || '—') },
    { label: '', value: (b) => h('div', { class: 'tabs' },
      h('button', { class: 'small', type: 'button', onclick: () => showLogs(b) }, 'Reset log'),
      h('button', { class: 'small', type: 'button', onclick: () => attempt(where, async () => {
        const next = window.prompt(`New max budget (USD) of ${b.budget_id}`, b.max_budget ?? '');
        if (next !== null && next.trim()) { await api('PATCH', `/v1/budgets/${enc(b.budget_id)}`, { max_budget: next.trim() }); refresh(); }
      }) }, 'Edit max…'),
      h('button', { class: 'small danger', type: 'button', onclick: () => attempt(where, async () => { if (window.confirm(`Delete budget ${b.budget_id}?`)) { await api('DELETE', `/v1/budgets/${enc(b.budget_id)}`); refresh(); } }) }, 'Delete')) },
  ], budgets, 'No budget yet.')), logs, h('div', { class: 'panel' }, form));
}

async function keysTab(body, refresh) {
  const [keys, users] = await Promise.all([get('/v1/keys?limit=1000'), get('/v1/users?limit=1000')]);
  const where = h('div', { id: 'key-secret' });
  const form = submitter(h('form', { class: 'inline', id: 'new-key' },
    field('Key name', h('input', { name: 'key_name', required: true })),
    field('User', h('select', { name: 'user_id' }, h('option', { value: '', text: '(none)' }), users.map((u) => h('option', { value: u.user_id, text: u.user_id })))),
    field('RPM limit', h('input', { name: 'rpm_limit', type: 'number', min: 1, size: 6 })),
    h('button', { type: 'submit' }, 'Create key')), where, async (v) => {
    const k = { key_name: v.key_name, user_id: v.user_id || null };
    if (v.rpm_limit) k.rpm_limit = Number(v.rpm_limit);
    const created = await api('POST', '/v1/keys', k);
    await refresh();
    secretOnce(document.getElementById('key-secret'), `New key ${created.key_name || created.id}`, created.key);
  });
  const rotate = (k) => attempt(where, async () => {
    if (!window.confirm(`Rotate ${k.key_name || k.id}? The old secret stops working.`)) return;
    const rotated = await api('POST', `/v1/keys/${enc(k.id)}/rotate`, {});
    await refresh();
    secretOnce(document.getElementById('key-secret'), `Rotated key ${k.key_name || k.id}`, rotated.key);
  });
  replace(body, where, h('div', { class: 'panel' }, table([
    { label: 'Name', value: (k) => k.key_name }, { label: 'Id', value: (k) => h('code', { text: k.id }) },
    { label: 'User', value: (k) => k.user_id },
    { label: 'Active', value: (k) => h('span', { class: k.is_active ? 'ok' : 'bad', text: k.is_active ? 'active' : 'inactive' }) },
    { label: 'Last used', value: (k) => fmtTime(k.last_used_at) },
    { label: 'Metadata', value: metadata },
    { label: '', value: (k) => h('div', { class: 'tabs' },
      h('button', { class: 'small', type: 'button', onclick: () => rotate(k) }, 'Rotate'),
      h('button', { class: 'small', type: 'button', onclick: () => attempt(where, async () => {
        const next = window.prompt('New name of this key', k.key_name || '');
        if (next !== null && next.trim()) { await api('PATCH', `/v1/keys/${enc(k.id)}`, { key_name: next.trim() }); refresh(); }
      }) }, 'Rename…'),
      h('button', { class: 'small', type: 'button', onclick: () => attempt(where, () => api('PATCH', `/v1/keys/${enc(k.id)}`, { is_active: !k.is_active }).then(refresh)) }, k.is_active ? 'Deactivate' : 'Activate'),
      h('button', { class: 'small danger', type: 'button', onclick: () => attempt(where, async () => { if (window.confirm('Delete this key?')) { await api('DELETE', `/v1/keys/${enc(k.id)}`); refresh(); } }) }, 'Delete')) },
  ], keys, 'No key yet.')), h('div', { class: 'panel' }, form));
}

const TABS = [['keys', 'Keys', keysTab], ['users', 'Users', usersTab], ['budgets', 'Budgets', budgetsTab]];

export async function render(main) {
  let current = sessionStorage.getItem('isthmus.dashboard.accessTab') || 'keys';
  const tabs = h('div', { class: 'tabs' });
  const body = h('div');
  replace(main, h('h1', { text: 'Keys, users, budgets' }), tabs, body);
  let generation = 0;
  async function refresh() {
    const mine = ++generation;
    replace(tabs, TABS.map(([id, name]) => h('button', { type: 'button', class: id === current ? 'active' : null, 'data-tab': id, onclick: () => {
      current = id; sessionStorage.setItem('isthmus.dashboard.accessTab', id); refresh();
    } }, name)));
    const [id, , draw] = TABS.find(([tab]) => tab === current) || TABS[0];
    const next = h('div', { 'data-tab-body': id });  // drawn aside, shown only if no later click replaced it
    try { await draw(next, refresh); } catch (err) { replace(next, errorBox(err)); }
    if (mine === generation) replace(body, next);
  }
  await refresh();
}
