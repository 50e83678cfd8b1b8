// The dashboard: one influencer or campaign of the token's tenant, read
// through the public query API like any client. The view lives in the URL
// fragment (mode, id, period, granularity, chart, rank, posts), never the
// token, which stays in sessionStorage.

import { ApiError, LiveStream, claims, count, el, fragment, get, percent, setToken, setting, token, when, writeFragment } from './api.js';
import { barChart, lineChart } from './chart.js';

const GRACE = Number(setting('tally-grace-seconds')) || 0;
const SECONDS = { minute: 60, hour: 3600, day: 86400 };
const STEP = { minute: '1m', hour: '1h', day: '1d' };
const PERIODS = { '1h': 'the last hour', '24h': 'the last 24 hours', '7d': 'the last 7 days', '30d': 'the last 30 days' };
const PAGE_SIZE = 5;
const REFRESH_MS = 15000;
// Each live post holds a connection while open, and over HTTP/1.1 a
// browser has six per host: three leave room for the API calls.
const MAX_LIVE_POSTS = 3;
const REFRESH_THROTTLE_MS = 250;

const $ = (id) => document.getElementById(id);
const enc = encodeURIComponent;

const view = {
  mode: 'influencer',
  id: '',
  period: '24h',
  granularity: 'hour',
  chart: 'engagements',
  rank: 'engagements',
  posts: [],
};
// `generation` changes with the page or the ranking's key: an answer to an
// older one is dropped.
const ranking = { cursors: [undefined], page: 0, key: '', generation: 0 };
const live = new Map();
let loads = 0;
// Bumped by every change the user asks for; a load records the one it
// started from in `data-shown` (the tests wait for the one they caused).
let requested = 0;
let loading = false;
let pending = false;
let refreshTimer = null;
let entitiesFor = '';

// --- the view and the fragment ----------------------------------------------

function readView() {
  const params = fragment();
  const pick = (name, allowed, fallback) => {
    const value = params.get(name);
    return value && (!allowed || allowed.includes(value)) ? value : fallback;
  };
  view.mode = pick('mode', ['influencer', 'campaign'], 'influencer');
  view.id = pick('id', null, '');
  view.period = pick('period', Object.keys(PERIODS), '24h');
  view.granularity = pick('granularity', Object.keys(SECONDS), 'hour');
  view.chart = pick('chart', options('chart-metric'), 'engagements');
  view.rank = pick('rank', options('ranking-metric'), 'engagements');
  view.posts = (params.get('posts') || '')
    .split(',')
    .map((p) => p.trim())
    .filter(Boolean)
    .slice(0, MAX_LIVE_POSTS);
  fitGranularity();
}

/** The values a <select> offers. */
function options(id) {
  return [...$(id).options].map((o) => o.value);
}

function saveView() {
  const params = new URLSearchParams();
  params.set('mode', view.mode);
  if (view.id) params.set('id', view.id);
  params.set('period', view.period);
  params.set('granularity', view.granularity);
  params.set('chart', view.chart);
  params.set('rank', view.rank);
  if (view.posts.length) params.set('posts', view.posts.join(','));
  writeFragment(params);
}

/** Minute buckets over days would exceed the API's 10,000 points. */
function fitGranularity() {
  const long = view.period === '7d' || view.period === '30d';
  $('granularity').querySelector('option[value="minute"]').disabled = long;
  if (long && view.granularity === 'minute') view.granularity = 'hour';
}

function showView() {
  $('mode').value = view.mode;
  $('entity').value = view.id;
  $('entity-label').textContent = view.mode === 'campaign' ? 'Campaign' : 'Influencer';
  $('period').value = view.period;
  $('granularity').value = view.granularity;
  $('chart-metric').value = view.chart;
  $('ranking-metric').value = view.rank;
  $('live-posts').value = view.posts.join(', ');
  $('followers-card').hidden = view.mode !== 'influencer';
  $('breakdown-card').hidden = view.mode !== 'campaign';
}

// --- the token ----------------------------------------------------------------

function showWho() {
  const jwt = token();
  const c = jwt ? claims(jwt) : null;
  if (!jwt) {
    $('who').textContent = 'no token';
    return;
  }
  if (!c) {
    $('who').textContent = 'token: not a JWT';
    return;
  }
  const left = c.exp ? Math.round((c.exp * 1000 - Date.now()) / 60000) : null;
  const expiry = left === null ? '' : left <= 0 ? ' · expired' : ` · expires in ${left >= 120 ? `${Math.round(left / 60)} h` : `${left} min`}`;
  $('who').textContent = `tenant ${c.tenant ?? '?'} · ${c.scope ?? 'no scope'}${expiry}`;
  $('who').dataset.tenant = c.tenant ?? '';
}

function showTokenPanel(open) {
  $('token-panel').hidden = !open;
  if (open) $('token-input').focus();
}

// --- loading ------------------------------------------------------------------

/** Marks a change the user asked for; the next load shows it. */
function request() {
  requested += 1;
  document.body.dataset.requested = String(requested);
}

/** Reloads every panel; a call while one runs queues one more. */
async function load() {
  if (loading) {
    pending = true;
    return;
  }
  const generation = requested;
  showWho();
  if (!token()) {
    document.body.dataset.state = 'needs-token';
    showTokenPanel(true);
    return;
  }
  loading = true;
  document.body.dataset.state = 'loading';
  const errors = [];
  const freshness = [];
  const seen = (answer) => {
    if (answer && answer.freshness) freshness.push(answer.freshness);
    return answer;
  };
  const attempt = async (work) => {
    try {
      await work(seen);
    } catch (e) {
      errors.push(e);
    }
  };
  try {
    await attempt(loadEntities);
    if (!view.id && view.mode === 'influencer') await attempt(pickTopInfluencer);
    const panels = [attempt(loadRanking), attempt(loadAnomalies), attempt(loadLate)];
    if (view.id) {
      panels.push(attempt(view.mode === 'campaign' ? loadCampaign : loadInfluencer));
      if (view.mode === 'influencer') panels.push(attempt(loadFollowers));
    } else {
      emptyEntity();
    }
    await Promise.all(panels);
  } finally {
    showErrors(errors);
    showFreshness(freshness);
    loads += 1;
    document.body.dataset.loads = String(loads);
    document.body.dataset.shown = String(generation);
    document.body.dataset.state = errors.length ? 'error' : 'ready';
    loading = false;
  }
  if (errors.some((e) => e.status === 401)) showTokenPanel(true);
  if (pending) {
    pending = false;
    load();
  }
}

/** A load soon after a live change: at most one per 250 ms however many arrive. */
function refreshSoon() {
  if (refreshTimer !== null) return;
  refreshTimer = setTimeout(() => {
    refreshTimer = null;
    load();
  }, REFRESH_THROTTLE_MS);
}

function showErrors(errors) {
  const box = $('errors');
  const unique = new Map();
  for (const e of errors) {
    const text = e instanceof ApiError ? e.message : `${e.name}: ${e.message}`;
    if (!unique.has(text)) unique.set(text, e);
  }
  box.replaceChildren(
    ...[...unique.entries()].map(([text, e]) =>
      el(
        'div',
        { class: 'problem', 'data-status': e.status ?? '' },
        el('strong', {}, text),
        e.what ? el('span', { class: 'what' }, ` — ${e.what}`) : null,
      ),
    ),
  );
  box.hidden = unique.size === 0;
}

function showFreshness(all) {
  const box = $('freshness');
  if (all.length === 0) {
    box.textContent = 'position —';
    delete box.dataset.position;
    return;
  }
  const latest = all.reduce((a, b) => (b.position > a.position ? b : a));
  const stale = all.some((f) => f.stale);
  box.dataset.position = String(latest.position);
  box.dataset.lagEvents = String(latest.lag_events);
  box.dataset.lagSeconds = String(latest.lag_seconds);
  box.classList.toggle('stale', stale);
  const watermark = Date.parse(latest.watermark);
  box.textContent =
    `position ${count(latest.position)} · lag ${count(latest.lag_events)} events, ${count(latest.lag_seconds)} s` +
    (Number.isNaN(watermark) ? '' : ` · watermark ${new Date(watermark).toLocaleTimeString('en-GB')}`) +
    (stale ? ' · STALE' : '');
  box.title = `Every event up to stream position ${latest.position} is reflected (recorded ${latest.recorded_at}); ` +
    `${latest.lag_events} events behind the stream's last (${latest.stream_last}).` +
    (stale ? ' Some answers are stale: ClickHouse is unavailable or behind the requested position.' : '');
}

// --- panels -------------------------------------------------------------------

/** The influencers the tenant ranks (for the picker). */
async function loadEntities(seen) {
  const list = $('entities');
  if (view.mode === 'campaign') {
    const known = JSON.parse(localStorage.getItem('tally.campaigns') || '[]');
    list.replaceChildren(...known.map((id) => el('option', { value: id })));
    entitiesFor = '';
    return;
  }
  if (entitiesFor === token()) return;
  const answer = seen(await get('/v1/influencers/rankings', { metric: 'engagements', period: '30d', limit: 100 }));
  list.replaceChildren(...answer.items.map((item) => el('option', { value: item.influencer_id })));
  entitiesFor = token();
}

async function pickTopInfluencer(seen) {
  const answer = seen(await get('/v1/influencers/rankings', { metric: 'engagements', period: '30d', limit: 1 }));
  if (answer.items.length) {
    view.id = answer.items[0].influencer_id;
    showView();
    saveView();
  }
}

function emptyEntity() {
  $('totals-title').textContent = 'Totals';
  $('totals').replaceChildren(
    el('p', { class: 'note' }, view.mode === 'campaign'
      ? 'Enter a campaign id above.'
      : 'No influencer has engagements in the last 30 days yet: enter an id above.'),
  );
  $('totals-note').textContent = '';
  $('chart').replaceChildren();
  $('followers').replaceChildren();
  $('breakdown').replaceChildren();
}

const COUNTERS = ['likes', 'shares', 'comments', 'views', 'clicks', 'conversions', 'events'];

function stat(name, label, value, shown) {
  return el(
    'div',
    { class: 'stat', 'data-total': name, 'data-value': value ?? '' },
    el('span', { class: 'label' }, label),
    el('span', { class: 'value' }, shown ?? (value === null || value === undefined ? '—' : count(value))),
  );
}

function metricOf(bucket, metric) {
  if (metric === 'engagements') return bucket.likes + bucket.shares + bucket.comments;
  return bucket[metric] ?? 0;
}

async function loadInfluencer(seen) {
  const { id, granularity, period } = view;
  const answer = seen(await get(`/v1/influencers/${enc(id)}/engagement`, { granularity, period }));
  const totals = Object.fromEntries(COUNTERS.map((c) => [c, 0]));
  let late = 0;
  let incomplete = 0;
  for (const bucket of answer.buckets) {
    for (const c of COUNTERS) totals[c] += bucket[c];
    late += bucket.late;
    if (!bucket.complete) incomplete += 1;
  }
  const engaged = Math.max(0, totals.likes) + totals.shares + totals.comments;
  const rate = totals.views ? engaged / totals.views : 0;
  $('totals-title').textContent = `Influencer ${id} — ${PERIODS[period]}`;
  $('totals').replaceChildren(
    ...COUNTERS.map((c) => stat(c, c, totals[c])),
    stat('engagement_rate', 'engagement rate', rate, percent(rate)),
    stat('late', 'late events', late),
  );
  $('totals-note').textContent =
    `Sums of the ${answer.buckets.length} buckets (one ${granularity} each) that have events, by event time; ` +
    'likes are net of unlikes; engagement rate = (likes + shares + comments) / views.';
  const bars = answer.buckets.map((b) => ({
    start: b.start,
    seconds: SECONDS[granularity],
    value: metricOf(b, view.chart),
    complete: b.complete,
  }));
  $('chart-title').textContent = `${view.chart} per ${granularity}`;
  barChart($('chart'), { bars, from: answer.from, to: answer.to, label: `${view.chart} of ${id} per ${granularity}` });
  showChartSummary(bars.length, incomplete);
}

function showChartSummary(buckets, incomplete) {
  const summary = $('chart-summary');
  summary.dataset.buckets = String(buckets);
  summary.dataset.incomplete = String(incomplete);
  summary.textContent = ` · ${buckets} buckets, ${incomplete} incomplete`;
}

async function loadCampaign(seen) {
  const { id, granularity, period } = view;
  const [aggregates, trend] = await Promise.all([
    get(`/v1/campaigns/${enc(id)}/aggregates`, { period }),
    get('/v1/trends', { entity: `campaign:${id}`, metric: view.chart, step: STEP[granularity], window: STEP[granularity], period }),
  ]);
  seen(aggregates);
  seen(trend);
  const known = new Set(JSON.parse(localStorage.getItem('tally.campaigns') || '[]'));
  known.add(id);
  localStorage.setItem('tally.campaigns', JSON.stringify([...known].slice(-20)));

  const money = (v) => (v === null || v === undefined ? '—' : `${v.toLocaleString('en-US', { maximumFractionDigits: 2 })} ${aggregates.currency}`);
  $('totals-title').textContent = `Campaign ${aggregates.name ? `“${aggregates.name}” ` : ''}(${id}) — ${PERIODS[period]}`;
  $('totals').replaceChildren(
    ...COUNTERS.map((c) => stat(c, c, aggregates[c])),
    stat('ctr', 'CTR', aggregates.ctr, percent(aggregates.ctr)),
    stat('conversion_rate', 'conversion rate', aggregates.conversion_rate, percent(aggregates.conversion_rate)),
    stat('engagement_rate', 'engagement rate', aggregates.engagement_rate, percent(aggregates.engagement_rate)),
    stat('conversion_value', 'conversion value', aggregates.conversion_value, money(aggregates.conversion_value)),
    stat('budget', 'budget', aggregates.budget, money(aggregates.budget)),
    stat('roi', 'ROI', aggregates.roi, aggregates.roi === null ? '—' : percent(aggregates.roi)),
  );
  $('totals-note').textContent = 'CTR = clicks / views; conversion rate = conversions / clicks; ROI = conversion value / budget.';

  // Trend points carry no completeness: a bucket is complete once its end
  // plus the grace period is behind the watermark, as the API decides.
  const watermark = Math.floor(Date.parse(trend.freshness.watermark) / 1000) || 0;
  const seconds = SECONDS[granularity];
  let incomplete = 0;
  const bars = trend.points.map((p) => {
    const complete = p.start + seconds + GRACE <= watermark;
    if (!complete) incomplete += 1;
    return { start: p.start, seconds, value: p.value, complete };
  });
  $('chart-title').textContent = `${view.chart} per ${granularity}`;
  barChart($('chart'), { bars, from: trend.from, to: trend.to, label: `${view.chart} of campaign ${id} per ${granularity}` });
  showChartSummary(bars.length, incomplete);

  const table = (title, lines) =>
    el(
      'table',
      { class: 'table', 'data-breakdown': title },
      el('thead', {}, el('tr', {}, el('th', {}, title), ...['likes', 'views', 'clicks', 'conv.', 'CTR'].map((h) => el('th', { class: 'num' }, h)))),
      el(
        'tbody',
        {},
        lines.map((line) =>
          el(
            'tr',
            { 'data-key': line.key },
            el('td', {}, line.key || '(unattributed)'),
            el('td', { class: 'num' }, count(line.likes)),
            el('td', { class: 'num' }, count(line.views)),
            el('td', { class: 'num' }, count(line.clicks)),
            el('td', { class: 'num' }, count(line.conversions)),
            el('td', { class: 'num' }, percent(line.ctr)),
          ),
        ),
      ),
    );
  $('breakdown').replaceChildren(table('influencer', aggregates.by_influencer), table('platform', aggregates.by_platform));
}

/** A daily series needs days: at least the last 7. */
function followersPeriod(period) {
  return period === '1h' || period === '24h' ? '7d' : period;
}

async function loadFollowers(seen) {
  const period = followersPeriod(view.period);
  const answer = seen(await get(`/v1/influencers/${enc(view.id)}/followers`, { period }));
  const growth = answer.growth_rate;
  const chart = el('div', { class: 'spark' });
  $('followers').replaceChildren(
    el(
      'div',
      { class: 'totals' },
      stat('followers', 'followers', answer.count),
      stat('growth_rate', 'growth', growth, growth === null ? '—' : `${growth >= 0 ? '+' : ''}${(growth * 100).toFixed(2)} %`),
    ),
    chart,
    el('p', { class: 'note' }, `Followers at the end of each day and growth over ${PERIODS[period]}.`),
  );
  lineChart(chart, answer.series.map((d) => ({ t: d.start, value: d.followers })), `followers of ${view.id}`);
}

async function loadRanking(seen) {
  // Cursors are signed for the token that asked: another token starts over.
  const key = [token(), view.rank, view.period, view.mode, view.mode === 'campaign' ? view.id : ''].join('|');
  if (key !== ranking.key) {
    ranking.key = key;
    ranking.cursors = [undefined];
    ranking.page = 0;
    ranking.generation += 1;
  }
  // Everything this answer is about, taken before the wait: a click on
  // Next or a view change during it must not relabel it.
  const { page, generation } = ranking;
  const { rank, period, mode, id } = view;
  const params = { metric: rank, period, limit: PAGE_SIZE, cursor: ranking.cursors[page] };
  if (mode === 'campaign' && id) params.campaign_id = id;
  const answer = seen(await get('/v1/influencers/rankings', params));
  if (ranking.key === key) ranking.cursors[page + 1] = answer.next_cursor;
  // Stale: the load queued behind this one shows the page now asked for.
  if (ranking.generation !== generation) return;
  const ratio = rank === 'engagement_rate';
  $('ranking').tBodies[0].replaceChildren(
    ...answer.items.map((item) =>
      el(
        'tr',
        {
          'data-influencer': item.influencer_id,
          'data-value': item.value,
          class: mode === 'influencer' && item.influencer_id === id ? 'current' : '',
        },
        el('td', {}, String(item.rank)),
        el('td', {}, el('a', { href: '#', 'data-pick': item.influencer_id }, item.influencer_id)),
        el('td', { class: 'num' }, ratio ? percent(item.value) : count(item.value)),
      ),
    ),
  );
  if (answer.items.length === 0) {
    $('ranking').tBodies[0].replaceChildren(el('tr', {}, el('td', { colspan: 3, class: 'note' }, 'No influencer in this period.')));
  }
  $('ranking-page').textContent = `page ${page + 1}`;
  $('ranking-page').dataset.page = String(page + 1);
  $('ranking-prev').disabled = page === 0;
  $('ranking-next').disabled = !answer.next_cursor;
  $('ranking-scope').textContent = `${PERIODS[period]}${params.campaign_id ? `, campaign ${params.campaign_id}` : ''}`;
}

async function loadAnomalies(seen) {
  const params = { granularity: view.granularity, period: view.period };
  if (view.mode === 'influencer' && view.id) params.influencer_id = view.id;
  // The API filters anomalies by influencer, not by campaign.
  $('anomalies-scope').textContent = params.influencer_id
    ? `influencer ${params.influencer_id}, ${PERIODS[params.period]}`
    : `all influencers of the tenant (not only this campaign's), ${PERIODS[params.period]}`;
  const answer = seen(await get('/v1/anomalies', params));
  const items = [
    ...answer.spikes.map((s) =>
      el('li', { 'data-spike': s.start }, el('strong', {}, 'spike '), `${when(s.start)}: ${count(s.value)} engagements against ${s.baseline_mean.toFixed(1)} ± ${s.baseline_stddev.toFixed(1)}`),
    ),
    ...answer.bursts.map((b) =>
      el('li', { 'data-burst': b.user_id }, el('strong', {}, 'burst '), `${b.user_id} on ${b.post_id}: ${count(b.events)} events in the minute from ${when(b.minute)}`),
    ),
  ];
  $('anomalies').replaceChildren(
    el('div', { class: 'totals' }, stat('spikes', 'spikes', answer.spikes.length), stat('bursts', 'bursts', answer.bursts.length)),
    items.length ? el('ul', { class: 'list' }, items.slice(0, 8)) : el('p', { class: 'note' }, `None in ${PERIODS[view.period]}.`),
  );
}

async function loadLate(seen) {
  const answer = seen(await get('/v1/late-events', { limit: 5 }));
  $('late').replaceChildren(
    el('div', { class: 'totals' }, stat('late_total', 'late events (all time)', answer.total)),
    answer.items.length
      ? el(
          'table',
          { class: 'table' },
          el('thead', {}, el('tr', {}, el('th', {}, 'event'), el('th', {}, 'type'), el('th', {}, 'post'), el('th', { class: 'num' }, 'late by'))),
          el(
            'tbody',
            {},
            answer.items.map((e) =>
              el('tr', {}, el('td', { class: 'mono' }, e.event_id), el('td', {}, e.type), el('td', {}, e.post_id), el('td', { class: 'num' }, `${count(e.lateness_s)} s`)),
            ),
          ),
        )
      : el('p', { class: 'note' }, 'No late events.'),
  );
}

// --- live posts (Server-Sent Events) -------------------------------------------

/** Whether a failure needs the user (a new token, another id), not a retry. */
const needsUser = (e) => [400, 401, 403].includes(e.status);

function follow(posts) {
  for (const [id, entry] of live) {
    if (!posts.includes(id)) {
      entry.stream.close();
      live.delete(id);
    }
  }
  const list = $('live-list');
  for (const id of posts) {
    if (live.has(id)) continue;
    const card = el('div', { class: 'live-post', 'data-live-post': id }, el('strong', {}, id), el('span', { class: 'counters note' }, 'connecting…'));
    const entry = { card, events: 0 };
    entry.stream = new LiveStream(`/v1/posts/${enc(id)}/live`, {
      onEvent(name, data) {
        if (name !== 'counters') return;
        const c = JSON.parse(data);
        entry.events += 1;
        card.classList.remove('failed');
        card.dataset.likes = String(c.likes);
        card.querySelector('.counters').replaceChildren(
          ...['likes', 'comments', 'shares', 'views', 'clicks'].map((counter) =>
            el('span', { class: 'counter', 'data-counter': counter }, el('b', {}, count(c[counter])), ` ${counter}`),
          ),
        );
        // The first event of a connection is the state then; later ones
        // are changes.
        if (entry.events > 1) {
          card.classList.add('flash');
          setTimeout(() => card.classList.remove('flash'), 600);
          refreshSoon();
        }
      },
      onState(state) {
        if (state === 'connecting') entry.events = 0;
        showLiveStatus();
      },
      onError(error) {
        card.classList.add('failed');
        card.querySelector('.counters').textContent = needsUser(error) ? error.message : `${error.message} — retrying`;
        return needsUser(error) ? false : undefined;
      },
    });
    live.set(id, entry);
    list.append(card);
  }
  list.replaceChildren(...posts.map((id) => live.get(id).card));
  showLiveStatus();
}

function showLiveStatus() {
  const open = [...live.values()].filter((e) => e.stream && e.stream.state === 'open').length;
  const status = $('live-status');
  status.textContent = open ? `live: ${open} post${open > 1 ? 's' : ''}` : live.size ? 'live: connecting' : 'live: off';
  status.classList.toggle('off', open === 0);
  status.dataset.open = String(open);
}

function restartLive() {
  for (const entry of live.values()) entry.stream.close();
  live.clear();
  if (token()) follow(view.posts);
  else showLiveStatus();
}

// --- wiring --------------------------------------------------------------------

function start() {
  readView();
  showView();
  saveView();

  $('controls').addEventListener('submit', (event) => {
    event.preventDefault();
    const mode = $('mode').value;
    const id = $('entity').value.trim();
    if (mode !== view.mode && id === view.id) view.id = '';
    else view.id = id;
    view.mode = mode;
    view.period = $('period').value;
    view.granularity = $('granularity').value;
    view.chart = $('chart-metric').value;
    fitGranularity();
    showView();
    saveView();
    request();
    load();
  });
  for (const id of ['mode', 'period', 'granularity', 'chart-metric']) {
    $(id).addEventListener('change', () => {
      if (id === 'mode') $('entity').value = '';
      $('controls').requestSubmit();
    });
  }
  $('ranking-metric').addEventListener('change', () => {
    view.rank = $('ranking-metric').value;
    saveView();
    request();
    load();
  });
  $('ranking-next').addEventListener('click', () => {
    if (!ranking.cursors[ranking.page + 1]) return;
    ranking.page += 1;
    ranking.generation += 1;
    request();
    load();
  });
  $('ranking-prev').addEventListener('click', () => {
    if (ranking.page === 0) return;
    ranking.page -= 1;
    ranking.generation += 1;
    request();
    load();
  });
  $('ranking').addEventListener('click', (event) => {
    const pick = event.target.closest('[data-pick]');
    if (!pick) return;
    event.preventDefault();
    view.mode = 'influencer';
    view.id = pick.dataset.pick;
    showView();
    saveView();
    request();
    load();
  });
  $('live-form').addEventListener('submit', (event) => {
    event.preventDefault();
    view.posts = $('live-posts').value.split(/[\s,]+/).filter(Boolean).slice(0, MAX_LIVE_POSTS);
    $('live-posts').value = view.posts.join(', ');
    saveView();
    follow(view.posts);
  });
  $('show-token').addEventListener('click', () => showTokenPanel($('token-panel').hidden));
  $('token-form').addEventListener('submit', (event) => {
    event.preventDefault();
    setToken($('token-input').value);
    $('token-input').value = '';
    showTokenPanel(false);
    entitiesFor = '';
    restartLive();
    request();
    load();
  });
  $('forget-token').addEventListener('click', () => {
    setToken('');
    restartLive();
    request();
    load();
  });
  window.addEventListener('hashchange', () => {
    readView();
    showView();
    entitiesFor = '';
    restartLive();
    request();
    load();
  });
  setInterval(() => {
    if (document.visibilityState === 'visible' && token()) load();
  }, REFRESH_MS);

  restartLive();
  request();
  load();
}

start();
