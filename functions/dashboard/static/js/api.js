// The JSON APIs the gateway already has, called with the operator's tokens: the admin token for /admin/*, the
// master key for the control surface (/v1/keys, users, budgets, pricing, usage, models). The tokens live in this
// module and in sessionStorage (gone when the tab closes), never in a URL or a cookie.
const STORE = 'isthmus.dashboard.auth';
export const auth = { admin: '', master: '', open: false };

export function loadAuth() {
  try { Object.assign(auth, JSON.parse(sessionStorage.getItem(STORE) || '{}')); } catch { /* a corrupt entry: none */ }
  return auth;
}
export function saveAuth(next) {
  Object.assign(auth, { admin: next.admin || '', master: next.master || '', open: !!next.open });
  sessionStorage.setItem(STORE, JSON.stringify(auth));
}
export function clearAuth() {
  Object.assign(auth, { admin: '', master: '', open: false });
  sessionStorage.removeItem(STORE);
}
export const signedIn = () => !!(auth.admin || auth.master || auth.open);

export class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

function messageOf(data, status) {
  // the control surface says {"detail"}, OpenAI routes {"error": {"message"}}; otari reads them in that order too
  if (data && typeof data === 'object') {
    const d = data.detail ?? data.message ?? data.error;
    if (typeof d === 'string') return d;
    if (d && typeof d === 'object' && typeof d.message === 'string') return d.message;
    if (d !== undefined) return JSON.stringify(d);
  }
  return typeof data === 'string' && data ? data.slice(0, 300) : `HTTP ${status}`;
}

function authorization(path, token) {
  const secret = token ?? (path.startsWith('/admin') ? auth.admin : auth.master);
  return secret ? { Authorization: `Bearer ${secret}` } : {};
}

export async function api(method, path, body, { allow = [], token } = {}) {
  const headers = { Accept: 'application/json', ...authorization(path, token) };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const init = { method, headers, cache: 'no-store', credentials: 'omit' };
  if (body !== undefined) init.body = JSON.stringify(body);
  let response;
  try {
    response = await fetch(path, init);
  } catch (err) {
    throw new ApiError(0, `the gateway did not answer (${err.message})`);
  }
  const text = await response.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = text; }
  if (!response.ok && !allow.includes(response.status)) throw new ApiError(response.status, messageOf(data, response.status));
  return allow.length ? { status: response.status, data } : data;
}

export const get = (path, opts) => api('GET', path, undefined, opts);

/** A file's bytes as a Blob (for an <a download> on an object URL: the token goes in a header, never in a link),
 * with the name the gateway's Content-Disposition gives it. */
export async function download(path) {
  let response;
  try {
    response = await fetch(path, { headers: authorization(path), cache: 'no-store', credentials: 'omit' });
  } catch (err) {
    throw new ApiError(0, `the gateway did not answer (${err.message})`);
  }
  if (!response.ok) {
    const text = await response.text();
    let data = text;
    try { data = JSON.parse(text); } catch { /* not JSON: the text itself */ }
    throw new ApiError(response.status, messageOf(data, response.status));
  }
  const named = /filename="([^"]*)"/.exec(response.headers.get('content-disposition') || '');
  return { blob: await response.blob(), filename: named ? named[1] : '' };
}
export const enc = encodeURIComponent;

export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    for (const one of Array.isArray(v) ? v : [v]) if (one !== undefined && one !== null && one !== '') q.append(k, one);
  }
  const s = q.toString();
  return s ? `?${s}` : '';
}
