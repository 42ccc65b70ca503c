// Clusters and nodes: create/delete clusters, load/unload a model on a pool (with the sharding choice) and watch
// the load job's progress, model sync jobs with per-target progress and cancel.
import { api, enc, get } from '../api.js';
import { attempt, errorBox, field, fmtAge, fmtBytes, formValues, h, progressBar, replace, table, toast } from '../dom.js';

const POLL_MS = 400;
const lastJobs = new Map();  // cluster id -> its last finished load job, still shown after the page redraws

function loadForm(cluster, nodes, onDone) {
  const onDisk = [...new Set(nodes.flatMap((n) => (n.models || []).map((m) => m.path || m.name)))];
  const listId = `models-${cluster.cluster_id}`;
  const status = h('div', { class: 'load-status' });
  if (lastJobs.has(cluster.cluster_id)) drawJob(lastJobs.get(cluster.cluster_id), status);
  const form = h('form', { class: 'inline load-form' },
    field('Model (name or path)', h('input', { name: 'model', required: true, list: listId, size: 34 })),
    h('datalist', { id: listId }, onDisk.map((m) => h('option', { value: m }))),
    field('Alias', h('input', { name: 'alias', placeholder: cluster.default_alias || '' })),
    field('Sharding', h('select', { name: 'sharding' }, ['solo', 'pipeline', 'tensor'].map((m) => h('option', { value: m, text: m })))),
    field('Idle TTL (s, 0 = never)', h('input', { name: 'ttl_seconds', type: 'number', min: 0, size: 6 })),
    h('button', { type: 'submit' }, 'Load'));
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const v = formValues(form);
    // A sharded load is one call that answers when every rank has loaded (its ranks load together or not at
    // all), so it has no job to poll: the bar shows it running, then done.
    const sharded = v.sharding !== 'solo';
    const body = { model: v.model, sharding: v.sharding, wait: sharded };
    if (v.alias) body.alias = v.alias;
    if (v.ttl_seconds !== '') body.ttl_seconds = Number(v.ttl_seconds);
    replace(status);
    if (sharded) drawJob({ model: v.model, alias: v.alias || cluster.default_alias || v.model, state: 'running' }, status);
    const job = await attempt(status, () => api('POST', `/admin/clusters/${enc(cluster.cluster_id)}/load`, body));
    if (job && sharded) {
      const done = { ...job, id: '', state: 'done', percent: 100 };
      drawJob(done, status);
      if (onDone) onDone(done);
    } else if (job) await watchLoad(cluster.cluster_id, job, status, onDone);
  });
  return h('div', {}, form, status);
}

function drawJob(job, where) {
  const pct = job.percent ?? 0;
  const preparing = (job.nodes || []).some((n) => n.phase === 'preparing');
  const detail = job.bytes_total ? `${fmtBytes(job.bytes_done)} of ${fmtBytes(job.bytes_total)}${preparing ? ' (a node is still preparing)' : ''}`
    : job.state === 'running' ? 'preparing (mlx-lm, config, tokenizer)' : `${job.layers_done || 0} of ${job.layers_total || '?'} layers`;
  replace(where, h('div', { class: 'load-job', 'data-state': job.state, 'data-job': job.id },
    h('div', { text: `Load of ${job.model} as ${job.alias}: ${job.state} · ${pct.toFixed(1)} % · ${detail}` }),
    progressBar(pct, job.state === 'done' ? 'done' : job.state === 'failed' ? 'failed' : ''),
    job.error ? errorBox(new Error(job.error)) : null));
}

/** Polls a load job into a progress bar until it is done or failed. */
export async function watchLoad(clusterId, job, where, onDone) {
  let current = job;
  for (;;) {
    drawJob(current, where);
    if (current.state === 'done' || current.state === 'failed') break;
    await new Promise((r) => setTimeout(r, POLL_MS));
    try {
      current = await get(`/admin/clusters/${enc(clusterId)}/loads/${enc(job.id)}`);
    } catch (err) {
      where.append(errorBox(err));
      return;
    }
  }
  lastJobs.set(clusterId, current);
  if (current.state === 'done') toast(`${current.alias} loaded`);
  if (onDone) onDone(current);
}

async function clusterPanel(summary, refresh) {
  const id = summary.cluster_id;
  const status = await get(`/admin/clusters/${enc(id)}`);
  const pools = Object.entries(status.pools || {}).map(([alias, p]) => ({ alias, ...p }));
  const box = h('div', { class: 'panel cluster', 'data-cluster': id });
  const unload = (alias) => attempt(box, async () => {
    await api('POST', `/admin/clusters/${enc(id)}/unload`, { alias });
    toast(`${alias} unloaded`);
    refresh();
  });
  replace(box,
    h('h2', {}, `${id} `, h('span', { class: 'badge', text: `${status.kind} · ${status.state}` })),
    status.description ? h('p', { class: 'muted', text: status.description }) : null,
    table([
      { label: 'Node', value: (n) => n.node_id },
      { label: 'State', value: (n) => h('span', { class: n.up ? 'ok' : 'bad', text: n.up ? 'up' : 'down' }) },
      { label: 'Heartbeat', value: (n) => `${fmtAge(n.last_seen_age_s)} ago` },
      { label: 'Loaded', value: (n) => n.load?.loaded_model || n.load?.loading_model || '—' },
      { label: 'RAM', value: (n) => (n.ram_bytes ? fmtBytes(n.ram_bytes) : '—'), num: true },
      { label: 'Models on disk', value: (n) => (n.models || []).map((m) => m.name).join(', ') || '—' },
    ], status.nodes || [], 'No node in this cluster.'),
    h('h2', { text: 'Pools' }),
    table([
      { label: 'Alias', value: (p) => p.alias }, { label: 'Model', value: (p) => p.model },
      { label: 'Mode', value: (p) => p.mode }, { label: 'Nodes', value: (p) => (p.nodes || []).join(', ') },
      { label: 'Load', value: (p) => (p.load_s ? `${p.load_s} s` : '—'), num: true },
      { label: '', value: (p) => h('button', { class: 'danger small', type: 'button', 'data-unload': p.alias, onclick: () => unload(p.alias) }, 'Unload') },
    ], pools, 'Nothing loaded.'),
    status.kind === 'mlx' ? loadForm(status, status.nodes || [], refresh) : null,
    h('p', {}, h('button', { class: 'danger small', type: 'button', onclick: () => attempt(box, async () => {
      if (!window.confirm(`Delete cluster ${id}?`)) return;
      await api('DELETE', `/admin/clusters/${enc(id)}`);
      refresh();
    }) }, 'Delete cluster')));
  return box;
}

function createClusterForm(refresh) {
  const form = h('form', { class: 'inline' },
    field('Cluster id', h('input', { name: 'id', required: true, pattern: '[A-Za-z0-9][A-Za-z0-9._\\-]{0,63}' })),
    field('Kind', h('select', { name: 'kind' }, h('option', { value: 'mlx', text: 'mlx (node agents)' }), h('option', { value: 'telemak', text: 'telemak (upstream)' }))),
    field('Upstream URL (telemak)', h('input', { name: 'url', type: 'url' })),
    field('Description', h('input', { name: 'description' })),
    h('button', { type: 'submit' }, 'Create'));
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    const v = formValues(form);
    attempt(form.parentElement, async () => {
      const body = { kind: v.kind, description: v.description };
      if (v.url) body.url = v.url;
      await api('PUT', `/admin/clusters/${enc(v.id)}`, body);
      refresh();
    });
  });
  return h('div', { class: 'panel' }, h('h2', { text: 'New cluster' }), form);
}

function syncPanel(jobs, nodes, refresh) {
  const box = h('div', { class: 'panel' });
  const form = h('form', { class: 'inline' },
    field('Model folder', h('input', { name: 'model', required: true })),
    field('Source node', h('select', { name: 'source' }, nodes.map((n) => h('option', { value: n.node_id, text: n.node_id })))),
    field('Target nodes (comma separated)', h('input', { name: 'targets', required: true })),
    h('button', { type: 'submit' }, 'Start sync'));
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    const v = formValues(form);
    attempt(box, async () => {
      await api('POST', '/admin/sync/rsync', { model: v.model, source: v.source, targets: v.targets.split(',').map((s) => s.trim()).filter(Boolean) });
      refresh();
    });
  });
  const perTarget = (j) => h('div', {}, (j.targets || []).map((t) => {
    const p = (j.per_target || {})[t] || {};
    const each = j.bytes_total ? j.bytes_total / j.targets.length : 0;  // the job's total counts every target
    const pct = p.state === 'done' ? 100 : (each ? (100 * (p.bytes_done || 0)) / each : 0);
    return h('div', {}, h('span', { text: `${t}: ${pct.toFixed(0)} % ${p.state || ''}` }), progressBar(pct, p.state));
  }));
  replace(box, h('h2', { text: 'Model sync jobs' }), table([
    { label: 'Job', value: (j) => j.id }, { label: 'Model', value: (j) => j.model }, { label: 'From', value: (j) => j.source },
    { label: 'State', value: (j) => j.state }, { label: 'Targets', value: perTarget },
    { label: '', value: (j) => {
      if (j.state === 'done') return '';
      // the agents keep every verified chunk: the same sync started again sends only what is missing
      if (['failed', 'cancelled', 'partial'].includes(j.state)) {
        return h('button', { class: 'small', type: 'button', onclick: () => attempt(box, async () => {
          await api('POST', '/admin/sync/rsync', { model: j.model, source: j.source, targets: j.targets }); refresh();
        }) }, 'Resume');
      }
      return h('button', { class: 'small danger', type: 'button', onclick: () => attempt(box, async () => { await api('POST', `/admin/sync/jobs/${enc(j.id)}/cancel`, {}); refresh(); }) }, 'Cancel');
    } },
  ], jobs, 'No sync job yet.'), form,
  h('p', { class: 'muted', text: 'Resume starts the same copy again: chunks the targets already verified are not sent twice.' }));
  return box;
}

export async function render(main) {
  const body = h('div');
  replace(main, h('h1', { text: 'Clusters & nodes' }), body);
  async function refresh() {
    const [clusters, nodes, sync] = await Promise.all([get('/admin/clusters'), get('/admin/nodes'),
      get('/admin/sync/jobs').catch((err) => ({ error: err }))]);
    const panels = await Promise.all(clusters.clusters.map((c) => clusterPanel(c, refresh).catch((err) => errorBox(err))));
    replace(body, panels, createClusterForm(refresh),
      sync.error ? errorBox(sync.error) : syncPanel(sync.jobs || [], nodes.nodes || [], refresh));
  }
  await refresh();
}
