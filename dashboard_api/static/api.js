// REST access to the CRM Pulse API: the access token, JSON reads, and the WebSocket address.
// The token arrives once as ?token=... and is kept in sessionStorage, so view rotation and
// reloads keep it; it is sent as "Authorization: Bearer" on REST and as ?token= on /ws.

const TOKEN_KEY = "crm-pulse-token";

let token = null;

/** Read ?token= (and remove it from the address bar), else the one this tab kept. */
export function initToken() {
  const url = new URL(window.location.href);
  const given = url.searchParams.get("token");
  if (given !== null) {
    sessionStorage.setItem(TOKEN_KEY, given);
    url.searchParams.delete("token");
    window.history.replaceState(null, "", url.pathname + url.search + url.hash);
  }
  token = sessionStorage.getItem(TOKEN_KEY);
  return token;
}

/** An HTTP error answer of the API, with its status and the server's explanation. */
export class ApiError extends Error {
  constructor(status, detail) {
    super(detail);
    this.status = status;
  }

  get isAuth() {
    return this.status === 401 || this.status === 403;
  }
}

/** GET a JSON resource of the API; throws ApiError on an error answer, TypeError when unreachable. */
export async function getJSON(path, params) {
  const query = params ? "?" + new URLSearchParams(params).toString() : "";
  const headers = { Accept: "application/json" };
  if (token) headers.Authorization = "Bearer " + token;
  const response = await fetch(path + query, { cache: "no-store", headers });
  if (!response.ok) {
    let detail = response.statusText || "HTTP " + response.status;
    try {
      const body = await response.json();
      if (body && body.detail) detail = typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail);
    } catch (e) {
      /* not JSON */
    }
    throw new ApiError(response.status, detail);
  }
  return response.json();
}

/** The WebSocket URL of a path on this server, carrying the token. */
export function socketUrl(path) {
  const scheme = window.location.protocol === "https:" ? "wss:" : "ws:";
  const query = token ? "?token=" + encodeURIComponent(token) : "";
  return scheme + "//" + window.location.host + path + query;
}

/**
 * What a screen says when the token is refused, in words for whoever stands in front of the TV:
 * `text` the main line, `hint` a small line for the administrator (the server's reason).
 */
export function authMessage(status, detail) {
  if (status === 403) {
    return {
      text: "This screen's access link may not show these figures. Ask your administrator for a link to this view.",
      hint: "Refused for this access token (HTTP 403)" + (detail ? ": " + detail : ""),
    };
  }
  return {
    text: token
      ? "This screen's access link has expired or was revoked. Ask your administrator for a new link."
      : "This screen needs an access link. Ask your administrator for the link to this display.",
    hint: "Administrators: create a display token with 'crm-pulse tokens create --role display' and open this page with ?token=… (HTTP " + status + ")",
  };
}
