// The like-button demo: a post with a heart. A click likes or unlikes the
// post for this window's user through the command API's like endpoints
// (another origin: the command API allows this one by CORS); the counter
// follows the query API's live stream, so every open window sees every
// click. Parameters in the fragment: token, post, user.

import { ApiError, LiveStream, call, count, el, fragment, setToken, setting, token, writeFragment } from './api.js';

const COMMAND_API = setting('tally-command-api');
const $ = (id) => document.getElementById(id);
const enc = encodeURIComponent;

const state = { post: 'post-1', user: '', liked: null, likes: null, clickedAt: 0, busy: false };
let stream = null;
let liveError = false;

function randomUser() {
  const bytes = crypto.getRandomValues(new Uint8Array(4));
  return `visitor-${[...bytes].map((b) => b.toString(16).padStart(2, '0')).join('')}`;
}

function readParams() {
  const params = fragment();
  state.post = params.get('post') || state.post;
  state.user = params.get('user') || sessionStorage.getItem('tally.user') || randomUser();
  sessionStorage.setItem('tally.user', state.user);
  const keep = new URLSearchParams({ post: state.post, user: state.user });
  writeFragment(keep);
  $('post-input').value = state.post;
  $('user-input').value = state.user;
  $('post-title').textContent = state.post;
  $('command-api').textContent = COMMAND_API;
  // No token in the link: a click opens it with this tab's sessionStorage
  // (and so the token) copied; copied or opened otherwise, it asks for one.
  $('second').href = `/like#${new URLSearchParams({ post: state.post, user: randomUser() })}`;
}

/** Opens the second window as this tab's child, which starts with a copy of its sessionStorage. */
function openSecond(event) {
  if (event.button !== 0 || event.ctrlKey || event.metaKey || event.shiftKey || event.altKey) return;
  event.preventDefault();
  const other = window.open($('second').href, '_blank');
  if (other) other.opener = null;
}

function showError(error) {
  const box = $('errors');
  if (!error) {
    box.hidden = true;
    box.replaceChildren();
    return;
  }
  let text = error.message;
  // A browser refusing a cross-origin answer says no more than this.
  if (error instanceof ApiError && error.status === 0 && text.includes(new URL(COMMAND_API, location.href).origin)) {
    text += ` — is ${location.origin} in the command API's command.cors_allowed_origins?`;
  }
  box.replaceChildren(
    el('div', { class: 'problem', 'data-status': error.status ?? '' }, el('strong', {}, text), error.what ? el('span', { class: 'what' }, ` — ${error.what}`) : null),
  );
  box.hidden = false;
}

function showButton() {
  const button = $('like');
  button.disabled = state.busy || state.liked === null || !token();
  button.setAttribute('aria-pressed', String(state.liked === true));
  button.classList.toggle('liked', state.liked === true);
  $('like-label').textContent = state.liked ? 'Liked' : 'Like';
  document.body.dataset.liked = String(state.liked);
}

function showCounters(c) {
  const changed = state.likes !== null && state.likes !== c.likes;
  state.likes = c.likes;
  const counter = $('count');
  counter.textContent = count(c.likes);
  counter.dataset.likes = String(c.likes);
  counter.dataset.updatedAt = String(Date.now());
  $('other-counters').textContent = `${count(c.comments)} comments · ${count(c.shares)} shares · ${count(c.views)} views`;
  if (c.influencer_id) {
    $('author').textContent = `@${c.influencer_id}`;
    $('avatar').textContent = c.influencer_id.slice(0, 1).toUpperCase();
    $('where').textContent = [c.platform, c.content_type].filter(Boolean).join(' · ');
  }
  if (changed) {
    counter.classList.add('bump');
    setTimeout(() => counter.classList.remove('bump'), 400);
    if (state.clickedAt) {
      $('status').textContent = `The counter moved ${Date.now() - state.clickedAt} ms after the click.`;
      state.clickedAt = 0;
    }
  }
  ready();
}

function ready() {
  if (state.liked !== null && state.likes !== null) document.body.dataset.state = 'ready';
}

function showLive(open) {
  const status = $('live-status');
  status.textContent = open ? 'live: on' : 'live: off';
  status.classList.toggle('off', !open);
}

/** Follows the post's counters; a post nobody has touched yet is retried. */
function followPost() {
  if (stream) stream.close();
  stream = null;
  showLive(false);
  if (!token()) return;
  stream = new LiveStream(`/v1/posts/${enc(state.post)}/live`, {
    onEvent(name, data) {
      if (name !== 'counters') return;
      if (liveError) {
        liveError = false;
        showError(null);
      }
      showCounters(JSON.parse(data));
    },
    onState(live) {
      showLive(live === 'open');
    },
    onError(e) {
      if (e.status === 404) {
        // Nobody has liked it yet: it exists after the first click.
        showCounters({ likes: 0, comments: 0, shares: 0, views: 0 });
        $('status').textContent = `${state.post} has no events yet: the first like creates it.`;
        return 1000;
      }
      showError(e);
      liveError = true;
      // A refused token or id needs the user; anything else may pass.
      return [400, 401, 403].includes(e.status) ? false : undefined;
    },
  });
}

async function readLike() {
  if (!token()) {
    showError(new ApiError(401, 'No token', 'paste a token with events:write and reports:read', ''));
    document.body.dataset.state = 'needs-token';
    return;
  }
  try {
    const answer = await call('GET', COMMAND_API, `/v1/posts/${enc(state.post)}/likes/${enc(state.user)}`);
    state.liked = answer.liked;
    showError(null);
  } catch (e) {
    showError(e);
    document.body.dataset.state = 'error';
  }
  showButton();
  ready();
}

async function toggle() {
  if (state.busy || state.liked === null) return;
  state.busy = true;
  showButton();
  const method = state.liked ? 'DELETE' : 'PUT';
  state.clickedAt = Date.now();
  try {
    const answer = await call(method, COMMAND_API, `/v1/posts/${enc(state.post)}/likes/${enc(state.user)}`);
    state.liked = answer.liked;
    $('status').textContent = `${answer.liked ? 'Liked' : 'Unliked'} as ${answer.user_id}${answer.changed ? ` (event at stream position ${answer.seq})` : ' (no change)'}; waiting for the counter…`;
    showError(null);
  } catch (e) {
    state.clickedAt = 0;
    showError(e);
  } finally {
    state.busy = false;
    showButton();
  }
}

function start() {
  readParams();
  $('like').addEventListener('click', toggle);
  $('second').addEventListener('click', openSecond);
  $('who-form').addEventListener('submit', (event) => {
    event.preventDefault();
    if ($('token-input').value.trim()) setToken($('token-input').value);
    $('token-input').value = '';
    writeFragment(new URLSearchParams({ post: $('post-input').value.trim(), user: $('user-input').value.trim() }));
    sessionStorage.setItem('tally.user', $('user-input').value.trim());
    state.liked = null;
    state.likes = null;
    readParams();
    readLike();
    followPost();
  });
  window.addEventListener('hashchange', () => {
    readParams();
    state.liked = null;
    state.likes = null;
    readLike();
    followPost();
  });
  showButton();
  readLike();
  followPost();
}

start();
