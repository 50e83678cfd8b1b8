// What the dashboard and the like demo share: the token (kept in this tab's
// sessionStorage, never in a URL the server sees), calls to the public API
// with `Authorization: Bearer` (and its Server-Sent Events, read with fetch
// for the same header), its problem+json errors shown as they are, and a
// small DOM builder.

const TOKEN_KEY = 'tally.token';

/** A setting the server wrote into the page (`<meta name=...>`). */
export function setting(name) {
  const meta = document.querySelector(`meta[name="${name}"]`);
  return meta ? meta.content : '';
}

/**
 * The page's parameters from the URL fragment (`#token=...&post=...`). A
 * token found there moves to sessionStorage and leaves the address bar, so
 * it stays out of history, bookmarks and screenshots.
 */
export function fragment() {
  const params = new URLSearchParams(location.hash.slice(1));
  const given = params.get('token');
  if (given !== null) {
    setToken(given);
    params.delete('token');
    writeFragment(params);
  }
  return params;
}

/** Replaces the fragment without a navigation. */
export function writeFragment(params) {
  const rest = params.toString();
  history.replaceState(null, '', location.pathname + location.search + (rest ? `#${rest}` : ''));
}

export function token() {
  return sessionStorage.getItem(TOKEN_KEY) || '';
}

export function setToken(value) {
  const clean = value.trim().replace(/^Bearer\s+/i, '');
  if (clean) sessionStorage.setItem(TOKEN_KEY, clean);
  else sessionStorage.removeItem(TOKEN_KEY);
}

/** The token's claims, decoded for display only (the API verifies it). */
export function claims(jwt) {
  try {
    const part = jwt.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    const padded = part + '='.repeat((4 - (part.length % 4)) % 4);
    const bytes = Uint8Array.from(atob(padded), (c) => c.charCodeAt(0));
    return JSON.parse(new TextDecoder().decode(bytes));
  } catch {
    return null;
  }
}

/** How long an API call may take before the page gives up on it. */
export const TIMEOUT_MS = 10000;

/** An answer that was not 2xx: the API's problem+json, for people. */
export class ApiError extends Error {
  constructor(status, title, detail, what) {
    super(`${status ? `${status} ` : ''}${title}${detail ? `: ${detail}` : ''}`);
    this.status = status;
    this.title = title;
    this.detail = detail;
    this.what = what;
    /** Seconds the API asked to wait (`Retry-After`), if it did. */
    this.retryAfter = null;
  }
}

async function problem(response, what) {
  let title = response.statusText || 'Error';
  let detail = '';
  try {
    const body = await response.json();
    title = body.title || title;
    detail = body.detail || '';
    if (Array.isArray(body.errors) && body.errors.length) {
      detail += ` (${body.errors.map((e) => `${e.field}: ${e.message}`).join('; ')})`;
    }
  } catch {
    // Not problem+json: the status says it all.
  }
  const retry = response.headers.get('Retry-After');
  if (retry) detail += ` (retry after ${retry} s)`;
  const error = new ApiError(response.status, title, detail, what);
  if (retry && /^\d+$/.test(retry)) error.retryAfter = Number(retry);
  return error;
}

/** The error of a fetch that failed before any answer. */
function unreachable(url, e, controller, what) {
  if (controller.signal.aborted) {
    return new ApiError(0, `${url.origin} did not answer within ${TIMEOUT_MS / 1000} s`, '', what);
  }
  return new ApiError(0, `${url.origin} could not be reached`, String(e.message || e), what);
}

/**
 * Calls the API at `base` (`''`: this origin) and answers the parsed JSON
 * body; throws an {@link ApiError} for anything but a 2xx, and for no
 * answer within {@link TIMEOUT_MS} (a browser queues requests beyond its
 * connections per host, and a queued one would otherwise wait forever).
 */
export async function call(method, base, path, params) {
  const url = new URL(path, base || location.origin);
  for (const [name, value] of Object.entries(params || {})) {
    if (value !== undefined && value !== null && value !== '') url.searchParams.set(name, value);
  }
  const what = `${method} ${url.pathname}`;
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), TIMEOUT_MS);
  try {
    let response;
    try {
      response = await fetch(url, {
        method,
        headers: { Authorization: `Bearer ${token()}`, Accept: 'application/json' },
        cache: 'no-store',
        signal: controller.signal,
      });
    } catch (e) {
      throw unreachable(url, e, controller, what);
    }
    if (!response.ok) throw await problem(response, what);
    return await response.json();
  } catch (e) {
    if (controller.signal.aborted && !(e instanceof ApiError)) throw unreachable(url, e, controller, what);
    throw e;
  } finally {
    clearTimeout(timer);
  }
}

export const get = (path, params) => call('GET', '', path, params);

/** The server sends a comment every 15 s: a stream silent this long is dead. */
const IDLE_MS = 45000;
const BACKOFF_MS = [1000, 2000, 4000, 8000, 15000];

/**
 * Follows a Server-Sent Events endpoint of this origin. `EventSource`
 * cannot send headers and would put the token in the URL, where the
 * server's logs see it; this reads the stream with fetch and
 * `Authorization: Bearer` instead, and reconnects with backoff.
 *
 * `onEvent(name, data)` gets every event; `onState(state)` each change of
 * `state` (`connecting`, `open`, `retrying`, `closed`); `onError(error,
 * attempt)` every failure (an {@link ApiError}) and may answer `false` to
 * stop or a delay in ms before the next attempt. Each stream holds one of
 * the browser's few connections per host while open.
 */
export class LiveStream {
  constructor(path, { onEvent, onState, onError } = {}) {
    this.path = path;
    this.onEvent = onEvent || (() => {});
    this.onState = onState || (() => {});
    this.onError = onError || (() => undefined);
    this.state = 'connecting';
    this.attempt = 0;
    this.closed = false;
    this.controller = null;
    this.retry = null;
    this.connect();
  }

  close() {
    this.closed = true;
    clearTimeout(this.retry);
    if (this.controller) this.controller.abort();
    this.setState('closed');
  }

  setState(state) {
    if (this.state === state) return;
    this.state = state;
    this.onState(state);
  }

  async connect() {
    if (this.closed) return;
    this.setState('connecting');
    const url = new URL(this.path, location.origin);
    const what = `GET ${url.pathname}`;
    const controller = new AbortController();
    this.controller = controller;
    let timer = setTimeout(() => controller.abort(), TIMEOUT_MS);
    let error;
    try {
      let response;
      try {
        response = await fetch(url, {
          headers: { Authorization: `Bearer ${token()}`, Accept: 'text/event-stream' },
          cache: 'no-store',
          signal: controller.signal,
        });
      } catch (e) {
        throw unreachable(url, e, controller, what);
      }
      if (!response.ok) throw await problem(response, what);
      if (!(response.headers.get('Content-Type') || '').startsWith('text/event-stream')) {
        throw new ApiError(response.status, 'Not an event stream', response.headers.get('Content-Type') || '', what);
      }
      this.setState('open');
      const alive = () => {
        clearTimeout(timer);
        timer = setTimeout(() => controller.abort(), IDLE_MS);
      };
      alive();
      await readEvents(response.body, alive, (name, data) => {
        this.attempt = 0;
        this.onEvent(name, data);
      });
      error = new ApiError(0, 'The live stream ended', '', what);
    } catch (e) {
      if (this.closed) return;
      if (e instanceof ApiError) error = e;
      else if (controller.signal.aborted) error = new ApiError(0, 'The live stream went silent', `nothing for ${IDLE_MS / 1000} s`, what);
      else error = new ApiError(0, 'The live stream broke', String(e.message || e), what);
    } finally {
      clearTimeout(timer);
    }
    if (this.closed) return;
    this.attempt += 1;
    this.setState('retrying');
    const decided = this.onError(error, this.attempt);
    if (decided === false) {
      this.close();
      return;
    }
    const backoff = BACKOFF_MS[Math.min(this.attempt, BACKOFF_MS.length) - 1] * (0.8 + Math.random() * 0.4);
    const delay = Math.max(typeof decided === 'number' ? decided : backoff, (error.retryAfter || 0) * 1000);
    this.retry = setTimeout(() => this.connect(), delay);
  }
}

/** Reads `text/event-stream` from `body`: `dispatch(name, data)` per event. */
async function readEvents(body, alive, dispatch) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = '';
  let name = '';
  let data = [];
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    alive();
    buffer += value;
    // A chunk may end between the \r and \n of one line ending.
    const held = buffer.endsWith('\r') ? '\r' : '';
    const lines = (held ? buffer.slice(0, -1) : buffer).split(/\r\n|\r|\n/);
    buffer = lines.pop() + held;
    for (const line of lines) {
      if (line === '') {
        if (data.length) dispatch(name || 'message', data.join('\n'));
        name = '';
        data = [];
        continue;
      }
      if (line.startsWith(':')) continue;
      const colon = line.indexOf(':');
      const field = colon < 0 ? line : line.slice(0, colon);
      let text = colon < 0 ? '' : line.slice(colon + 1);
      if (text.startsWith(' ')) text = text.slice(1);
      if (field === 'event') name = text;
      else if (field === 'data') data.push(text);
    }
  }
}

/** `tag` with attributes (`class`, `data-*`, properties) and children. */
export function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name === 'class') node.className = value;
    else if (name.startsWith('on')) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? '' : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

const integer = new Intl.NumberFormat('en-US');

/** A count with thousands separators. */
export function count(n) {
  return integer.format(n);
}

/** A ratio as a percentage. */
export function percent(ratio) {
  return ratio === null || ratio === undefined ? '—' : `${(ratio * 100).toFixed(2)} %`;
}

/** Seconds since the epoch as local date and time. */
export function when(seconds, withDate = true) {
  const d = new Date(seconds * 1000);
  const time = d.toLocaleTimeString('en-GB', { hour: '2-digit', minute: '2-digit' });
  if (!withDate) return time;
  return `${d.toLocaleDateString('en-GB', { day: '2-digit', month: 'short' })} ${time}`;
}
