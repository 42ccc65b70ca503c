// The dashboard shell: sign-in, navigation (#/page), and one page module rendered at a time.
import { ApiError, auth, clearAuth, get, loadAuth, saveAuth, signedIn } from './api.js';
import { errorBox, field, formValues, h, replace } from './dom.js';

const PAGES = [
  ['overview', 'Overview'], ['clusters', 'Clusters & nodes'], ['models', 'Models'], ['providers', 'Cloud providers'],
  ['access', 'Keys, users, budgets'], ['pricing', 'Pricing'], ['usage', 'Usage'], ['batches', 'Batches & files'],
  ['settings', 'Settings'],
];
const main = document.getElementById('main');
let cleanup = null;
let generation = 0;

function renderNav(current) {
  const nav = document.getElementById('nav');
  replace(nav, signedIn() ? PAGES.map(([id, name]) => h('a', { href: `#/${id}`, class: id === current ? 'active' : null,
    'aria-current': id === current ? 'page' : null, text: name })) : []);
  const mode = document.getElementById('mode');
  mode.hidden = !signedIn();
  mode.textContent = auth.open ? 'open mode (loopback)' : 'signed in';
  document.getElementById('signout').hidden = !signedIn();
}

async function route() {
  if (cleanup) { cleanup(); cleanup = null; }
  const mine = ++generation;
  const page = (location.hash.replace(/^#\/?/, '').split('?')[0] || 'overview');
  if (!signedIn()) { renderNav(''); signInPage(); return; }
  const known = PAGES.find(([id]) => id === page) ? page : 'overview';
  renderNav(known);
  const module = await import(`./pages/${known}.js`);
  if (mine !== generation) return;  // navigated away while the module loaded
  replace(main, h('p', { class: 'muted', text: 'Loading…' }));
  try {
    cleanup = (await module.render(main)) || null;
  } catch (err) {
    const hint = err instanceof ApiError && (err.status === 401 || err.status === 403)
      ? h('p', { class: 'muted', text: 'This page needs a token this sign-in does not have (the admin token for clusters, '
        + 'providers and settings; the master key for keys, users, budgets, pricing and usage): sign out and in again.' })
      : null;
    replace(main, h('h1', { text: PAGES.find(([id]) => id === known)[1] }), errorBox(err), hint);
  }
}

/** Checks the tokens against the APIs they open; a token that is refused is an error, and nothing is shown. */
async function verify(admin, master) {
  const adminCheck = await get('/admin/clusters', { allow: [401, 403], token: admin });
  const masterCheck = await get('/v1/users?limit=1', { allow: [401, 403], token: master });
  const refused = [];
  if (adminCheck.status !== 200 && admin) refused.push(`the admin token was refused (${adminCheck.status})`);
  if (masterCheck.status !== 200 && master) refused.push(`the master key was refused (${masterCheck.status})`);
  if (refused.length) throw new Error(`Sign-in failed: ${refused.join('; ')}.`);
  if (adminCheck.status !== 200 && masterCheck.status !== 200) {
    throw new Error('This gateway needs a token: enter its admin token and/or master key.');
  }
  return { open: !admin && !master };
}

function signInPage() {
  const status = h('div');
  const form = h('form', { autocomplete: 'off' },
    field('Admin token (ISTHMUS_ADMIN_TOKEN: /admin/*)', h('input', { name: 'admin', type: 'password', id: 'admin-token' })),
    field('Master key (ISTHMUS_MASTER_KEY: keys, users, budgets, usage)', h('input', { name: 'master', type: 'password', id: 'master-key' })),
    h('button', { type: 'submit', id: 'signin' }, 'Sign in'),
    h('p', { class: 'muted', text: 'Leave both empty on an open-mode gateway (management then answers loopback callers only). ' +
      'Tokens stay in this tab (sessionStorage) and are sent only as Authorization headers.' }));
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const { admin, master } = formValues(form);
    replace(status, h('p', { class: 'muted', text: 'Checking…' }));
    try {
      const { open } = await verify(admin, master);
      saveAuth({ admin, master, open });
      route();
    } catch (err) {
      replace(status, errorBox(err));
    }
  });
  replace(main, h('section', { class: 'signin panel' }, h('h1', { text: 'Sign in to Isthmus' }), status, form));
}

document.getElementById('signout').addEventListener('click', () => {
  clearAuth();
  // One render of the sign-in form: a changed hash routes by itself (hashchange); calling route() as well drew a
  // second form a moment later, over whatever was already typed into the first.
  if (location.hash === '#/overview') route(); else location.hash = '#/overview';
});
window.addEventListener('hashchange', route);

async function start() {
  loadAuth();
  if (!signedIn()) {
    // open mode: both surfaces answer without a token (on loopback) — say so instead of asking for one
    try { const { open } = await verify('', ''); if (open) saveAuth({ open: true }); } catch { /* needs a token */ }
  }
  route();
}
start();
