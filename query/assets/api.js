// What the dashboard and the like demo share: the token (kept in this tab's
// sessionStorage, never in a URL the server sees), calls to the public API
// with `Authorization: Bearer`, its problem+json errors shown as they are,
// and a small DOM builder.

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

/** An answer that was not 2xx: the API's problem+json, for people. */
export class ApiError extends Error {
  constructor(status, title, detail, what) {
    super(`${status ? `${status} ` : ''}${title}${detail ? `: ${detail}` : ''}`);
    this.status = status;
    this.title = title;
    this.detail = detail;
    this.what = what;
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
  return new ApiError(response.status, title, detail, what);
}

/**
 * Calls the API at `base` (`''`: this origin) and answers the parsed JSON
 * body; throws an {@link ApiError} for anything but a 2xx.
 */
export async function call(method, base, path, params) {
  const url = new URL(path, base || location.origin);
  for (const [name, value] of Object.entries(params || {})) {
    if (value !== undefined && value !== null && value !== '') url.searchParams.set(name, value);
  }
  const what = `${method} ${url.pathname}`;
  let response;
  try {
    response = await fetch(url, {
      method,
      headers: { Authorization: `Bearer ${token()}`, Accept: 'application/json' },
      cache: 'no-store',
    });
  } catch (e) {
    throw new ApiError(0, `${url.origin} could not be reached`, String(e.message || e), what);
  }
  if (!response.ok) throw await problem(response, what);
  return response.json();
}

export const get = (path, params) => call('GET', '', path, params);

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
