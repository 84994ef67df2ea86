// Slipway's web console: one page over the same API the CLI uses, signed in with a
// session cookie; every change sends the session's CSRF token. No framework, no CDN.
"use strict";

let csrf = null;
let platform = null;
let timers = [];
let streams = [];

const CPUS = [[256, "0.25 vCPU"], [512, "0.5 vCPU"], [1024, "1 vCPU"], [2048, "2 vCPU"], [4096, "4 vCPU"]];
const MEMORY = {
  256: [512, 1024, 2048],
  512: [1024, 2048, 3072, 4096],
  1024: [2048, 3072, 4096, 5120, 6144, 7168, 8192],
  2048: Array.from({ length: 13 }, (_, i) => (i + 4) * 1024),
  4096: Array.from({ length: 23 }, (_, i) => (i + 8) * 1024),
};

// h("div", {class: "x", onclick: f}, "text", child...): an element; strings become text.
function h(tag, attrs, ...kids) {
  const el = document.createElementNS(
    tag === "svg" || tag === "polyline" || tag === "line" ? "http://www.w3.org/2000/svg" : "http://www.w3.org/1999/xhtml",
    tag,
  );
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const kid of kids.flat(Infinity)) {
    if (kid === null || kid === undefined || kid === false) continue;
    el.append(kid instanceof Node ? kid : document.createTextNode(String(kid)));
  }
  return el;
}

class ApiError extends Error {
  constructor(status, body) {
    const e = (body && body.error) || {};
    super(e.message || `HTTP ${status}`);
    this.status = status;
    this.field = e.field || null;
    this.code = e.code || null;
  }
}

async function api(method, path, body) {
  const opts = { method, credentials: "same-origin", headers: {} };
  if (method !== "GET") opts.headers["x-csrf-token"] = csrf || "";
  if (body !== undefined) {
    opts.headers["content-type"] = "application/json";
    opts.body = JSON.stringify(body);
  }
  const r = await fetch(path, opts);
  const text = await r.text();
  let v = null;
  try { v = text ? JSON.parse(text) : null; } catch (_) { v = text; }
  if (r.status === 401 && path !== "/console/login") { signinView(); throw new ApiError(401, v); }
  if (!r.ok) throw new ApiError(r.status, v);
  return v;
}

function stopAll() {
  timers.forEach(clearInterval);
  timers = [];
  streams.forEach((s) => s.close());
  streams = [];
}

function every(ms, f) {
  f();
  timers.push(setInterval(f, ms));
}

function main(...kids) {
  const m = document.getElementById("main");
  m.replaceChildren(...kids);
}

function badge(text) {
  const cls = String(text).split(" ")[0].replace(/[^a-z_]/g, "");
  return h("span", { class: `badge ${cls}`, "data-testid": "status" }, text);
}

function when(ms) {
  if (!ms) return "-";
  return new Date(ms).toLocaleString();
}

function notice(msg, isError) {
  return h("p", { class: isError ? "error" : "muted", "data-testid": isError ? "error" : "notice" }, msg);
}

// ---------------------------------------------------------------- sign-in

function signinView(message) {
  stopAll();
  document.getElementById("nav").hidden = true;
  const token = h("input", { type: "password", id: "token", autocomplete: "current-password", "data-testid": "token" });
  const err = h("div", { class: "field-error" }, message || "");
  const form = h("form", {
    class: "card signin", "data-testid": "signin",
    onsubmit: async (e) => {
      e.preventDefault();
      err.textContent = "";
      try {
        const v = await api("POST", "/console/login", { token: token.value });
        csrf = v.csrf;
        await start();
      } catch (x) { err.textContent = x.message; }
    },
  },
  h("h1", {}, "Sign in to Slipway"),
  h("label", { for: "token" }, "Admin token (the token file in slipway serve's data directory)"),
  token, err,
  h("p", {}, h("button", { class: "primary", type: "submit", "data-testid": "signin-submit" }, "Sign in")));
  main(form);
  token.focus();
}

async function start() {
  try {
    const s = await fetch("/console/session", { credentials: "same-origin" });
    if (!s.ok) return signinView();
    csrf = (await s.json()).csrf;
    platform = await api("GET", "/v1/platform");
  } catch (_) { return; }
  document.getElementById("nav").hidden = false;
  route();
}

async function signout() {
  try { await api("POST", "/console/logout"); } catch (_) { /* signed out anyway */ }
  csrf = null;
  signinView("Signed out.");
}

// ---------------------------------------------------------------- services list

function listView() {
  const body = h("tbody", {});
  const table = h("div", { class: "card scroll" },
    h("table", { "data-testid": "services" },
      h("thead", {}, h("tr", {}, ["Service", "Status", "URL", "Revision", "Instances", "Requests/s"].map((t) => h("th", {}, t)))),
      body));
  main(h("h1", {}, "Services", h("a", { class: "button", href: "#/new" }, "Create service")), table);
  every(3000, async () => {
    let list;
    try { list = await api("GET", "/v1/services"); } catch (_) { return; }
    const rows = await Promise.all(list.map(async (s) => {
      let rps = "-";
      try {
        const m = await api("GET", `/v1/services/${encodeURIComponent(s.name)}/metrics?period=1h`);
        const last = m.points[m.points.length - 1];
        if (last) rps = (last.requests / m.resolution_s).toFixed(1);
      } catch (_) { /* none yet */ }
      return h("tr", { "data-service": s.name },
        h("td", {}, h("a", { href: `#/s/${encodeURIComponent(s.name)}` }, s.name)),
        h("td", {}, badge(s.status)),
        h("td", {}, h("a", { href: s.url, target: "_blank", rel: "noopener" }, s.url)),
        h("td", {}, s.active_revision ?? "-"),
        h("td", {}, `${s.instances.ready} ready${s.instances.paused ? `, ${s.instances.paused} warm` : ""}`),
        h("td", {}, rps));
    }));
    body.replaceChildren(...(rows.length ? rows : [h("tr", {}, h("td", { colspan: 6, class: "muted" }, "No services yet."))]));
  });
}

// ---------------------------------------------------------------- create

function field(label, input, name) {
  return h("div", { "data-field": name },
    h("label", { for: input.id }, label), input,
    h("div", { class: "field-error", "data-error-for": name }));
}

function createView() {
  const inp = (id, attrs) => h("input", { id, name: id, ...attrs });
  const name = inp("name", { required: true, placeholder: "web", "data-testid": "create-name" });
  const kind = h("select", { id: "source", "data-testid": "create-source" },
    h("option", { value: "git" }, "git push"),
    h("option", { value: "watch" }, "watch a branch"),
    h("option", { value: "image" }, "image"));
  const url = inp("source.url", { placeholder: "https://git.example.com/org/app.git" });
  const branch = inp("source.branch", { value: "main" });
  const image = inp("source.image", { placeholder: "myapp:latest", "data-testid": "create-image" });
  const port = inp("port", { type: "number", value: "8080", "data-testid": "create-port" });
  const cpu = h("select", { id: "cpu" }, CPUS.map(([v, t]) => h("option", { value: v, selected: v === 1024 }, t)));
  const memory = h("select", { id: "memory" });
  const fillMemory = () => {
    const keep = memory.value;
    memory.replaceChildren(...MEMORY[cpu.value].map((m) => h("option", { value: m, selected: String(m) === keep || (!keep && m === 2048) }, `${m / 1024} GB`)));
  };
  cpu.addEventListener("change", fillMemory);
  fillMemory();
  const env = h("textarea", { id: "env", placeholder: "KEY=value, one per line" });
  const minSize = inp("scaling.min_size", { type: "number", value: "1" });
  const maxSize = inp("scaling.max_size", { type: "number", value: "25" });
  const conc = inp("scaling.max_concurrency", { type: "number", value: "100" });
  const proto = h("select", { id: "health_check.protocol" }, h("option", { value: "tcp" }, "TCP"), h("option", { value: "http" }, "HTTP"));
  const path = inp("health_check.path", { value: "/" });
  const status = h("div", {});
  const sourceBox = h("div", {});
  const showSource = () => {
    sourceBox.replaceChildren(
      kind.value === "watch" ? h("div", { class: "row" }, field("Repository URL", url, "source.url"), field("Branch", branch, "source.branch")) : "",
      kind.value === "git" ? h("div", { class: "row" }, field("Branch that deploys", branch, "source.branch")) : "",
      kind.value === "image" ? field("Image", image, "source.image") : "");
  };
  kind.addEventListener("change", showSource);
  showSource();
  const form = h("form", {
    class: "card", "data-testid": "create-form",
    onsubmit: async (e) => {
      e.preventDefault();
      form.querySelectorAll("[data-error-for]").forEach((el) => { el.textContent = ""; });
      status.replaceChildren();
      const spec = {
        name: name.value.trim(),
        port: Number(port.value),
        cpu: Number(cpu.value),
        memory: Number(memory.value),
        env: Object.fromEntries(env.value.split("\n").map((l) => l.trim()).filter(Boolean).map((l) => {
          const i = l.indexOf("=");
          return i < 0 ? [l, ""] : [l.slice(0, i), l.slice(i + 1)];
        })),
        scaling: { min_size: Number(minSize.value), max_size: Number(maxSize.value), max_concurrency: Number(conc.value) },
        health_check: { protocol: proto.value, ...(proto.value === "http" ? { path: path.value } : {}) },
      };
      if (kind.value === "image") spec.source = { type: "image", image: image.value.trim() };
      else if (kind.value === "watch") spec.source = { type: "git", url: url.value.trim(), branch: branch.value.trim() };
      else spec.source = { type: "git", branch: branch.value.trim() };
      try {
        await api("POST", "/v1/services", spec);
        location.hash = `#/s/${encodeURIComponent(spec.name)}`;
      } catch (x) {
        const f = x.field && (form.querySelector(`[data-error-for="${CSS.escape(x.field)}"]`)
          || form.querySelector(`[data-error-for="${CSS.escape(x.field.split(".")[0])}"]`));
        if (f) f.textContent = x.message;
        status.replaceChildren(notice(x.message, true));
      }
    },
  },
  h("h2", {}, "Source"),
  h("div", { class: "row" }, field("Service name", name, "name"), field("Source", kind, "source")),
  sourceBox,
  h("h2", {}, "Instance"),
  h("div", { class: "row" }, field("Port", port, "port"), field("CPU", cpu, "cpu"), field("Memory", memory, "memory")),
  field("Environment", env, "env"),
  h("h2", {}, "Scaling and health"),
  h("div", { class: "row" }, field("Min instances", minSize, "scaling.min_size"), field("Max instances", maxSize, "scaling.max_size"),
    field("Max concurrency", conc, "scaling.max_concurrency")),
  h("div", { class: "row" }, field("Health check", proto, "health_check.protocol"), field("HTTP path", path, "health_check.path")),
  status,
  h("p", {}, h("button", { class: "primary", type: "submit", "data-testid": "create-submit" }, "Create")));
  main(h("h1", {}, "Create service"), form);
}

// ---------------------------------------------------------------- a service

function chart(points, series, res) {
  const W = 600, H = 120;
  const svg = h("svg", { class: "chart", viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: "none", role: "img" });
  if (!points.length) return svg;
  const xs = points.map((p) => p.at_ms);
  const x0 = Math.min(...xs), x1 = Math.max(...xs) || x0 + 1;
  const max = Math.max(1e-9, ...points.flatMap((p) => series.map(([f]) => f(p, res) || 0)));
  series.forEach(([f], i) => {
    const pts = points.map((p) => {
      const x = x1 === x0 ? W : ((p.at_ms - x0) / (x1 - x0)) * W;
      const y = H - 4 - ((f(p, res) || 0) / max) * (H - 8);
      return `${x.toFixed(1)},${y.toFixed(1)}`;
    }).join(" ");
    svg.append(h("polyline", { points: pts, fill: "none", class: `l${i + 1}`, "stroke-width": 2 }));
  });
  return svg;
}

function legend(series, points, res) {
  const last = points[points.length - 1];
  return h("div", { class: "legend" }, series.map(([f, name], i) =>
    h("span", { class: `k${i + 1}` }, `${name}: ${last && f(last, res) != null ? Number(f(last, res)).toFixed(1) : "-"}`)));
}

function serviceView(name) {
  const enc = encodeURIComponent(name);
  const title = h("h1", {}, name);
  const head = h("div", { class: "card" });
  const deps = h("div", { class: "card scroll" });
  const activity = h("pre", { class: "log", "data-testid": "activity" });
  const build = h("pre", { class: "log", "data-testid": "build-log" });
  const applog = h("pre", { class: "log", "data-testid": "app-logs" });
  const charts = h("div", { "data-testid": "metrics" });
  const domains = h("div", {});
  const secrets = h("div", {});
  const settings = h("div", {});
  const out = h("div", {});
  const act = async (what, f) => {
    out.replaceChildren(notice(`${what}…`));
    try { const v = await f(); out.replaceChildren(notice(`${what}: done${v && v.revision ? ` (revision ${v.revision})` : ""}`)); refresh(); }
    catch (x) { out.replaceChildren(notice(`${what}: ${x.message}`, true)); }
  };
  let svc = null;
  let revisions = [];
  const refresh = async () => {
    try {
      svc = await api("GET", `/v1/services/${enc}`);
      revisions = await api("GET", `/v1/services/${enc}/revisions`);
    } catch (_) { return; }
    title.replaceChildren(name, badge(svc.status));
    const src = svc.spec.source;
    const srcText = src.type === "image" ? `image ${src.image}` : src.url ? `branch ${src.branch} of ${src.url}` : `git push to ${src.branch}`;
    const latest = revisions[0];
    // The choice survives the refresh that rebuilds the list.
    const chosen = head.querySelector('[data-testid="rollback-revision"]');
    const keep = chosen ? chosen.value : null;
    const rollbackTo = h("select", { "data-testid": "rollback-revision" },
      revisions.filter((r) => r.number !== svc.active_revision).map((r) =>
        h("option", { value: r.number, selected: String(r.number) === keep }, `revision ${r.number}`)));
    head.replaceChildren(
      h("p", {}, h("a", { href: svc.url, target: "_blank", rel: "noopener", "data-testid": "service-url" }, svc.url)),
      h("p", { class: "muted small" }, `Source: ${srcText}`, latest && latest.commit ? ` · latest commit ${latest.commit.slice(0, 12)}` : "",
        ` · revision ${svc.active_revision ?? "-"} · ${svc.instances.ready} ready`),
      svc.git_remote ? h("p", { class: "small" }, "git remote: ", h("code", {}, svc.git_remote)) : "",
      h("div", { class: "actions" },
        h("button", { type: "button", "data-testid": "deploy", onclick: () => act("Deploy", () => api("POST", `/v1/services/${enc}/deploy`)) }, "Deploy"),
        svc.paused
          ? h("button", { type: "button", "data-testid": "resume", onclick: () => act("Resume", () => api("POST", `/v1/services/${enc}/resume`)) }, "Resume")
          : h("button", { type: "button", "data-testid": "pause", onclick: () => act("Pause", () => api("POST", `/v1/services/${enc}/pause`)) }, "Pause"),
        rollbackTo,
        h("button", { type: "button", "data-testid": "rollback", disabled: !rollbackTo.options.length,
          onclick: () => act("Roll back", () => api("POST", `/v1/services/${enc}/rollback`, { revision: Number(rollbackTo.value) })) }, "Roll back"),
        h("button", { type: "button", class: "danger", "data-testid": "delete", onclick: () => {
          if (confirm(`Delete ${name} and its instances?`)) act("Delete", async () => { await api("DELETE", `/v1/services/${enc}`); location.hash = "#/"; });
        } }, "Delete")),
      out);
    const list = await api("GET", `/v1/services/${enc}/deployments`).catch(() => []);
    // Each deployment's steps (the newest one's open unless closed); an open list is
    // read again at every refresh, and at once when the activity stream has a step.
    if (list.length && !opened.has(list[0].id) && !closed.has(list[0].id)) opened.add(list[0].id);
    const steps = await Promise.all(list.filter((d) => opened.has(d.id)).map(async (d) =>
      [d.id, await api("GET", `/v1/services/${enc}/events?deployment=${d.id}&limit=1000`).catch(() => [])]));
    const stepsOf = new Map(steps);
    const toggle = (id) => {
      if (opened.has(id)) { opened.delete(id); closed.add(id); } else { opened.add(id); closed.delete(id); }
      refresh();
    };
    deps.replaceChildren(h("h2", {}, "Deployments"), h("table", { "data-testid": "deployments" },
      h("thead", {}, h("tr", {}, ["#", "Revision", "Kind", "State", "Reason", "Updated", ""].map((t) => h("th", {}, t)))),
      h("tbody", {}, list.map((d) => [h("tr", { "data-deployment": d.id }, h("td", {}, d.id), h("td", {}, d.revision), h("td", {}, d.kind),
        h("td", {}, badge(d.state)), h("td", { class: "small" }, d.reason), h("td", { class: "small" }, when(d.updated_ms)),
        h("td", {}, h("button", { type: "button", class: "small", "data-testid": `steps-toggle-${d.id}`, onclick: () => toggle(d.id) },
          opened.has(d.id) ? "Hide steps" : "Steps"))),
      stepsOf.has(d.id) ? h("tr", { class: "steps" }, h("td", { colspan: 7 },
        h("ol", { class: "steps small", "data-testid": `steps-${d.id}` }, stepsOf.get(d.id).length
          ? stepsOf.get(d.id).map((e) => h("li", {}, h("span", { class: "muted" }, `${when(e.at_ms)} `), e.message))
          : h("li", { class: "muted" }, "No steps recorded yet.")))) : null]))));
    await drawBuild();
  };
  // Builds: any of the latest, its output searchable, read again each second while it runs.
  const opened = new Set();
  const closed = new Set();
  let builds = [];
  const buildPick = h("select", { "data-testid": "build-pick" });
  const buildSearch = h("input", { placeholder: "find in the build's output", "data-testid": "build-search" });
  // A running build's output arrives as server-sent events while no search is on.
  let live = null;
  const running = (b) => b.state === "running" || b.state === "queued";
  const streamBuild = (b) => {
    if (live && live.id === b.id) return;
    if (live) live.es.close();
    const es = new EventSource(`/v1/services/${enc}/builds/${b.id}/stream`);
    let text = "";
    es.onmessage = (e) => {
      text += JSON.parse(e.data).text;
      if (!buildSearch.value && String(b.id) === buildPick.value) {
        build.textContent = `build ${b.id} of ${b.commit} (running)\n${text}`;
        build.scrollTop = build.scrollHeight;
      }
    };
    es.addEventListener("end", () => { es.close(); live = null; drawBuild(); });
    live = { id: b.id, es };
    streams.push(es);
  };
  const drawBuild = async () => {
    builds = await api("GET", `/v1/services/${enc}/builds`).catch(() => builds);
    const keep = buildPick.value;
    buildPick.replaceChildren(...builds.map((b, i) => h("option", { value: b.id, selected: keep ? String(b.id) === keep : i === 0 },
      `build ${b.id} of ${b.commit.slice(0, 12)} (${b.state})`)));
    const b = builds.find((x) => String(x.id) === buildPick.value) || builds[0];
    if (!b) { build.textContent = "No builds."; return; }
    const needle = buildSearch.value.toLowerCase();
    if (running(b) && !needle) { streamBuild(b); return; }
    const lines = b.log.split("\n").filter((l) => !needle || l.toLowerCase().includes(needle));
    build.textContent = `build ${b.id} of ${b.commit} (${b.state})${needle ? `: ${lines.length} line(s) holding "${buildSearch.value}"` : ""}\n${lines.join("\n")}`;
  };
  buildPick.addEventListener("change", drawBuild);
  buildSearch.addEventListener("input", drawBuild);
  // A search over a running build reads it again each second (the stream shows it all).
  timers.push(setInterval(() => { if (buildSearch.value && builds.some(running)) drawBuild(); }, 1000));
  // Charts.
  const period = h("select", { "data-testid": "metrics-period" }, ["1h", "6h", "24h", "7d"].map((p) => h("option", { value: p }, p)));
  const drawCharts = async () => {
    let m;
    try { m = await api("GET", `/v1/services/${enc}/metrics?period=${period.value}`); } catch (_) { return; }
    const pts = m.points, res = m.resolution_s;
    const groups = [
      ["Requests/s", [[(p, r) => p.requests / r, "req/s"]]],
      ["Latency (ms)", [[(p) => p.p50_ms, "p50"], [(p) => p.p99_ms, "p99"]]],
      ["Responses", [[(p) => p.s2xx, "2xx"], [(p) => p.s5xx, "5xx"], [(p) => p.s4xx, "4xx"]]],
      ["Active instances", [[(p) => p.instances, "instances"]]],
    ];
    charts.replaceChildren(h("div", { class: "grid" }, groups.map(([t, s]) =>
      h("div", {}, h("h2", {}, t), chart(pts, s, res), legend(s, pts, res)))),
    h("p", { class: "muted small", "data-testid": "metrics-points" }, `${pts.length} points at ${res} s`));
  };
  period.addEventListener("change", drawCharts);
  // Logs: live, and searchable by text and time range.
  const search = h("input", { placeholder: "search the app's logs", "data-testid": "log-search" });
  const range = h("select", { "data-testid": "log-range" },
    [["", "any time"], ["900", "last 15 minutes"], ["3600", "last hour"], ["86400", "last 24 hours"], ["604800", "last 7 days"]]
      .map(([v, t]) => h("option", { value: v }, t)));
  // The range's end: empty is now.
  const until = h("input", { type: "datetime-local", title: "until (empty: now)", "data-testid": "log-until" });
  const logLine = (l) => h("span", { class: l.stream === "stderr" ? "err" : "" }, `${when(l.at_ms)} r${l.revision} ${l.line}\n`);
  const follow = () => {
    const es = new EventSource(`/v1/services/${enc}/logs/stream`);
    es.onmessage = (e) => {
      // While a search or a past range shows its results, live lines wait (clearing
      // them shows all).
      if (search.value || until.value) return;
      applog.append(logLine(JSON.parse(e.data)));
      applog.scrollTop = applog.scrollHeight;
    };
    streams.push(es);
  };
  const findLogs = async () => {
    const end = until.value ? new Date(until.value).getTime() : Date.now();
    const since = range.value ? `&since=${end - Number(range.value) * 1000}` : "";
    const upTo = until.value ? `&until=${end}` : "";
    const rows = await api("GET", `/v1/services/${enc}/logs?limit=5000&q=${encodeURIComponent(search.value)}${since}${upTo}`).catch(() => []);
    applog.replaceChildren(...(rows.length ? rows.map(logLine) : [h("span", { class: "muted" }, "No lines match.\n")]));
  };
  search.addEventListener("keydown", (e) => { if (e.key === "Enter") findLogs(); });
  // A cleared search shows every line again, those that came meanwhile included.
  search.addEventListener("input", () => { if (!search.value) findLogs(); });
  range.addEventListener("change", findLogs);
  until.addEventListener("change", findLogs);
  // The activity log, live (server-sent events).
  const events = new EventSource(`/v1/services/${enc}/events/stream`);
  events.onmessage = (e) => {
    const ev = JSON.parse(e.data);
    activity.append(`${when(ev.at_ms)} ${ev.kind}: ${ev.message}\n`);
    activity.scrollTop = activity.scrollHeight;
    if (ev.kind === "deployment" || ev.kind === "service" || ev.kind === "build") refresh();
  };
  streams.push(events);
  // Domains.
  const drawDomains = async () => {
    const list = await api("GET", `/v1/services/${enc}/domains`).catch(() => []);
    const input = h("input", { placeholder: "www.example.com", "data-testid": "domain-input" });
    const err = h("div", { class: "field-error" });
    domains.replaceChildren(h("div", { class: "card" }, h("h2", {}, "Custom domains"),
      list.map((d) => h("div", { "data-domain": d.domain },
        h("p", {}, h("strong", {}, d.domain), " ", badge(d.state), " ", h("span", { class: "muted small" }, d.reason)),
        h("p", { class: "muted small" }, `Certificate: ${d.certificate}`),
        h("table", {}, h("tbody", {}, d.records.map((r) => h("tr", {}, h("td", {}, r.type), h("td", {}, h("code", {}, r.name)), h("td", {}, h("code", {}, r.value)))))),
        h("p", {}, h("button", { type: "button", class: "danger", onclick: async () => {
          await api("DELETE", `/v1/services/${enc}/domains/${encodeURIComponent(d.domain)}`).catch((x) => { err.textContent = x.message; });
          drawDomains();
        } }, "Remove")))),
      h("form", { class: "actions", onsubmit: async (e) => {
        e.preventDefault();
        err.textContent = "";
        try { await api("POST", `/v1/services/${enc}/domains`, { domain: input.value.trim() }); drawDomains(); }
        catch (x) { err.textContent = x.message; }
      } }, input, h("button", { type: "submit", "data-testid": "domain-add" }, "Add domain")), err));
  };
  // Secrets: names only; values go in and never come back.
  const drawSecrets = async () => {
    const list = await api("GET", `/v1/services/${enc}/secrets`).catch(() => []);
    const key = h("input", { placeholder: "DB_PASSWORD", "data-testid": "secret-name" });
    const value = h("input", { type: "password", autocomplete: "off", placeholder: "value", "data-testid": "secret-value" });
    const err = h("div", { class: "field-error" });
    secrets.replaceChildren(h("div", { class: "card" }, h("h2", {}, "Secrets"),
      h("table", { "data-testid": "secrets" }, h("tbody", {}, list.map((s) => h("tr", {}, h("td", {}, s.name), h("td", { class: "small muted" }, `set ${when(s.set_ms)}`),
        h("td", {}, h("button", { type: "button", class: "danger", onclick: () => act(`Unset ${s.name}`, async () => { const v = await api("DELETE", `/v1/services/${enc}/secrets/${encodeURIComponent(s.name)}`); drawSecrets(); return v; }) }, "Unset")))))),
      h("form", { class: "actions", onsubmit: async (e) => {
        e.preventDefault();
        err.textContent = "";
        try {
          await api("PUT", `/v1/services/${enc}/secrets/${encodeURIComponent(key.value.trim())}`, { value: value.value });
          value.value = "";
          drawSecrets();
        } catch (x) { err.textContent = x.message; }
      } }, key, value, h("button", { type: "submit", "data-testid": "secret-set" }, "Set secret")), err));
  };
  // Settings: the editable part of the spec, as JSON (a merge patch on save).
  const drawSettings = async () => {
    if (!svc) await refresh();
    if (!svc) return;
    const { env, port, cpu, memory, scaling, network, health_check, auto_deploy, logs_max_bytes } = svc.spec;
    const text = h("textarea", { rows: 14, "data-testid": "settings-json" }, JSON.stringify({ env, port, cpu, memory, scaling, network, health_check, auto_deploy, logs_max_bytes }, null, 2));
    const err = h("div", { class: "field-error", "data-testid": "settings-error" });
    settings.replaceChildren(h("div", { class: "card" }, h("h2", {}, "Settings"), text, err,
      h("p", {}, h("button", { type: "button", "data-testid": "settings-save", onclick: async () => {
        err.textContent = "";
        let patch;
        try { patch = JSON.parse(text.value); } catch (x) { err.textContent = `not JSON: ${x.message}`; return; }
        act("Save settings", () => api("PATCH", `/v1/services/${enc}`, patch).catch((x) => { err.textContent = `${x.field ? `${x.field}: ` : ""}${x.message}`; throw x; }));
      } }, "Save"))));
  };
  main(title, head, deps,
    h("div", { class: "card" }, h("h2", {}, "Metrics ", period), charts),
    h("div", { class: "grid" },
      h("div", { class: "card" }, h("h2", {}, "Activity"), activity),
      h("div", { class: "card" }, h("h2", {}, "Builds"), h("div", { class: "actions" }, buildPick, buildSearch), build)),
    h("div", { class: "card" }, h("h2", {}, "Application logs"), h("div", { class: "actions" }, search, range, until), applog),
    domains, secrets, settings);
  every(3000, refresh);
  every(10000, drawCharts);
  follow();
  drawDomains();
  drawSecrets();
  drawSettings();
}

// ---------------------------------------------------------------- routing

function route() {
  stopAll();
  if (!csrf) return signinView();
  const hash = location.hash || "#/";
  if (hash === "#/new") return createView();
  const m = hash.match(/^#\/s\/(.+)$/);
  if (m) return serviceView(decodeURIComponent(m[1]));
  return listView();
}

window.addEventListener("hashchange", route);
window.addEventListener("DOMContentLoaded", () => {
  document.getElementById("signout").addEventListener("click", signout);
  start();
});
