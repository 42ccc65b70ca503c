// Batches and files: OpenAI's Batch and Files APIs (/v1/batches, /v1/files) called with the master key, which sees
// every caller's. Both lists page with after/limit (has_more); the page refreshes while a batch on it runs; a
// running batch can be cancelled; a file's content downloads through fetch (the token in a header, never in a link).
import { ApiError, api, auth, download, enc, get, query } from '../api.js';
import { attempt, errorBox, fmtBytes, fmtInt, fmtTime, h, progressBar, replace, table, toast } from '../dom.js';

const PAGE_SIZE = 20;
const POLL_MS = 1000;
const RUNNING = new Set(['validating', 'in_progress', 'finalizing', 'cancelling']);
const CANCELLABLE = new Set(['validating', 'in_progress']);  // what POST /v1/batches/{id}/cancel moves on
const FAILED = new Set(['failed', 'expired', 'cancelled']);
// The `after` cursors of the pages before the one shown, per list: kept while the operator moves between pages.
const cursors = { batches: [], files: [] };

const when = (seconds) => (seconds ? fmtTime(seconds * 1000) : '—');
const finishedAt = (b) => b.completed_at || b.failed_at || b.expired_at || b.cancelled_at;

function needsMasterKey(why = 'this sign-in has only the admin token') {
  return h('p', { class: 'muted needs-master', text: 'Batches and files are read with the master key (ISTHMUS_MASTER_KEY), '
    + `which sees every caller's; ${why}. Sign out and in again with the master key to see them.` });
}

/** Saves a file's content as a download: fetch with the token -> Blob -> object URL on a transient <a download>. */
async function save(fileId, where) {
  await attempt(where, async () => {
    const { blob, filename } = await download(`/v1/files/${enc(fileId)}/content`);
    const url = URL.createObjectURL(blob);
    const link = h('a', { href: url, download: filename || `${fileId}.jsonl`, hidden: true });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60_000);  // revoked later: the browser reads it after the click
  });
}

const fileButton = (label, fileId, where) => (fileId
  ? h('button', { class: 'small', type: 'button', 'data-download': fileId, title: fileId, onclick: () => save(fileId, where) }, label)
  : null);

function progressOf(b) {
  const c = b.request_counts || { total: 0, completed: 0, failed: 0 };
  const finished = (c.completed || 0) + (c.failed || 0);
  const percent = c.total ? (100 * finished) / c.total : (b.status === 'completed' ? 100 : 0);
  const state = b.status === 'completed' ? 'done' : FAILED.has(b.status) ? 'failed' : '';
  return h('div', { class: 'batch-progress' }, progressBar(percent, state),
    h('span', { class: 'muted', text: `${fmtInt(finished)} / ${fmtInt(c.total)}${c.failed ? ` (${fmtInt(c.failed)} failed)` : ''}` }));
}

function statusOf(b) {
  const cls = b.status === 'completed' ? 'ok' : FAILED.has(b.status) ? 'bad' : 'warn';
  const firstError = b.errors?.data?.[0];
  return h('div', {}, h('span', { class: `batch-status ${cls}`, 'data-status': b.status, text: b.status }),
    firstError ? h('div', { class: 'muted', text: `${firstError.line ? `line ${firstError.line}: ` : ''}${firstError.message}` }) : null);
}

function metadataOf(b) {
  const entries = Object.entries(b.metadata || {});
  return entries.length ? h('div', { class: 'batch-meta' }, entries.map(([k, v]) => h('div', {}, h('code', { text: `${k}: ${v}` })))) : '—';
}

function pager(kind, list, refresh) {
  const before = cursors[kind];
  const move = (next) => { cursors[kind] = next; refresh(); };
  return h('div', { class: 'pager', 'data-pager': kind },
    h('button', { class: 'small', type: 'button', disabled: !before.length, onclick: () => move(before.slice(0, -1)) }, '‹ Newer'),
    h('span', { class: 'muted', text: `page ${before.length + 1}` }),
    h('button', { class: 'small', type: 'button', disabled: !(list.has_more && list.last_id),
      onclick: () => move([...before, list.last_id]) }, 'Older ›'));
}

function batchesPanel(box, list, refresh) {
  const cancel = (b) => attempt(box, async () => {
    if (!window.confirm(`Cancel batch ${b.id}? Lines in flight finish; the rest do not run.`)) return;
    await api('POST', `/v1/batches/${enc(b.id)}/cancel`);
    toast(`${b.id} cancelling`);
    refresh();
  });
  return h('div', { class: 'panel' }, table([
    { label: 'Batch', value: (b) => h('div', {}, h('code', { class: 'id', 'data-batch': b.id, text: b.id }),
      h('div', { class: 'muted', text: b.endpoint || (b.model ? `model ${b.model}` : '') })) },
    { label: 'Status', value: statusOf },
    { label: 'Progress', value: progressOf },
    { label: 'Created / finished', value: (b) => h('div', { class: 'times' }, h('div', { text: when(b.created_at) }),
      h('div', { class: 'muted', text: when(finishedAt(b)) })) },
    { label: 'Metadata', value: metadataOf },
    { label: 'Files', value: (b) => h('div', { class: 'actions' }, fileButton('Output', b.output_file_id, box),
      fileButton('Errors', b.error_file_id, box), CANCELLABLE.has(b.status)
        ? h('button', { class: 'danger small', type: 'button', 'data-cancel': b.id, onclick: () => cancel(b) }, 'Cancel') : null) },
  ], list.data || [], 'No batches yet.'), pager('batches', list, refresh));
}

function filesPanel(box, list, refresh) {
  return h('div', { class: 'panel' }, table([
    { label: 'File', value: (f) => h('code', { class: 'id', 'data-file': f.id, text: f.id }) },
    { label: 'Name', value: (f) => h('span', { class: 'file-name', text: f.filename }) },
    { label: 'Purpose', value: (f) => f.purpose },
    { label: 'Size', value: (f) => fmtBytes(f.bytes), num: true },
    { label: 'Created', value: (f) => when(f.created_at) },
    { label: 'Expires', value: (f) => (f.expires_at ? when(f.expires_at) : 'never') },
    { label: '', value: (f) => fileButton('Download', f.id, box) },
  ], list.data || [], 'No files yet.'), pager('files', list, refresh));
}

async function settle(path) {
  try { return { list: await get(path) }; } catch (error) { return { error }; }
}

const refused = (error) => error instanceof ApiError && (error.status === 401 || error.status === 403);

export async function render(main) {
  if (!auth.master && !auth.open) {
    replace(main, h('h1', { text: 'Batches & files' }), needsMasterKey());
    return null;
  }
  const batchBox = h('section', { id: 'batches' });
  const fileBox = h('section', { id: 'files' });
  const refreshButton = h('button', { class: 'small', type: 'button', id: 'batches-refresh', onclick: () => refresh() }, 'Refresh');
  replace(main, h('h1', {}, 'Batches & files ', refreshButton), batchBox, fileBox);
  let timer = null;
  let stopped = false;
  let latest = 0;  // a refresh from a button overtakes one in flight: only the latest draws and polls on
  async function refresh() {
    clearTimeout(timer);
    const mine = ++latest;
    const at = (kind) => cursors[kind][cursors[kind].length - 1];
    const [batches, files] = await Promise.all([
      settle(`/v1/batches${query({ limit: PAGE_SIZE, after: at('batches') })}`),
      settle(`/v1/files${query({ limit: PAGE_SIZE, after: at('files') })}`),
    ]);
    if (stopped || mine !== latest) return;
    // a cursor whose item was deleted since is refused (400): back to the first page of that list
    const stale = [['batches', batches], ['files', files]].filter(([kind, r]) => r.error?.status === 400 && cursors[kind].length);
    if (stale.length) {
      for (const [kind] of stale) cursors[kind] = [];
      refresh();
      return;
    }
    if ([batches, files].some((r) => refused(r.error))) {
      replace(main, h('h1', { text: 'Batches & files' }), needsMasterKey('the gateway refused this sign-in for them'),
        errorBox(batches.error || files.error));
      return;
    }
    replace(batchBox, h('h2', { text: 'Batches' }), batches.error ? errorBox(batches.error) : batchesPanel(batchBox, batches.list, refresh));
    replace(fileBox, h('h2', { text: 'Files' }), files.error ? errorBox(files.error) : filesPanel(fileBox, files.list, refresh));
    // while a batch on this page runs, follow it (its counts, then its output file in the list below)
    if ((batches.list?.data || []).some((b) => RUNNING.has(b.status))) timer = setTimeout(refresh, POLL_MS);
  }
  await refresh();
  return () => { stopped = true; clearTimeout(timer); };
}
