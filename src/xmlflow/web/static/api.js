// The JSON API as the page uses it: every failure becomes an ApiError whose message says what to do.

import { sentence } from "./format.js";

export class ApiError extends Error {
  constructor(message, status = 0, code = "") {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
  }
}

export const OFFLINE_MESSAGE =
  "Cannot reach the xmlflow server. Check your connection (or that the server is running) and try again.";

/** A message for a failed response: the server's own words plus what the person can do. */
export function errorMessage(status, body) {
  const said = sentence(body?.error?.message);
  if (status === 401 || status === 403) {
    return `${said || "You are not signed in."} Reload the page to sign in again.`;
  }
  if (status === 413) return `${said} Split the file, or ask your administrator to raise the limit.`;
  if (status === 429 || status === 503) return `${said || "The server is busy."} Try again in a moment.`;
  if (status >= 500) {
    return `The server ran into a problem (HTTP ${status}). Try again; if it keeps happening, tell your administrator.`;
  }
  return said || `The request failed (HTTP ${status}).`;
}

/** Parse a JSON body if there is one; never throws. */
export function parseJson(text) {
  try {
    return text ? JSON.parse(text) : null;
  } catch {
    return null;
  }
}

/** fetch() a JSON endpoint; resolves to the body (null for 204), rejects with an ApiError. */
export async function api(path, { method = "GET" } = {}) {
  let response;
  try {
    response = await fetch(path, { method, headers: { Accept: "application/json" } });
  } catch {
    throw new ApiError(OFFLINE_MESSAGE);
  }
  const body = parseJson(await response.text().catch(() => ""));
  if (!response.ok) {
    throw new ApiError(errorMessage(response.status, body), response.status, body?.error?.code);
  }
  return body;
}
