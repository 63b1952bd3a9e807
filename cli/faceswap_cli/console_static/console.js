// The jobs console's page: three views on hash routes (#/ jobs, #/jobs/<id> a job, #/submit), talking only to the
// console on its own origin (/api/...). Every value from a job is put in the page as text, never as markup.
"use strict";

const STATES = ["RECEIVED", "SUBMITTED", "SUCCEEDED", "FAILED", "TIMED_OUT"];
const TERMINAL = new Set(["SUCCEEDED", "FAILED", "TIMED_OUT"]);
const LIST_REFRESH_MS = 2000;
const IDLE_REFRESH_MS = 10000; // every job shown has ended: new ones are looked for less often
const JOB_REFRESH_MS = 1500;

const SESSION_KEY = "faceswap-console-session";
let session = "";
let providers = [];
let uploadTypes = []; // what POST /uploads grants (the console's /api/providers says)
let timer = null;
let generation = 0; // which view's refresh is current: an answer that arrives after the view changed is dropped

// ------------------------------------------------------------------------------------------------ helpers

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
    else if (name === "dataset") Object.assign(el.dataset, value);
    else el.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

async function api(method, path, body, headers) {
  const init = { method, headers: { ...(headers || {}), "X-Console-Session": session }, credentials: "omit" };
  if (body !== undefined) {
    if (body instanceof Blob) init.body = body;
    else {
      init.body = JSON.stringify(body);
      init.headers["Content-Type"] = "application/json";
    }
  }
  const response = await fetch(path, init);
  let data = null;
  try { data = await response.json(); } catch (e) { data = null; }
  if (!response.ok) {
    const error = new Error((data && data.message) || `${response.status} ${response.statusText}`);
    error.code = (data && data.code) || String(response.status);
    throw error;
  }
  return data;
}

// A file's address for an <img>, <video> or download link, which cannot send the session header: the console
// gives each job's files signed addresses (files[name]); null for a file it does not serve (a URL input).
function file(job, name, view, download) {
  const address = (job.files || {})[name];
  if (!address) return null;
  return address + (view ? `&view=${view}` : "") + (download ? "&download=1" : "");
}

function when(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  return isNaN(d) ? iso : d.toLocaleString();
}

function took(job) {
  if (!job.finished_at) return "";
  const seconds = (new Date(job.finished_at) - new Date(job.created_at)) / 1000;
  return seconds < 120 ? `${seconds.toFixed(1)} s` : `${(seconds / 60).toFixed(1)} min`;
}

function badge(status) {
  return h("span", { class: `badge ${status.toLowerCase()}`, "data-status": status }, status);
}

function setLive(on) {
  document.getElementById("live").textContent = on ? "● live" : "";
}

function stop() {
  generation += 1;
  if (timer) clearTimeout(timer);
  timer = null;
  setLive(false);
}

// Run fn now and again after ms (or the delay fn returns; false: no more). fn gets current(): false once the
// view has changed, so an answer that arrives late never draws into the view that replaced it.
function every(ms, fn) {
  stop();
  const mine = generation;
  const current = () => mine === generation;
  setLive(true);
  const tick = async () => {
    let next = ms;
    try {
      const answer = await fn(current);
      next = answer === false ? null : typeof answer === "number" ? answer : ms;
    } catch (e) { if (current()) showError(e); }
    if (!current()) return;
    if (next !== null) timer = setTimeout(tick, document.hidden ? next * 5 : next);
    else setLive(false);
  };
  tick();
}

function showError(error) {
  if (error.code === "console_session_required") return signedOut();
  const box = document.getElementById("error");
  if (box) box.replaceChildren(h("strong", {}, error.code || "error"), " ", error.message);
}

function signedOut() {
  stop();
  document.getElementById("main").replaceChildren(h("section", { class: "signed-out" },
    h("h1", {}, "Open the console's link"),
    h("p", {}, "This page needs the link `faceswap console` printed or opened (each link works once). Run ",
      h("code", {}, "faceswap console --no-browser"), " for a new one.")));
  document.body.dataset.loaded = "signed-out";
}

function errorBox(error) {
  if (!error) return null;
  return h("div", { class: "error", "data-code": error.code },
    h("div", {}, h("code", { class: "error-code" }, error.code), error.retryable ? " (retryable)" : ""),
    h("div", { class: "error-message" }, error.message || ""),
    error.what_to_do ? h("div", { class: "what-to-do" }, "What to do: ", error.what_to_do) : null);
}

// The URL a URL input names, or null for an S3 input: the console never fetches someone else's URL, so the page
// names it instead of showing it.
function givenUrl(job, name) {
  const inputs = job.inputs || {};
  const pair = name.match(/^(reference|swap)-(\d+)$/);
  const shown = pair ? ((inputs.face_map || [])[Number(pair[2])] || {})[pair[1] === "swap" ? "swap_image" : "reference"]
    : inputs[name];
  return shown && shown.url ? shown.url : null;
}

function thumb(job, name, label, kind) {
  const url = givenUrl(job, name);
  if (url) return h("figure", { class: "thumb" }, h("div", { class: "placeholder", title: url }, "URL input"), h("figcaption", {}, label));
  const img = h("img", { src: file(job, name, "thumb"), alt: label, "data-file": name });
  img.addEventListener("error", () => img.replaceWith(h("div", { class: "placeholder", title: "the console could not read this file" }, "no preview")));
  return h("figure", { class: "thumb" }, img, h("figcaption", {}, label, kind === "video" ? " ▶" : ""));
}

function pending(label, text) {
  return h("figure", { class: "thumb" }, h("div", { class: "placeholder" }, text), h("figcaption", {}, label));
}

function inputsOf(job) {
  const inputs = job.inputs || {};
  const pairs = inputs.face_map || [];
  const face = inputs.swap_image ? "swap_image" : pairs.length ? "swap-0" : null;
  return { face, pairs };
}

// ------------------------------------------------------------------------------------------------ jobs list

function filtersFromHash() {
  const query = new URLSearchParams(location.hash.split("?")[1] || "");
  return { status: query.get("status") || "", provider: query.get("provider") || "" };
}

function jobRow(job) {
  const { face } = inputsOf(job);
  const video = job.media_type === "video";
  const result = job.status === "SUCCEEDED"
    ? thumb(job, "result", "result", video ? "video" : "image")
    : pending("result", TERMINAL.has(job.status) ? "no result" : "working…");
  return h("tr", { class: "job", dataset: { jobId: job.job_id, status: job.status, provider: job.provider } },
    h("td", { class: "thumbs" },
      thumb(job, "target", video ? "target video" : "target", video ? "video" : "image"),
      face ? thumb(job, face, "swap face") : pending("swap face", "—"),
      result),
    h("td", {}, badge(job.status), h("div", { class: "muted" }, job.task, video ? " · video" : "")),
    h("td", { class: "provider" }, job.provider),
    h("td", {}, h("div", {}, when(job.created_at)), h("div", { class: "muted" }, took(job))),
    h("td", { class: "error-cell" }, errorBox(job.error)),
    h("td", {}, h("a", { href: `#/jobs/${encodeURIComponent(job.job_id)}`, class: "open" }, "open ›")));
}

function signature(job) {
  return [job.status, job.finished_at, job.error && job.error.code].join("|");
}

function renderJobs() {
  const filters = filtersFromHash();
  const statusSelect = h("select", { id: "filter-status", onchange: applyFilters },
    h("option", { value: "" }, "every state"),
    STATES.map((s) => h("option", { value: s, selected: s === filters.status }, s)));
  const providerSelect = h("select", { id: "filter-provider", onchange: applyFilters },
    h("option", { value: "" }, "every provider"),
    providers.map((p) => h("option", { value: p.name, selected: p.name === filters.provider }, p.name)));
  const body = h("tbody", { id: "jobs" });
  const empty = h("p", { id: "empty", class: "muted", hidden: true }, "No jobs match.");
  const more = h("p", { id: "more", class: "muted", hidden: true },
    "Showing the newest jobs; older ones may match too (choose a state to look further back).");
  document.getElementById("main").replaceChildren(
    h("section", { class: "toolbar" }, h("h1", {}, "Jobs"), h("label", {}, "State ", statusSelect),
      h("label", {}, "Provider ", providerSelect), h("a", { class: "button", href: "#/submit" }, "Submit a job")),
    h("div", { id: "error", class: "banner", role: "alert" }),
    h("table", { class: "jobs" },
      h("thead", {}, h("tr", {}, ["target · swap face · result", "state", "provider", "created · took", "error", ""]
        .map((t) => h("th", {}, t)))), body),
    empty, more);
  const shown = new Map();
  every(LIST_REFRESH_MS, async (current) => {
    const query = new URLSearchParams({ limit: "30" });
    if (filters.status) query.set("status", filters.status);
    if (filters.provider) query.set("provider", filters.provider);
    const { jobs, more: older } = await api("GET", `/api/jobs?${query}`);
    if (!current()) return false;
    more.hidden = !older;
    const rows = jobs.map((job) => {
      const known = shown.get(job.job_id);
      if (known && known.signature === signature(job)) return known.row;
      const row = jobRow(job);
      shown.set(job.job_id, { signature: signature(job), row });
      return row;
    });
    body.replaceChildren(...rows);
    empty.hidden = jobs.length > 0;
    document.getElementById("error").replaceChildren();
    document.body.dataset.loaded = "jobs";
    return jobs.some((job) => !TERMINAL.has(job.status)) ? LIST_REFRESH_MS : IDLE_REFRESH_MS;
  });
}

function applyFilters() {
  const query = new URLSearchParams();
  const status = document.getElementById("filter-status").value;
  const provider = document.getElementById("filter-provider").value;
  if (status) query.set("status", status);
  if (provider) query.set("provider", provider);
  location.hash = `#/?${query}`;
}

// ------------------------------------------------------------------------------------------------ one job

function timeline(job) {
  const steps = [{ at: job.created_at, text: `Received (from ${job.source})` }];
  for (const attempt of job.history || []) {
    if (attempt.error) {
      const code = attempt.error.code || attempt.error;
      steps.push({ at: attempt.at, text: `${attempt.provider} failed (${code}): failed over to the next provider`, kind: "failover" });
    } else {
      const part = attempt.part !== undefined ? ` (face map part ${attempt.part})` : "";
      steps.push({ at: attempt.at, text: `Task ${attempt.provider_task_id} made at ${attempt.provider}${part}`, kind: "task" });
    }
  }
  if (job.submitted_at) steps.push({ at: job.submitted_at, text: "Submitted: waiting for the provider" });
  if (job.finished_at) {
    const by = { webhook: "the provider's webhook", check: "a status check" }[job.finished_by];
    const how = by ? ` — answer brought by ${by}` : "";
    steps.push({ at: job.finished_at, text: `${job.status}${job.error ? ` (${job.error.code})` : ""}${how}`, kind: job.finished_by || "end" });
  } else {
    steps.push({ at: job.deadline_at, text: "Deadline (the job ends TIMED_OUT if the provider has not answered)", kind: "deadline" });
  }
  steps.sort((a, b) => String(a.at).localeCompare(String(b.at)));
  return h("ol", { class: "timeline" },
    steps.map((s) => h("li", { class: s.kind || "" }, h("time", {}, when(s.at)), " ", s.text)));
}

function withBoxes(job, figure) {
  const chosen = job.chosen_faces || [];
  if (!chosen.length || !figure.querySelector("img,video")) return figure;
  const frame = h("div", { class: "boxed" }, figure.querySelector("img,video"));
  for (const face of chosen) {
    const [w, hgt] = face.image_size;
    const place = (box, cls, label) => {
      const el = h("div", { class: `box ${cls}` }, label ? h("span", {}, label) : null);
      // Set through the CSSOM: the Content-Security-Policy allows no inline style attribute.
      Object.assign(el.style, {
        left: `${(100 * box[0]) / w}%`, top: `${(100 * box[1]) / hgt}%`,
        width: `${(100 * (box[2] - box[0])) / w}%`, height: `${(100 * (box[3] - box[1])) / hgt}%`,
      });
      frame.append(el);
    };
    for (const other of face.others || []) place(other, "other", "");
    place(face.box, "chosen", `pair ${face.pair} · ${Number(face.similarity).toFixed(0)}%`);
  }
  figure.prepend(frame);
  return figure;
}

function big(job, name, label, video) {
  const url = givenUrl(job, name);
  if (url) return h("figure", { class: "big" }, h("div", { class: "url-input" }, "URL input (not fetched by the console): ", h("code", {}, url)), h("figcaption", {}, label));
  if (video) {
    return h("figure", { class: "big" },
      h("video", { src: file(job, name), controls: true, preload: "metadata", poster: file(job, name, "thumb") }),
      h("figcaption", {}, label));
  }
  return h("figure", { class: "big" }, h("img", { src: file(job, name), alt: label, "data-file": name }),
    h("figcaption", {}, label));
}

function renderJob(jobId) {
  const main = document.getElementById("main");
  main.replaceChildren(h("p", { class: "muted" }, "Loading…"), h("div", { id: "error", class: "banner", role: "alert" }));
  let last = null;
  every(JOB_REFRESH_MS, async (current) => {
    const job = await api("GET", `/api/jobs/${encodeURIComponent(jobId)}`);
    if (!current()) return false;
    const sig = signature(job);
    if (sig !== last) {
      last = sig;
      main.replaceChildren(...jobView(job));
    }
    document.body.dataset.loaded = "job";
    return !TERMINAL.has(job.status);
  });
}

function jobView(job) {
  const video = job.media_type === "video";
  const { pairs } = inputsOf(job);
  const figures = [withBoxes(job, big(job, "target", video ? "target video" : "target", video))];
  const inputs = job.inputs || {};
  const same = (a, b) => a && b && (a.s3_uri || a.url) === (b.s3_uri || b.url);
  // A reference job is a one-pair face map whose swap face is the job's: shown once, in its pair.
  if (inputs.swap_image && !pairs.some((pair) => same(pair.swap_image, inputs.swap_image))) {
    figures.push(big(job, "swap_image", "swap face"));
  }
  pairs.forEach((_, i) => {
    figures.push(big(job, `reference-${i}`, `pair ${i}: reference`));
    figures.push(big(job, `swap-${i}`, `pair ${i}: swap face`));
  });
  if (job.status === "SUCCEEDED") figures.push(big(job, "result", "result", video));
  const actions = h("div", { class: "actions" });
  if (job.status === "SUCCEEDED") {
    actions.append(h("a", { class: "button", id: "download", href: file(job, "result", null, true), download: "" }, "Download the result"));
  }
  if (TERMINAL.has(job.status) && job.status !== "SUCCEEDED" && job.error && job.error.retryable) {
    actions.append(h("button", { id: "retry", onclick: async (event) => {
      event.target.disabled = true;
      try {
        const accepted = await api("POST", `/api/jobs/${encodeURIComponent(job.job_id)}/retry`);
        location.hash = `#/jobs/${encodeURIComponent(accepted.job_id)}`;
      } catch (e) { showError(e); event.target.disabled = false; }
    } }, "Retry"));
  }
  const frames = video && job.status === "SUCCEEDED"
    ? h("section", { class: "frames" }, h("h2", {}, "Before and after (first frame)"),
      h("div", { class: "figures" }, thumb(job, "target", "before"), thumb(job, "result", "after")))
    : null;
  return [
    h("section", { class: "toolbar" }, h("h1", {}, "Job ", h("code", { id: "job-id" }, job.job_id)), badge(job.status),
      h("span", { class: "muted" }, `${job.provider} · ${job.task} · ${job.media_type}`), actions),
    h("div", { id: "error", class: "banner", role: "alert" }),
    job.retry_of ? h("p", {}, "Retry of ", h("a", { href: `#/jobs/${encodeURIComponent(job.retry_of)}` }, job.retry_of)) : null,
    errorBox(job.error),
    h("div", { class: "figures" }, figures),
    frames,
    h("section", {}, h("h2", {}, "Timeline"), timeline(job)),
    h("section", {}, h("h2", {}, "The whole record"), h("pre", { class: "record" }, JSON.stringify(job, null, 2))),
  ].filter(Boolean);
}

// ------------------------------------------------------------------------------------------------ submit

function dropZone(id, label, accept, required) {
  const input = h("input", { type: "file", id, accept, required });
  const zone = h("label", { class: "drop", for: id }, h("strong", {}, label), h("span", { class: "muted name" }, "drop a file here, or choose one"), input);
  const show = () => { zone.querySelector(".name").textContent = input.files[0] ? input.files[0].name : "drop a file here, or choose one"; };
  input.addEventListener("change", show);
  zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (e) => {
    e.preventDefault();
    zone.classList.remove("over");
    input.files = e.dataTransfer.files;
    show();
  });
  return zone;
}

async function upload(fileObject, say) {
  say(`Uploading ${fileObject.name} (${(fileObject.size / 1024).toFixed(0)} KB)…`);
  const type = fileObject.type || "image/jpeg";
  if (uploadTypes.length && !uploadTypes.includes(type)) {
    const error = new Error(`${fileObject.name} is ${type}: the pipeline takes ${uploadTypes.join(", ")}.`);
    error.code = "invalid_request";
    throw error;
  }
  const { s3_key } = await api("PUT", "/api/uploads", fileObject, { "Content-Type": type });
  return { key: s3_key, video: type.startsWith("video/") };
}

function renderSubmit() {
  stop();
  const status = h("p", { id: "submit-status", class: "muted" });
  const say = (text) => { status.textContent = text; };
  const providerSelect = h("select", { id: "provider" }, h("option", { value: "" }, "the stack's default"),
    providers.map((p) => h("option", { value: p.name }, p.name)));
  const taskSelect = h("select", { id: "task" }, h("option", { value: "" }, "face-swap"),
    h("option", { value: "multi-face-swap" }, "multi-face-swap"));
  const form = h("form", { id: "submit-form", onsubmit: async (event) => {
    event.preventDefault();
    const button = form.querySelector("button");
    button.disabled = true;
    try {
      const files = ["target", "swap", "reference"].map((id) => document.getElementById(id).files[0]);
      const uploaded = [];
      for (const f of files) uploaded.push(f ? await upload(f, say) : null);
      const body = {};
      body[uploaded[0].video ? "target_video" : "target_image"] = { s3_key: uploaded[0].key };
      body.swap_image = { s3_key: uploaded[1].key };
      if (uploaded[2]) body.reference = { s3_key: uploaded[2].key };
      if (providerSelect.value) body.provider = providerSelect.value;
      if (taskSelect.value) body.task = taskSelect.value;
      say("Submitting…");
      const accepted = await api("POST", "/api/jobs", body);
      location.hash = `#/jobs/${encodeURIComponent(accepted.job_id)}`;
    } catch (e) {
      say("");
      showError(e);
      button.disabled = false;
    }
  } },
  h("div", { class: "drops" },
    dropZone("target", "Target (image or video)", "image/jpeg,image/png,image/webp,video/mp4,video/quicktime,video/webm", true),
    dropZone("swap", "Swap face", "image/jpeg,image/png,image/webp", true),
    dropZone("reference", "Reference (optional): the person to replace", "image/jpeg,image/png,image/webp", false)),
  h("div", { class: "options" }, h("label", {}, "Provider ", providerSelect), h("label", {}, "Task ", taskSelect)),
  h("button", { type: "submit", id: "submit-button" }, "Submit"), status);
  document.getElementById("main").replaceChildren(h("h1", {}, "Submit a job"),
    h("p", { class: "muted" }, "Files go to your stack's inputs bucket through the jobs API (POST /uploads); then the job is submitted (POST /jobs)."),
    h("div", { id: "error", class: "banner", role: "alert" }), form);
  document.body.dataset.loaded = "submit";
}

// ------------------------------------------------------------------------------------------------ routing

function route() {
  stop();
  delete document.body.dataset.loaded;
  const path = location.hash.replace(/^#/, "").split("?")[0] || "/";
  const job = path.match(/^\/jobs\/([^/]+)$/);
  document.getElementById("nav-jobs").classList.toggle("here", path === "/");
  document.getElementById("nav-submit").classList.toggle("here", path === "/submit");
  let jobId = null;
  try { jobId = job ? decodeURIComponent(job[1]) : null; } catch (e) { jobId = null; }
  if (jobId) renderJob(jobId);
  else if (path === "/submit") renderSubmit();
  else renderJobs();
}

window.addEventListener("hashchange", route);
function remembered() {
  try { return localStorage.getItem(SESSION_KEY) || ""; } catch (e) { return ""; }
}

function remember(secret) {
  try { localStorage.setItem(SESSION_KEY, secret); } catch (e) { /* storage blocked: this tab only */ }
}

window.addEventListener("DOMContentLoaded", async () => {
  // A link's one-time token: out of the address first, then exchanged (in a header) for the session secret, kept
  // in this origin's storage (other ports of the host cannot read it, unlike a cookie).
  const token = new URLSearchParams(location.search).get("token");
  if (token) {
    history.replaceState(null, "", "/" + (location.hash || "#/"));
    try {
      session = (await api("POST", "/api/session", undefined, { "X-Console-Token": token })).session;
      remember(session);
    } catch (e) { session = ""; }
  }
  session = session || remembered();
  if (!session) return signedOut();
  try { ({ providers, upload_types: uploadTypes } = await api("GET", "/api/providers")); } catch (e) {
    if (e.code === "console_session_required") return signedOut();
    providers = [];
  }
  route();
});
