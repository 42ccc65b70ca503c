// Settings: the server-wide defaults of /admin/settings (read per request, so a save applies to live pools).
import { api, get } from '../api.js';
import { attempt, field, formValues, h, replace, toast } from '../dom.js';

const FIELDS = [
  ['enable_thinking_default', 'Thinking on by default', 'tri'], ['pool_ttl_seconds_default', 'Default pool idle TTL (s, blank: never)', 'int'],
  ['kv_q8_default', '8-bit KV cache by default', 'bool'], ['system_prefix_text', 'System prefix text', 'text'],
  ['claude_opus_alias', 'Alias for claude-opus', 'str'], ['claude_sonnet_alias', 'Alias for claude-sonnet', 'str'],
  ['claude_haiku_alias', 'Alias for claude-haiku', 'str'],
];

function input(name, kind, value) {
  if (kind === 'bool') return h('input', { name, type: 'checkbox', checked: !!value });
  if (kind === 'tri') {
    return h('select', { name }, [['', 'model default'], ['true', 'on'], ['false', 'off']].map(([v, t]) => h('option', { value: v, text: t, selected: String(value ?? '') === v })));
  }
  if (kind === 'text') return h('textarea', { name, value: value || '' });
  return h('input', { name, type: kind === 'int' ? 'number' : 'text', min: kind === 'int' ? 0 : null, value: value ?? '' });
}

export async function render(main) {
  const current = await get('/admin/settings');
  const where = h('div');
  const form = h('form', { class: 'panel', id: 'settings-form' }, FIELDS.map(([name, label, kind]) => field(label, input(name, kind, current[name]))),
    h('p', {}, h('button', { type: 'submit' }, 'Save')),
    h('p', { class: 'muted', text: `Last changed: ${current.updated_at || 'never'}` }));
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    const v = formValues(form);
    const body = {};
    for (const [name, , kind] of FIELDS) {
      if (kind === 'bool') body[name] = v[name];
      else if (kind === 'tri') body[name] = v[name] === '' ? null : v[name] === 'true';
      else if (kind === 'int') body[name] = v[name] === '' ? null : Number(v[name]);
      else if (kind === 'text') body[name] = v[name];
      else body[name] = v[name] || null;
    }
    attempt(where, async () => { await api('PUT', '/admin/settings', body); toast('settings saved'); });
  });
  replace(main, h('h1', { text: 'Settings' }), where, form);
}
