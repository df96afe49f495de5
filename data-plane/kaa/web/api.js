// The one way the dashboard talks to the platform: its public REST APIs with the admin token.
// The token lives in this tab's sessionStorage; it is sent only in the Authorization header,
// never in a URL, and never written to the console.

const KEY = 'kaa.adminToken';

export const session = {
  token: () => sessionStorage.getItem(KEY),
  login: (token) => sessionStorage.setItem(KEY, token),
  logout: () => sessionStorage.removeItem(KEY),
};

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

// Calls `path` (same origin). `body`: an object (sent as JSON) or a string (sent as is).
// Resolves to {status, headers, data}; rejects with ApiError on a non-2xx answer (but 304).
export async function call(method, path, body, headers = {}) {
  const init = { method, cache: 'no-store', headers: { ...headers } };
  init.headers.Authorization = `Bearer ${session.token() ?? ''}`;
  if (body !== undefined) {
    init.body = typeof body === 'string' ? body : JSON.stringify(body);
    init.headers['Content-Type'] ??= 'application/json';
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch {
    throw new ApiError(0, 'The platform does not answer: is `kaa up` running?');
  }
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = text;
  }
  if (response.status === 401) {
    session.logout();
    window.dispatchEvent(new Event('kaa:unauthorized'));
  }
  // 304: the caller sent If-None-Match and what it has is still current.
  if (!response.ok && response.status !== 304) {
    const message = data?.message ?? data?.reasonPhrase ?? `${response.status} ${response.statusText}`;
    throw new ApiError(response.status, message);
  }
  return { status: response.status, headers: response.headers, data };
}

export const get = async (path) => (await call('GET', path)).data;

// A query string from an object, leaving out empty values.
export function query(params) {
  const entries = Object.entries(params).filter(([, v]) => v !== undefined && v !== null && v !== '');
  return new URLSearchParams(entries.map(([k, v]) => [k, String(v)])).toString();
}

export const enc = encodeURIComponent;
