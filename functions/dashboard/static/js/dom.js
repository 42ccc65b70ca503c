// Building the page: every user-supplied string (names, metadata, model ids) goes in as text (textContent,
// text nodes, attribute values), never parsed as HTML anywhere in the dashboard.
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === 'class') el.className = value;
    else if (key === 'text') el.textContent = String(value);
    else if (key.startsWith('on') && typeof value === 'function') el.addEventListener(key.slice(2), value);
    else if (key === 'value') el.value = value;
    else if (key === 'checked') el.checked = !!value;
    else el.setAttribute(key, value === true ? '' : String(value));
  }
  append(el, children);
  return el;
}

export function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

export function replace(el, ...children) {
  el.replaceChildren();
  return append(el, children);
}

/** A table: columns are {label, value: row => text | Node, num?: bool}. */
export function table(columns, rows, empty = 'Nothing yet.') {
  if (!rows.length) return h('p', { class: 'muted', text: empty });
  return h('table', {},
    h('thead', {}, h('tr', {}, columns.map((c) => h('th', { class: c.num ? 'num' : null, text: c.label })))),
    h('tbody', {}, rows.map((row) => h('tr', {}, columns.map((c) => {
      const v = c.value(row);
      return h('td', { class: c.num ? 'num' : null }, v instanceof Node ? v : (v ?? '—'));
    })))));
}

export const card = (label, value, cls) => h('div', { class: 'card' }, h('div', { class: 'label', text: label }),
  h('div', { class: `value ${cls || ''}`, text: value }));

export const errorBox = (err) => h('div', { class: 'error', role: 'alert', text: err.message || String(err) });

export function field(label, input) { return h('label', {}, label, input); }

export function toast(message, kind = '') {
  const box = document.getElementById('toast');
  const item = h('div', { class: kind, text: message });
  box.append(item);
  setTimeout(() => item.remove(), 5000);
}

/** Runs an action from a button or form, showing its error where it happened. */
export async function attempt(where, action) {
  try {
    return await action();
  } catch (err) {
    if (where) where.prepend(errorBox(err)); else toast(err.message, 'bad');
    return undefined;
  }
}

export function formValues(form) {
  const out = {};
  for (const el of form.elements) {
    if (!el.name) continue;
    out[el.name] = el.type === 'checkbox' ? el.checked : el.value.trim();
  }
  return out;
}

export const num = (v) => (v === null || v === undefined || v === '' ? 0 : Number(v));
export const fmtInt = (v) => num(v).toLocaleString('en-US', { maximumFractionDigits: 0 });
export const fmtMoney = (v) => `$${num(v).toLocaleString('en-US', { minimumFractionDigits: 2, maximumFractionDigits: 6 })}`;
export function fmtBytes(v) {
  let n = num(v); const units = ['B', 'KB', 'MB', 'GB', 'TB'];
  let i = 0; while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}
export function fmtAge(seconds) {
  const s = num(seconds);
  if (s < 60) return `${s.toFixed(1)} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min`;
  return `${(s / 3600).toFixed(1)} h`;
}
export const fmtTime = (iso) => (iso ? new Date(iso).toLocaleString() : '—');

export function progressBar(percent, state) {
  const p = Math.max(0, Math.min(100, num(percent)));
  const bar = h('div', { class: `progress ${state || ''}`, role: 'progressbar', 'aria-valuemin': '0',
    'aria-valuemax': '100', 'aria-valuenow': String(p) }, h('div'));
  bar.firstChild.style.width = `${p}%`;  // a CSSOM property, allowed under style-src 'self'
  return bar;
}

export function copyButton(text) {
  return h('button', { class: 'small', type: 'button', onclick: async (ev) => {
    try { await navigator.clipboard.writeText(text); ev.target.textContent = 'Copied'; } catch { ev.target.textContent = 'Select and copy'; }
  } }, 'Copy');
}
