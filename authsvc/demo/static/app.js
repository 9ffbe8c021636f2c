// The authsvc demo: a single-page app that logs in through authsvc, served from
// the same origin as the API.
//
// Where the tokens live:
// - the access token in a variable of this module, never in localStorage,
//   sessionStorage or a readable cookie: a reload or a new tab forgets it;
// - the refresh token in the HttpOnly cookie `__Host-authsvc_refresh`, which the
//   login asks for (`refresh_token_transport: "cookie"`). This script never sees
//   it; the browser sends it to POST /refresh, which needs the header
//   `X-Authsvc-CSRF: 1` besides (a foreign page cannot send it without a CORS
//   preflight that fails).
// So on load, and whenever the access token has expired, the app refreshes
// through the cookie ("silent refresh"); other tabs hear of a logout at once.

const CSRF_HEADER = { "X-Authsvc-CSRF": "1" };
const channel = new BroadcastChannel("authsvc-demo");

let accessToken = null; // in memory only
let refreshing = null; // the refresh in flight, shared by every caller in this tab
let mfaToken = null; // between a password accepted and its second factor

const $ = (id) => document.getElementById(id);

/** An error answer of the API: `code` is its stable machine-readable code. */
class ApiError extends Error {
  constructor(status, problem) {
    super(problem?.detail ?? `HTTP ${status}`);
    this.status = status;
    this.code = problem?.code;
    this.problem = problem;
  }
}

/** One request to authsvc; the JSON answer, or an ApiError. */
async function send(path, { method = "GET", body, token, headers = {} } = {}) {
  const sent = { ...headers };
  if (body !== undefined) sent["Content-Type"] = "application/json";
  if (token) sent["Authorization"] = `Bearer ${token}`;
  const response = await fetch(path, {
    method,
    headers: sent,
    body: body === undefined ? undefined : JSON.stringify(body),
    credentials: "same-origin", // the cookie goes to our own origin only
  });
  const answer = response.status === 204 ? null : await response.json();
  if (!response.ok) throw new ApiError(response.status, answer);
  return answer;
}

/**
 * New tokens through the refresh cookie. True when it worked, false when there
 * is no session (no cookie, or one the service refused and has cleared).
 * Calls made while one is in flight wait for it rather than racing it.
 */
function refresh() {
  refreshing ??= send("/refresh", { method: "POST", body: {}, headers: CSRF_HEADER })
    .then((tokens) => {
      accessToken = tokens.access_token;
      return true;
    })
    .catch((error) => {
      // 400: this browser has no cookie; 401: the session is over.
      if (error.status === 400 || error.status === 401) {
        accessToken = null;
        return false;
      }
      throw error;
    })
    .finally(() => {
      refreshing = null;
    });
  return refreshing;
}

/** Call the API as the user; an expired access token is refreshed once. */
async function api(path, options = {}) {
  try {
    return await send(path, { ...options, token: accessToken });
  } catch (error) {
    if (error.code !== "token_expired" || !(await refresh())) throw error;
    return send(path, { ...options, token: accessToken });
  }
}

// --- Screens -------------------------------------------------------------------

function say(message) {
  $("status").textContent = message;
}

function showLogin(message = "Not signed in.") {
  accessToken = null;
  mfaToken = null;
  $("account").hidden = true;
  $("login").hidden = false;
  $("password-form").hidden = false;
  $("mfa-form").hidden = true;
  $("login-error").textContent = "";
  say(message);
}

async function showAccount() {
  const user = await api("/me");
  $("username").textContent = user.username;
  $("user-id").textContent = user.id;
  $("user-email").textContent = user.email ?? "(none)";
  $("user-roles").textContent = user.roles.join(", ") || "(none)";
  $("user-created").textContent = new Date(user.created_at).toLocaleString();
  $("login").hidden = true;
  $("account").hidden = false;
  say(`Signed in as ${user.username}.`);
  await showSessions();
}

async function showSessions() {
  const { sessions } = await api("/sessions");
  const items = sessions.map((session) => {
    const item = document.createElement("li");
    const label = document.createElement("span");
    const since = new Date(session.created_at).toLocaleString();
    const device = session.user_agent ?? "unknown device";
    label.textContent = `${since}: ${device}${session.current ? " (this device)" : ""}`;
    const end = document.createElement("button");
    end.type = "button";
    end.textContent = "Log out this device";
    end.addEventListener("click", () => guarded(() => endSession(session)));
    item.append(label, end);
    return item;
  });
  $("sessions").replaceChildren(...items);
}

// --- Actions -------------------------------------------------------------------

async function signedIn(tokens) {
  accessToken = tokens.access_token;
  channel.postMessage({ type: "login" });
  await showAccount();
}

async function logInWithPassword(form) {
  const fields = new FormData(form);
  try {
    const tokens = await send("/login", {
      method: "POST",
      body: {
        username: fields.get("username"),
        password: fields.get("password"),
        refresh_token_transport: "cookie",
      },
    });
    form.reset();
    await signedIn(tokens);
  } catch (error) {
    if (error.code !== "mfa_required") throw error;
    // The password was right; the account has a second factor.
    form.reset();
    mfaToken = error.problem.mfa_token;
    $("password-form").hidden = true;
    $("mfa-form").hidden = false;
    $("login-error").textContent = "";
    say("Enter the code of your second factor.");
  }
}

async function logInWithCode(form) {
  const fields = new FormData(form);
  try {
    const tokens = await send("/login/mfa", {
      method: "POST",
      body: {
        mfa_token: mfaToken,
        code: fields.get("code"),
        refresh_token_transport: "cookie",
      },
    });
    form.reset();
    mfaToken = null;
    await signedIn(tokens);
  } catch (error) {
    form.reset();
    // The mfa_token is spent or expired: only the password starts again.
    if (error.code === "invalid_mfa_token") showLogin("Please log in again.");
    throw error;
  }
}

async function logOut() {
  try {
    // Revokes the session and clears the cookie.
    await api("/logout", { method: "POST" });
  } finally {
    channel.postMessage({ type: "logout" });
    showLogin("Logged out.");
  }
}

async function endSession(session) {
  if (session.current) return logOut();
  await api(`/sessions/${encodeURIComponent(session.id)}`, { method: "DELETE" });
  await showSessions();
}

/** Run an action; a failure is shown, never left uncaught. */
async function guarded(action) {
  try {
    await action();
  } catch (error) {
    if (error instanceof ApiError && error.status === 401 && !$("login").hidden) {
      $("login-error").textContent = error.message;
    } else if (error instanceof ApiError && error.status === 401) {
      showLogin("Your session has ended. Please log in again.");
    } else {
      $("login-error").textContent = error.message;
      say(`Something went wrong: ${error.message}`);
    }
  }
}

// --- Start ---------------------------------------------------------------------

channel.addEventListener("message", ({ data }) => {
  if (data.type === "logout") {
    showLogin("Logged out in another tab.");
  } else if (data.type === "login" && !accessToken) {
    guarded(async () => {
      if (await refresh()) await showAccount();
    });
  }
});

$("password-form").addEventListener("submit", (event) => {
  event.preventDefault();
  guarded(() => logInWithPassword(event.target));
});
$("mfa-form").addEventListener("submit", (event) => {
  event.preventDefault();
  guarded(() => logInWithCode(event.target));
});
$("mfa-cancel").addEventListener("click", () => showLogin());
$("logout").addEventListener("click", () => guarded(logOut));

guarded(async () => {
  // A reload, or a new tab: the cookie alone restores the session.
  if (await refresh()) await showAccount();
  else showLogin();
});
