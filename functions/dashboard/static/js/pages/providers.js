// Cloud providers: add from a template (OpenAI, Anthropic, OpenRouter) with a pasted key that is never shown
// again ("set" / "from env"), publish aliases, test, enable or disable, delete.
import { api, enc, get } from '../api.js';
import { attempt, field, formValues, h, replace, table, toast } from '../dom.js';

const EDITABLE = ['protocol', 'api_base', 'api_key_env', 'enabled', 'headers', 'published', 'timeouts', 'max_retries'];

function keyState(p) {
  if (p.api_key_source === 'config') return 'set';
  if (p.api_key_source === 'env') return p.api_key_set ? `from env (${p.api_key_env})` : `env ${p.api_key_env} unset`;
  return 'none';
}

function addForm(refresh) {
  const form = h('form', { class: 'inline', id: 'add-provider' },
    field('Provider id', h('input', { name: 'id', required: true, pattern: '[A-Za-z0-9._\\-]{1,64}' })),
    field('Template', h('select', { name: 'template' }, ['openai', 'anthropic', 'openrouter'].map((t) => h('option', { value: t, text: t })))),
    field('API base (blank: the template\'s)', h('input', { name: 'api_base', type: 'url', size: 28 })),
    field('API key (stored sealed, never shown again)', h('input', { name: 'api_key', type: 'password', autocomplete: 'off' })),
    field('…or key from env variable', h('input', { name: 'api_key_env' })),
    field('Publish alias', h('input', { name: 'alias' })),
    field('Upstream model', h('input', { name: 'upstream_model' })),
    field('Extra headers (Name: value, one a line)', h('textarea', { name: 'headers', rows: 2 })),
    h('button', { type: 'submit' }, 'Add provider'));
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    const v = formValues(form);
    attempt(form.parentElement, async () => {
      const body = { template: v.template };
      if (v.api_base) body.api_base = v.api_base;
      if (v.api_key) body.api_key = v.api_key;
      if (v.api_key_env) body.api_key_env = v.api_key_env;
      const headers = Object.fromEntries(v.headers.split('\n').map((l) => l.trim()).filter(Boolean)
        .map((l) => [l.slice(0, l.indexOf(':')).trim(), l.slice(l.indexOf(':') + 1).trim()]));
      if (Object.keys(headers).length) body.headers = headers;
      if (v.alias) body.published = [{ alias: v.alias, upstream_model: v.upstream_model || v.alias }];
      await api('PUT', `/admin/providers/${enc(v.id)}`, body);
      form.reset();
      toast(`provider ${v.id} saved`);
      refresh();
    });
  });
  return h('div', { class: 'panel' }, h('h2', { text: 'Add a cloud provider' }), form);
}

function publishForm(p, where, refresh) {
  const form = h('form', { class: 'inline' },
    h('input', { name: 'alias', placeholder: 'alias', required: true, size: 12 }),
    h('input', { name: 'upstream_model', placeholder: 'upstream model', required: true, size: 14 }),
    h('button', { class: 'small', type: 'submit' }, 'Publish'));
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    const v = formValues(form);
    attempt(where, () => update(p, { published: [...(p.published || []), { alias: v.alias, upstream_model: v.upstream_model }] }).then(refresh));
  });
  return form;
}

/** A PUT of the record as it is with some fields changed (no api_key: the stored key is kept). */
function update(p, changes) {
  const body = {};
  for (const k of EDITABLE) if (p[k] !== undefined && p[k] !== null) body[k] = p[k];
  return api('PUT', `/admin/providers/${enc(p.provider_id)}`, { ...body, ...changes });
}

export async function render(main) {
  const body = h('div');
  replace(main, h('h1', { text: 'Cloud providers' }), body);
  async function refresh() {
    const providers = await get('/admin/providers');
    const list = h('div', { class: 'panel' });
    replace(list, table([
      { label: 'Provider', value: (p) => h('strong', { class: 'provider-name', text: p.provider_id }) },
      { label: 'Protocol', value: (p) => p.protocol }, { label: 'API base', value: (p) => p.api_base },
      { label: 'Key', value: keyState },
      { label: 'Headers', value: (p) => h('div', {}, Object.entries(p.headers || {}).map(([k, v]) => h('div', { class: 'provider-header', text: `${k}: ${v}` })),
        p.secret_headers_set ? h('div', { class: 'muted', text: 'secret headers: set' }) : null) },
      { label: 'Enabled', value: (p) => h('span', { class: p.enabled ? 'ok' : 'muted', text: p.enabled ? 'enabled' : 'disabled' }) },
      { label: 'Published aliases', value: (p) => h('div', {}, (p.published || []).map((a) => h('div', { text: `${a.alias} → ${a.upstream_model}` })), publishForm(p, list, refresh)) },
      { label: '', value: (p) => h('div', { class: 'tabs' },
        h('button', { class: 'small', type: 'button', onclick: () => attempt(list, async () => {
          const r = await api('POST', `/admin/providers/${enc(p.provider_id)}/test`, {});
          toast(`${p.provider_id}: ${r.ok === false ? 'failed' : 'ok'} ${r.detail || r.message || ''}`, r.ok === false ? 'bad' : '');
        }) }, 'Test'),
        h('button', { class: 'small', type: 'button', onclick: () => attempt(list, () => update(p, { enabled: !p.enabled }).then(refresh)) }, p.enabled ? 'Disable' : 'Enable'),
        h('button', { class: 'small danger', type: 'button', onclick: () => attempt(list, async () => {
          if (!window.confirm(`Delete provider ${p.provider_id}?`)) return;
          await api('DELETE', `/admin/providers/${enc(p.provider_id)}`);
          refresh();
        }) }, 'Delete')) },
    ], providers, 'No cloud provider yet.'));
    replace(body, list, addForm(refresh));
  }
  await refresh();
}
