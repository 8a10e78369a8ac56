// The filegate operator console: calls the admin API with the session cookie and renders the
// answers as DOM nodes with text nodes only (no HTML parsing), so stored names stay text.

const state = { csrf: null, operator: null, view: null, timer: null };
const REFRESH_MS = 2000;
const LIVE_VIEWS = new Set(["overview", "breakers"]);

const $ = (id) => document.getElementById(id);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else if (name === "class") node.className = value;
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

class ApiError extends Error {
  constructor(status, body) {
    super(body?.error?.message || `HTTP ${status}`);
    this.status = status;
    this.code = body?.error?.code;
  }
}

async function api(method, path, body) {
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (method !== "GET" && state.csrf) headers["X-CSRF-Token"] = state.csrf;
  const resp = await fetch(path, {
    method,
    headers,
    credentials: "same-origin",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await resp.text();
  let data = null;
  if (text && (resp.headers.get("content-type") || "").startsWith("application/json")) data = JSON.parse(text);
  if (!resp.ok) {
    const error = new ApiError(resp.status, data);
    if (resp.status === 401 && path !== "/console/session") signedOut(error.message);
    throw error;
  }
  return data ?? text;
}

function notify(message, kind = "info") {
  const notice = $("notice");
  notice.textContent = message;
  notice.className = kind;
  notice.hidden = !message;
}

// Runs an action, reporting its outcome, then redraws the current view.
async function act(label, action) {
  try {
    const result = await action();
    notify(`${label}: done`);
    await render();
    return result;
  } catch (error) {
    notify(`${label}: ${error.message}`, "error");
    return undefined;
  }
}

const when = (seconds) => (seconds ? new Date(seconds * 1000).toISOString().replace(/\.\d{3}Z$/, "Z") : "—");
const ago = (seconds) => (seconds ? `${Math.max(0, Math.round(Date.now() / 1000 - seconds))} s` : "—");
const size = (bytes) => (bytes === null || bytes === undefined ? "—" : `${bytes} B`);

function table(columns, rows, rowAttrs = () => ({})) {
  return el(
    "table",
    {},
    el("thead", {}, el("tr", {}, columns.map(([title]) => el("th", {}, title)))),
    el(
      "tbody",
      {},
      rows.length
        ? rows.map((row) => el("tr", rowAttrs(row), columns.map(([, cell]) => el("td", {}, cell(row)))))
        : el("tr", {}, el("td", { colspan: columns.length, class: "empty" }, "Nothing here.")),
    ),
  );
}

function form(fields, submitLabel, onSubmit, attrs = {}) {
  const node = el(
    "form",
    { class: "inline", ...attrs },
    fields.map((field) =>
      el("label", {}, el("span", {}, field.label), field.input || el("input", { name: field.name, ...field.attrs })),
    ),
    el("button", { type: "submit" }, submitLabel),
  );
  node.addEventListener("submit", (event) => {
    event.preventDefault();
    const values = {};
    for (const [name, value] of new FormData(node).entries()) values[name] = value;
    values._all = new FormData(node);
    onSubmit(values, node);
  });
  return node;
}

function query(params) {
  const q = new URLSearchParams();
  for (const [name, value] of Object.entries(params)) if (value !== "" && value != null) q.set(name, value);
  const text = q.toString();
  return text ? `?${text}` : "";
}

// ---- views ----------------------------------------------------------------------------------

function breakerCell(p) {
  return el("span", { class: `state state-${p.breaker.state}`, "data-breaker": p.provider }, p.breaker.state);
}

async function overview() {
  const [providers, summary, pending, refused] = await Promise.all([
    api("GET", "/admin/providers"),
    api("GET", "/admin/jobs/summary?limit=10"),
    api("GET", "/admin/files?status=pending&limit=10"),
    api("GET", "/admin/audit?outcome=denied&limit=10"),
  ]);
  const transitions = providers.data
    .flatMap((p) => p.breaker.recent_transitions.map((t) => ({ provider: p.provider, ...t })))
    .sort((a, b) => b.at - a.at)
    .slice(0, 10);
  return [
    el("h2", {}, "Providers"),
    table(
      [
        ["Provider", (p) => p.provider],
        ["Mode", (p) => p.mode],
        ["Breaker", breakerCell],
        ["Failures", (p) => p.breaker.failure_count],
        ["Last error", (p) => p.breaker.last_error || "—"],
        ["Files / quota", (p) => `${p.files} / ${p.quota_files ?? "—"}`],
        ["Bytes / quota", (p) => `${size(p.bytes)} / ${size(p.quota_bytes)}`],
      ],
      providers.data,
    ),
    el("h3", {}, "Recent breaker transitions"),
    table(
      [
        ["When", (t) => when(t.at)],
        ["Provider", (t) => t.provider],
        ["From", (t) => t.from_state],
        ["To", (t) => t.to_state],
      ],
      transitions,
      (t) => ({ "data-transition": `${t.provider}:${t.to_state}` }),
    ),
    el("h2", {}, "Jobs"),
    el(
      "p",
      { id: "job-counts" },
      Object.entries(summary.counts).map(([s, n]) => el("span", { class: "count" }, `${s}: ${n}`)),
      el("span", { class: "count" }, `oldest queued: ${summary.oldest_queued_age_seconds === null ? "—" : `${Math.round(summary.oldest_queued_age_seconds)} s`}`),
    ),
    el("h3", {}, "Dead letters"),
    jobTable(summary.dead_letters),
    el("h2", {}, "Pending files"),
    table(
      [
        ["File", (f) => f.id],
        ["Tenant", (f) => f.tenant],
        ["Name", (f) => f.filename],
        ["Waiting", (f) => ago(f.created_at)],
      ],
      pending.data,
    ),
    el("h2", {}, "Recent refused requests"),
    auditTable(refused.data),
  ];
}

function jobTable(jobs) {
  return table(
    [
      ["Job", (j) => j.id],
      ["Kind", (j) => j.kind],
      ["State", (j) => j.state],
      ["Attempts", (j) => `${j.attempts} / ${j.max_attempts}`],
      ["Last error", (j) => j.last_error || "—"],
      ["Created", (j) => when(j.created_at)],
      [
        "",
        (j) =>
          j.state === "queued" || j.state === "running"
            ? ""
            : el("button", { type: "button", onclick: () => act(`Retry job ${j.id}`, () => api("POST", `/admin/jobs/${j.id}/retry`)) }, "Retry"),
      ],
    ],
    jobs,
    (j) => ({ "data-job": j.id }),
  );
}

function auditTable(events) {
  return table(
    [
      ["When", (e) => e.created_at],
      ["Actor", (e) => e.actor],
      ["Action", (e) => e.action],
      ["Resource", (e) => e.resource || "—"],
      ["Outcome", (e) => `${e.outcome}${e.status_code ? ` (${e.status_code})` : ""}`],
      ["Detail", (e) => e.detail || ""],
    ],
    events,
  );
}

const filesFilter = {};

async function files() {
  const search = form(
    ["tenant", "id", "sha256", "filename", "status"].map((name) => ({
      label: name,
      name,
      attrs: { value: filesFilter[name] || "", id: `files-${name}` },
    })),
    "Find",
    (values) => {
      for (const name of ["tenant", "id", "sha256", "filename", "status"]) filesFilter[name] = values[name].trim();
      filesFilter.open = null;
      render();
    },
    { id: "files-search" },
  );
  const { open, ...filters } = filesFilter;
  const found = await api("GET", `/admin/files${query({ ...filters, limit: 50 })}`);
  const parts = [
    el("h2", {}, "Files"),
    search,
    table(
      [
        ["File", (f) => el("a", { href: "#files", onclick: (e) => { e.preventDefault(); filesFilter.open = f.id; render(); } }, f.id)],
        ["Tenant", (f) => f.tenant],
        ["Name", (f) => el("span", { class: "filename" }, f.filename)],
        ["Bytes", (f) => f.bytes],
        ["Purpose", (f) => f.purpose],
        ["Status", (f) => f.status],
        ["sha256", (f) => el("code", {}, f.sha256)],
        ["Created", (f) => when(f.created_at)],
      ],
      found.data,
      (f) => ({ "data-file": f.id }),
    ),
  ];
  if (open) parts.push(await fileDetail(open));
  return parts;
}

function copyList(copies) {
  const list = Array.isArray(copies) ? copies : Object.entries(copies || {}).map(([provider, c]) => ({ provider, ...(typeof c === "object" ? c : { status: c }) }));
  return table(
    [
      ["Provider", (c) => c.provider],
      ["Status", (c) => c.status],
      ["Provider file id", (c) => c.provider_file_id || "—"],
    ],
    list,
  );
}

async function fileDetail(fileId) {
  const [file, providers] = await Promise.all([
    api("GET", `/admin/files/${encodeURIComponent(fileId)}`),
    api("GET", "/admin/providers"),
  ]);
  const path = `/admin/files/${encodeURIComponent(file.id)}`;
  const target = el("select", { name: "provider" }, providers.data.map((p) => el("option", { value: p.provider }, p.provider)));
  const remove = el("button", { type: "button", class: "danger" }, "Delete");
  remove.addEventListener("click", () => {
    if (remove.dataset.armed) {
      filesFilter.open = null;
      act(`Delete ${file.id}`, () => api("DELETE", path));
    } else {
      remove.dataset.armed = "yes";
      remove.textContent = "Confirm delete";
    }
  });
  return el(
    "section",
    { class: "detail", id: "file-detail" },
    el("h3", {}, "File ", el("code", {}, file.id)),
    el("dl", {}, [
      ["Name", el("span", { class: "filename" }, file.filename)],
      ["Tenant", file.tenant],
      ["Status", file.status],
      ["Bytes", file.bytes],
      ["sha256", el("code", {}, file.sha256)],
    ].map(([k, v]) => [el("dt", {}, k), el("dd", {}, v)])),
    el(
      "div",
      { class: "actions" },
      el("button", { type: "button", onclick: () => act(`Check ${file.id}`, () => api("POST", `${path}/check`)) }, "Check now"),
      form([{ label: "copy to", input: target }], "Copy", () =>
        act(`Copy ${file.id} to ${target.value}`, () => api("POST", `${path}/providers`, { provider: target.value })),
      ),
      remove,
    ),
    el("h4", {}, "Copies"),
    copyList(file.copies ?? file.providers),
    el("h4", {}, "Lifecycle"),
    table(
      [
        ["When", (e) => when(e.created_at)],
        ["Provider", (e) => e.provider || "—"],
        ["From", (e) => e.from_status || "—"],
        ["To", (e) => e.to_status],
        ["Reason", (e) => e.reason || ""],
      ],
      file.events || [],
    ),
  );
}

const jobsFilter = { state: "dead" };

async function jobs() {
  const stateSelect = el(
    "select",
    { name: "state" },
    ["", "queued", "running", "dead", "done"].map((s) => el("option", { value: s, selected: s === jobsFilter.state }, s || "any")),
  );
  const search = form(
    [
      { label: "state", input: stateSelect },
      { label: "kind", name: "kind", attrs: { value: jobsFilter.kind || "" } },
      { label: "file", name: "file_id", attrs: { value: jobsFilter.file_id || "" } },
    ],
    "Show",
    (values) => {
      Object.assign(jobsFilter, { state: values.state, kind: values.kind.trim(), file_id: values.file_id.trim() });
      render();
    },
  );
  const listed = await api("GET", `/admin/jobs${query({ ...jobsFilter, limit: 100 })}`);
  return [el("h2", {}, "Jobs"), search, jobTable(listed.data)];
}

const auditFilter = {};

async function auditView() {
  const outcome = el(
    "select",
    { name: "outcome" },
    ["", "success", "denied", "failed"].map((s) => el("option", { value: s, selected: s === (auditFilter.outcome || "") }, s || "any")),
  );
  const search = form(
    [
      { label: "actor", name: "actor", attrs: { value: auditFilter.actor || "" } },
      { label: "action", name: "action", attrs: { value: auditFilter.action || "" } },
      { label: "tenant id", name: "tenant_id", attrs: { value: auditFilter.tenant_id || "" } },
      { label: "outcome", input: outcome },
      { label: "since (RFC 3339)", name: "since", attrs: { value: auditFilter.since || "" } },
      { label: "until", name: "until", attrs: { value: auditFilter.until || "" } },
    ],
    "Filter",
    (values) => {
      for (const name of ["actor", "action", "tenant_id", "outcome", "since", "until"]) auditFilter[name] = values[name].trim();
      render();
    },
  );
  const exportButton = el("button", { type: "button" }, "Export JSON Lines");
  exportButton.addEventListener("click", async () => {
    try {
      const text = await api("GET", `/admin/audit${query({ ...auditFilter, format: "jsonl" })}`);
      const link = el("a", { href: URL.createObjectURL(new Blob([text], { type: "application/x-ndjson" })), download: "filegate-audit.jsonl" });
      link.click();
      URL.revokeObjectURL(link.href);
    } catch (error) {
      notify(`Export: ${error.message}`, "error");
    }
  });
  const events = await api("GET", `/admin/audit${query({ ...auditFilter, limit: 100 })}`);
  return [el("h2", {}, "Audit"), search, exportButton, auditTable(events.data)];
}

async function tenants() {
  const [tenantList, keyList] = await Promise.all([api("GET", "/admin/tenants"), api("GET", "/admin/keys")]);
  const names = new Map(tenantList.data.map((t) => [t.id, t.name]));
  const created = el("div", { id: "created-key" });
  const scopeBoxes = ["files:read", "files:write", "admin"].map((scope) =>
    el("label", { class: "check" }, el("input", { type: "checkbox", name: "scopes", value: scope, checked: scope !== "admin" }), scope),
  );
  const createForm = form(
    [
      { label: "tenant", name: "tenant", attrs: { required: true, id: "key-tenant" } },
      { label: "name", name: "name", attrs: { required: true, id: "key-name" } },
      { label: "scopes", input: el("span", {}, scopeBoxes) },
      { label: "expires at (RFC 3339)", name: "expires_at", attrs: {} },
      { label: "rate limit / min", name: "rate_limit_per_minute", attrs: { type: "number", min: 1 } },
    ],
    "Create key",
    async (values) => {
      const body = { tenant: values.tenant, name: values.name, scopes: values._all.getAll("scopes") };
      if (values.expires_at) body.expires_at = values.expires_at;
      if (values.rate_limit_per_minute) body.rate_limit_per_minute = Number(values.rate_limit_per_minute);
      const key = await act(`Create key for ${values.tenant}`, () => api("POST", "/admin/keys", body));
      if (key) showSecret(key);
    },
    { id: "key-create" },
  );
  return [
    el("h2", {}, "Tenants"),
    table(
      [
        ["Tenant", (t) => el("span", { class: "tenant" }, t.name)],
        ["Files / quota", (t) => `${t.used_files} / ${t.max_files ?? "—"}`],
        ["Bytes / quota", (t) => `${size(t.used_bytes)} / ${size(t.max_bytes)}`],
        [
          "Set quota",
          (t) =>
            form(
              [
                { label: "max bytes", name: "max_bytes", attrs: { type: "number", min: 0, value: t.max_bytes ?? "" } },
                { label: "max files", name: "max_files", attrs: { type: "number", min: 0, value: t.max_files ?? "" } },
              ],
              "Save",
              (values) =>
                act(`Quota of ${t.name}`, () =>
                  api("PUT", `/admin/tenants/${encodeURIComponent(t.name)}/quota`, {
                    max_bytes: values.max_bytes === "" ? null : Number(values.max_bytes),
                    max_files: values.max_files === "" ? null : Number(values.max_files),
                  }),
                ),
            ),
        ],
      ],
      tenantList.data,
    ),
    el("h2", {}, "Keys"),
    createForm,
    created,
    table(
      [
        ["Key", (k) => el("code", {}, k.id)],
        ["Tenant", (k) => names.get(k.tenant_id) || k.tenant_id],
        ["Name", (k) => k.name],
        ["Scopes", (k) => (Array.isArray(k.scopes) ? k.scopes.join(" ") : k.scopes)],
        ["Expires", (k) => when(k.expires_at)],
        ["Last used", (k) => when(k.last_used_at)],
        ["Status", (k) => (k.revoked_at ? "revoked" : "active")],
        [
          "",
          (k) =>
            k.revoked_at
              ? ""
              : el(
                  "span",
                  { class: "actions" },
                  el("button", { type: "button", onclick: async () => { const r = await act(`Rotate ${k.id}`, () => api("POST", `/admin/keys/${k.id}/rotate`, {})); if (r) showSecret(r); } }, "Rotate"),
                  el("button", { type: "button", class: "danger", onclick: () => act(`Revoke ${k.id}`, () => api("DELETE", `/admin/keys/${k.id}`)) }, "Revoke"),
                ),
        ],
      ],
      keyList.data,
      (k) => ({ "data-key": k.id }),
    ),
  ];
}

// A new secret is shown once, outside the redrawn view, until the operator dismisses it.
function showSecret(key) {
  const box = el(
    "div",
    { class: "secret", id: "new-secret" },
    el("p", {}, `New key ${key.id}: copy it now, it is not shown again.`),
    el("code", {}, key.key || "(not shown: replayed answer)"),
    el("button", { type: "button", onclick: () => box.remove() }, "Done"),
  );
  $("new-secret")?.remove();
  $("notice").after(box);
}

async function breakers() {
  const providers = await api("GET", "/admin/providers");
  return [
    el("h2", {}, "Circuit breakers"),
    table(
      [
        ["Provider", (p) => p.provider],
        ["State", breakerCell],
        ["Failures", (p) => p.breaker.failure_count],
        ["Last error", (p) => p.breaker.last_error || "—"],
        ["Shared via", (p) => p.breaker.storage + (p.breaker.degraded ? " (degraded)" : "")],
        [
          "",
          (p) =>
            el(
              "span",
              { class: "actions" },
              ["open", "close", "reset"].map((action) =>
                el(
                  "button",
                  { type: "button", onclick: () => act(`${action} ${p.provider}`, () => api("POST", `/admin/providers/${p.provider}/breaker`, { action })) },
                  action,
                ),
              ),
            ),
        ],
      ],
      providers.data,
      (p) => ({ "data-provider": p.provider }),
    ),
  ];
}

const VIEWS = { overview, files, jobs, audit: auditView, tenants, breakers };

// ---- shell ----------------------------------------------------------------------------------

let rendering = null;

async function render() {
  if (!state.csrf) return;
  const name = VIEWS[location.hash.slice(1)] ? location.hash.slice(1) : "overview";
  state.view = name;
  for (const link of document.querySelectorAll("#nav a")) link.classList.toggle("current", link.dataset.view === name);
  const drawing = (async () => {
    try {
      const parts = await VIEWS[name]();
      if (state.view === name && state.csrf) $("view").replaceChildren(...parts.flat());
    } catch (error) {
      if (error.status !== 401) notify(error.message, "error");
    }
  })();
  rendering = drawing;
  await drawing;
}

function schedule() {
  clearInterval(state.timer);
  state.timer = setInterval(() => {
    // Live views refresh on their own, unless the operator is typing into a form there.
    if (LIVE_VIEWS.has(state.view) && !document.activeElement?.closest("form")) render();
  }, REFRESH_MS);
}

function signedIn(session) {
  state.csrf = session.csrf_token;
  state.operator = session.operator;
  $("operator-name").textContent = `${session.operator} (until ${when(session.expires_at)})`;
  $("sign-in").hidden = true;
  for (const id of ["nav", "operator", "view"]) $(id).hidden = false;
  schedule();
  render();
}

function signedOut(message) {
  state.csrf = null;
  state.operator = null;
  clearInterval(state.timer);
  $("view").replaceChildren();
  $("new-secret")?.remove();
  for (const id of ["nav", "operator", "view"]) $(id).hidden = true;
  $("sign-in").hidden = false;
  notify(message || "", message ? "error" : "info");
}

$("sign-in-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const input = $("sign-in-key");
  try {
    const session = await api("POST", "/console/session", { key: input.value });
    input.value = "";
    notify("");
    signedIn(session);
  } catch (error) {
    input.value = "";
    notify(`Sign-in refused: ${error.message}`, "error");
  }
});

$("sign-out").addEventListener("click", async () => {
  try {
    await api("DELETE", "/console/session");
  } finally {
    signedOut("");
  }
});

window.addEventListener("hashchange", () => {
  notify("");
  render();
});

api("GET", "/console/session").then(signedIn, () => signedOut(""));
