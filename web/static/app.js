// The settings page: applies each change as it is made, keeps the preview and status live.
"use strict";

const $ = (id) => document.getElementById(id);
const csrfToken = () => document.querySelector('meta[name="csrf-token"]').content;

async function api(method, path, body, signal) {
  const init = { method, headers: { "X-CSRF-Token": csrfToken() }, credentials: "same-origin", signal };
  if (body instanceof FormData) {
    init.body = body;
  } else if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  if (response.status === 401) {
    window.location.assign("/login?next=/");  // session ended (logout elsewhere, password change)
    throw new Error("not logged in");
  }
  return response;
}

async function jsonOf(response) {
  try { return await response.json(); } catch (err) { return { error: `${response.status} ${response.statusText}` }; }
}

function toast(message, isError = false) {
  const el = $("toast");
  el.textContent = message;
  el.classList.toggle("error", isError);
  el.classList.add("show");
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => el.classList.remove("show"), isError ? 6000 : 2500);
}

// Field errors stay next to their field until the next successful change of it.
function showError(id, text) {
  const el = $(id);
  if (!el) return false;
  el.textContent = text || "";
  el.hidden = !text;
  return true;
}

function showFieldErrors(errors, scope = "settings") {
  for (const el of document.querySelectorAll(`form.settings .error`)) {
    if (scope === "settings" && !(el.id.slice(2) in errors)) showError(el.id, "");
  }
  const unplaced = [];
  for (const [field, reason] of Object.entries(errors)) {
    if (!showError("e-" + field, reason)) unplaced.push(`${field}: ${reason}`);
  }
  return unplaced;
}

function describeErrors(body) {
  if (body.errors) return Object.entries(body.errors).map(([f, r]) => `${f}: ${r}`).join("; ");
  return body.detail || body.error || "failed";
}

// ---- settings ----

const settingInputs = () => document.querySelectorAll("form.settings [name]");

function readSetting(name) {
  const inputs = [...settingInputs()].filter((el) => el.name === name);
  const type = inputs[0].dataset.type;
  if (type === "list") return inputs.filter((el) => el.checked).map((el) => el.value);
  if (inputs[0].type === "radio") {
    const picked = inputs.find((el) => el.checked)?.value;
    return type === "int" && picked !== undefined ? parseInt(picked, 10) : picked;
  }
  if (type === "bool") return inputs[0].checked;
  if (type === "int") return parseInt(inputs[0].value, 10);
  if (type === "float") return parseFloat(inputs[0].value);
  return inputs[0].value;
}

// Several requests answer with the settings (the page's load, each save, an upload, a preset,
// an import, a reset) and their answers can come back in any order, or after the user changed a
// control. Each request takes a tick of this clock when it is made, and so does each change the
// user makes: the controls show an answer only if nothing newer has been shown or changed since
// it was asked, or an old answer would put back values that are no longer true.
let settingsClock = 0;
const settingsTick = () => ++settingsClock;
let lastSaved = null, lastSavedAt = 0, shownAt = 0;

function showSettings(settings, askedAt = settingsTick()) {
  if (askedAt >= lastSavedAt) { lastSaved = settings; lastSavedAt = askedAt; }
  if (askedAt < shownAt) return;
  shownAt = askedAt;
  for (const el of settingInputs()) {
    if (!(el.name in settings)) continue;
    const value = settings[el.name];
    if (el.dataset.type === "list") el.checked = value.includes(el.value);
    else if (el.type === "radio") el.checked = el.value === String(value);
    else if (el.type === "checkbox") el.checked = Boolean(value);
    else if (document.activeElement !== el) el.value = value;
    const out = $("o-" + el.name);
    if (out) out.textContent = el.value;
  }
  document.body.dataset.effect = settings.effect;
  backgroundPicker.show(settings);
  // A control that acts only in some mode (exposure time: manual exposure) steps back otherwise.
  for (const field of document.querySelectorAll("[data-applies-when]")) {
    const [name, value] = field.dataset.appliesWhen.split("=");
    field.classList.toggle("inactive", String(settings[name]) !== value);
  }
}

// The camera's own controls, where the camera (known once it runs) has them; the others say so.
function showCameraControls(status) {
  const known = Array.isArray(status.camera_controls) ? new Set(status.camera_controls) : null;
  const fields = document.querySelectorAll("[data-needs-camera]");
  let missing = 0;
  for (const field of fields) {
    const unavailable = known !== null && !known.has(field.dataset.field);
    missing += unavailable;
    field.classList.toggle("unavailable", unavailable);
    for (const input of field.querySelectorAll("input")) input.disabled = unavailable || !service.up;
  }
  const note = $("camera-note");
  if (!note) return;
  if (known === null) note.textContent = "Done by the camera itself; shown here once the camera runs.";
  else if (!missing) note.textContent = "Done by the camera itself, and offered to the computer as the webcam's own controls.";
  else note.textContent = `This camera (${status.source}) has ${missing === fields.length ? "none of these" :
    "not the greyed-out ones"}: they are shown as unavailable, not faked.`;
}

// Characters the user typed that the saved text left out (the card cannot draw emoji).
function leftOut(sent, saved) {
  const graphemes = (s) => [...new Intl.Segmenter().segment(s)].map((g) => g.segment);
  const kept = new Set(graphemes(saved));
  return [...new Set(graphemes(sent).filter((g) => g.trim() && !kept.has(g)))];
}

async function saveSettings(change, what = "Saved") {
  const askedAt = settingsTick();
  try {
    const response = await api("PUT", "/api/settings", change);
    const body = await jsonOf(response);
    if (response.ok) {
      showSettings(body, askedAt);
      showFieldErrors({});
      if (typeof change.privacy_text === "string") {
        const dropped = leftOut(change.privacy_text, body.privacy_text);
        $("f-privacy_text").value = body.privacy_text;
        showError("n-privacy_text", dropped.length
          ? `Not drawn on the card and left out: ${dropped.join(" ")} (the card has no emoji font).` : "");
      }
      toast(what);
      return body;
    }
    if (response.status === 400 && body.errors) {
      const unplaced = showFieldErrors(body.errors);
      toast("Not saved: " + (unplaced.join("; ") || Object.keys(body.errors).join(", ")), true);
      if (lastSaved) showSettings(lastSaved);  // the controls show what is really in effect
    } else {
      toast("Not saved: " + describeErrors(body), true);
    }
  } catch (err) {
    toast("Not saved: " + err.message, true);
  }
  return null;
}

const pending = new Map();
function saveSoon(name, delayMs) {
  clearTimeout(pending.get(name));
  pending.set(name, setTimeout(() => saveSettings({ [name]: readSetting(name) }), delayMs));
}

for (const form of document.querySelectorAll("form.settings")) {
  form.addEventListener("input", (event) => {
    shownAt = settingsTick();  // what the user just set is the newest view of the settings
    const el = event.target;
    const out = $("o-" + el.name);
    if (out) out.textContent = el.value;
    if (el.type === "range") saveSoon(el.name, 150);  // live while dragging, not on every pixel
  });
  form.addEventListener("change", (event) => {
    shownAt = settingsTick();
    saveSoon(event.target.name, 0);
  });
  form.addEventListener("submit", (event) => event.preventDefault());
}

// ---- backgrounds ----

const backgroundPicker = {
  listing: null,

  async load() {
    const response = await api("GET", "/api/backgrounds");
    if (!response.ok) return;
    this.listing = await response.json();
    this.render();
  },

  render() {
    const box = $("background-choices");
    box.replaceChildren();
    for (const choice of this.listing.choices) {
      const button = document.createElement("button");
      button.type = "button";
      button.className = "thumb";
      button.dataset.name = choice.name;
      button.setAttribute("role", "radio");
      const img = document.createElement("img");
      img.src = choice.thumbnail;
      img.alt = "";
      img.width = 112;
      img.height = 63;
      const label = document.createElement("span");
      label.textContent = choice.label;
      button.append(img, label);
      button.addEventListener("click", () => this.pick(choice));
      box.append(button);
    }
    if (lastSaved) this.show(lastSaved);
  },

  show(settings) {
    if (!this.listing) return;
    const current = settings.background || this.listing.choices.find((c) => c.kind === "builtin").name;
    let label = "";
    for (const button of document.querySelectorAll("#background-choices .thumb")) {
      const on = button.dataset.name === current;
      button.setAttribute("aria-checked", String(on));
      if (on) label = button.textContent;
    }
    const used = settings.effect === "replace" ? "In use now" : "Used when the effect is “Replace”";
    $("background-current").textContent =
      `${used}: ${label || current}${settings.background ? "" : " (the default)"}.`;
  },

  async pick(choice) {
    const body = await saveSettings({ background: choice.name, effect: "replace" },
      `Background: ${choice.label}`);
    if (body) showError("e-background", "");
  },
};

$("background-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const file = $("background-file").files[0];
  if (!file) { showError("e-background", "Choose a picture first."); return; }
  const data = new FormData();
  data.append("image", file);
  let response, body;
  const askedAt = settingsTick();
  try {
    response = await api("POST", "/api/background", data);
    body = await jsonOf(response);
  } catch (err) {
    showError("e-background", "Upload failed: " + err.message);
    return;
  }
  if (response.ok) {
    showError("e-background", "");
    $("background-file").value = "";
    await backgroundPicker.load();
    showSettings(body, askedAt);
    toast("Background uploaded");
  } else {
    // The server names the field "background" (the picture) or "image" (the upload itself).
    const errors = body.errors || {};
    showError("e-background", "Not uploaded: " + (errors.background || errors.image || describeErrors(body)));
    toast("Upload failed", true);
  }
});

// ---- presets ----

const presets = {
  async load() {
    const response = await api("GET", "/api/presets");
    if (response.ok) this.render((await response.json()).presets);
  },

  render(list) {
    const select = $("preset-list");
    const chosen = select.value;
    select.replaceChildren();
    if (!list.length) select.append(new Option("No presets saved yet", ""));
    for (const preset of list) select.append(new Option(preset.name, preset.name, false, preset.name === chosen));
    $("preset-apply-button").disabled = $("preset-delete").disabled = !list.length;
  },

  url(name) { return "/api/presets/" + encodeURIComponent(name); },
};

$("preset-save").addEventListener("submit", async (event) => {
  event.preventDefault();
  const name = $("preset-name").value.trim();
  if (!name) { showError("e-preset", "Give the preset a name first."); return; }
  const response = await api("PUT", presets.url(name));
  const body = await jsonOf(response);
  if (response.ok) {
    showError("e-preset", "");
    presets.render(body.presets);
    $("preset-list").value = name;
    $("preset-name").value = "";
    toast(`Preset “${name}” saved`);
  } else {
    showError("e-preset", "Not saved: " + describeErrors(body));
  }
});

$("preset-apply").addEventListener("submit", async (event) => {
  event.preventDefault();
  const name = $("preset-list").value;
  if (!name) return;
  const askedAt = settingsTick();
  const response = await api("POST", presets.url(name) + "/apply");
  const body = await jsonOf(response);
  if (response.ok) {
    showError("e-preset", "");
    showSettings(body, askedAt);
    showFieldErrors({});
    toast(`Preset “${name}” applied`);
  } else {
    showError("e-preset", `“${name}” not applied: ` + describeErrors(body));
  }
});

$("preset-delete").addEventListener("click", async () => {
  const name = $("preset-list").value;
  if (!name || !window.confirm(`Delete the preset “${name}”?`)) return;
  const response = await api("DELETE", presets.url(name));
  if (response.ok || response.status === 404) { await presets.load(); toast(`Preset “${name}” deleted`); }
  else showError("e-preset", "Not deleted: " + describeErrors(await jsonOf(response)));
});

// ---- backup and reset ----

$("settings-import").addEventListener("change", async (event) => {
  const file = event.target.files[0];
  event.target.value = "";
  if (!file) return;
  let data;
  try {
    data = JSON.parse(await file.text());
  } catch (err) {
    showError("e-import", `${file.name} is not a settings file (not JSON: ${err.message}).`);
    return;
  }
  const askedAt = settingsTick();
  const response = await api("POST", "/api/settings/import", data);
  const body = await jsonOf(response);
  if (response.ok) {
    showError("e-import", "");
    showSettings(body, askedAt);
    showFieldErrors({});
    toast("Settings imported");
  } else {
    showError("e-import", `${file.name} not imported, nothing changed: ` + describeErrors(body));
  }
});

$("settings-reset").addEventListener("click", async () => {
  if (!window.confirm("Reset every setting to its default? Presets and the password stay.")) return;
  const askedAt = settingsTick();
  const response = await api("POST", "/api/settings/reset");
  const body = await jsonOf(response);
  if (response.ok) { showSettings(body, askedAt); showFieldErrors({}); toast("All settings are back to their defaults"); }
  else toast("Not reset: " + describeErrors(body), true);
});

// ---- password ----

const passwordForm = $("password-form");
if (passwordForm) {
  passwordForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    const response = await api("POST", "/api/password", {
      current_password: passwordForm.current_password.value,
      new_password: passwordForm.new_password.value,
    });
    const body = await jsonOf(response);
    if (response.ok) {
      document.querySelector('meta[name="csrf-token"]').content = body.csrf_token;
      for (const input of document.querySelectorAll('input[name="csrf_token"]')) input.value = body.csrf_token;
      passwordForm.reset();
      for (const id of ["e-current_password", "e-new_password"]) showError(id, "");
      toast("Password changed");
    } else {
      for (const [field, reason] of Object.entries(body.errors || {})) showError("e-" + field, reason);
      toast("Password not changed", true);
    }
  });
}

// ---- status ----

const fmt = {
  duration(s) {
    const d = Math.floor(s / 86400), h = Math.floor((s % 86400) / 3600), m = Math.floor((s % 3600) / 60);
    return d ? `${d} d ${h} h` : h ? `${h} h ${m} min` : `${m} min ${Math.floor(s % 60)} s`;
  },
  number(v, digits, unit) { return v === null || v === undefined ? "–" : `${Number(v).toFixed(digits)}${unit}`; },
};

function showUsb(s) {
  const pill = $("usb-state");
  let state, text;
  if (!s) { state = "unknown"; text = "USB state unknown"; }
  else if (s.state === "streaming") { state = "streaming"; text = `Streaming to computer · ${s.stream_format || ""}`.trim(); }
  else if (s.host_connected) { state = "connected"; text = "Computer connected, not streaming"; }
  else { state = "none"; text = "No computer connected"; }
  pill.dataset.state = state;
  $("usb-text").textContent = text;
}

function showStatus(s) {
  const set = (id, text) => { $(id).textContent = text; };
  set("st-state", { idle: "Idle", streaming: "Streaming to computer", preview: "Preview only" }[s.state] || s.state);
  set("st-fps", s.state === "idle" ? "–" : fmt.number(s.fps, 1, " fps"));
  set("st-inference", fmt.number(s.inference_ms, 1, " ms"));
  // Capture to output, and how old the applied mask is (0: every frame its own mask).
  set("st-latency", s.latency_p50_ms === null || s.latency_p50_ms === undefined ? "–"
    : `${fmt.number(s.latency_p50_ms, 0, "")} / ${fmt.number(s.latency_p95_ms, 0, " ms")}`);
  set("st-mask-age", s.mask_age_frames === null || s.mask_age_frames === undefined ? "–"
    : `${s.mask_age_frames} frames · ${fmt.number(s.mask_age_ms, 0, " ms")}`);
  set("st-host", s.host_connected ? (s.state === "streaming" ? "Streaming" : "Connected") : "Not connected");
  set("st-model", s.model ? `${s.model} · ${s.precision}` : "–");
  set("st-cpu", fmt.number(s.cpu_percent, 0, " % busy"));
  set("st-temp", fmt.number(s.temperature_c, 1, " °C"));
  if (!s.throttled) set("st-power", "Not reported");
  else {
    const problems = Object.entries(s.throttled).filter(([, on]) => on).map(([k]) => k.replaceAll("_", " "));
    set("st-power", problems.length ? problems.join(", ") : "OK");
    $("st-power").classList.toggle("warn", problems.length > 0);
  }
  set("st-uptime", fmt.duration(s.uptime_s || 0));
  showCameraControls(s);
  set("stage-status", [$("st-state").textContent,
    s.state === "idle" ? "" : `pipeline ${fmt.number(s.fps, 0, " fps")}`,
    s.inference_ms ? `inference ${fmt.number(s.inference_ms, 0, " ms")}` : "",
    s.cpu_percent !== null && s.cpu_percent !== undefined ? `CPU ${fmt.number(s.cpu_percent, 0, " %")}` : "",
    s.temperature_c ? fmt.number(s.temperature_c, 0, " °C") : ""].filter(Boolean).join(" · "));
  if (s.version) set("st-version", s.version);
  showUsb(s);
}

// The camera service: polled every 2 s while it answers; while it does not, ever more rarely
// (2, 4, 8, 10 s) and nothing else is asked of it: a stopped service costs one request now and then.
const service = {
  up: !$("service-banner").hidden ? false : true,
  failures: 0,
  timer: null,

  set(up, detail) {
    const changed = up !== this.up;
    this.up = up;
    $("service-state").hidden = up;
    $("service-banner").hidden = up;
    $("service-detail").textContent = up ? "" : detail || "";
    for (const el of document.querySelectorAll("form.settings [name], #background-form *, #presets-title ~ form *, #settings-reset"))
      el.disabled = !up;
    if (!up) showUsb(null);
    if (changed) preview.update();
    return changed;
  },

  async poll() {
    clearTimeout(this.timer);
    let next = 2000;
    try {
      const response = await api("GET", "/api/status");
      const body = await jsonOf(response);
      if (response.ok) {
        const cameBack = this.set(true);
        this.failures = 0;
        showStatus(body);
        if (cameBack) await loadAll();  // show what the daemon really runs with
      } else {
        this.down(body.detail || body.error);
        next = this.backoff();
      }
    } catch (err) {
      this.down(err.message);
      next = this.backoff();
    }
    this.timer = setTimeout(() => this.poll(), next);
  },

  down(detail) {
    this.set(false, detail);
  },

  backoff() {
    this.failures += 1;
    const delay = Math.min(10000, 2000 * 2 ** (this.failures - 1));
    $("service-detail").textContent += ` · next check in ${Math.round(delay / 1000)} s`;
    return delay;
  },
};

// ---- preview: one multipart MJPEG stream, drawn on a canvas ----

const BOUNDARY_END = new Uint8Array([13, 10, 13, 10]);

function indexOf(haystack, needle, from = 0) {
  outer: for (let i = from; i <= haystack.length - needle.length; i++) {
    for (let j = 0; j < needle.length; j++) if (haystack[i + j] !== needle[j]) continue outer;
    return i;
  }
  return -1;
}

// Splits a multipart/x-mixed-replace body into its JPEGs (each part says its Content-Length).
class MjpegParts {
  constructor(reader) { this.reader = reader; this.buf = new Uint8Array(0); }

  async next() {
    for (;;) {
      const end = indexOf(this.buf, BOUNDARY_END);
      if (end >= 0) {
        const head = new TextDecoder().decode(this.buf.subarray(0, end));
        const length = /content-length:\s*(\d+)/i.exec(head);
        if (!length) throw new Error("the preview stream is garbled");
        const start = end + 4, stop = start + Number(length[1]);
        if (this.buf.length >= stop) {
          const jpeg = this.buf.slice(start, stop);
          this.buf = this.buf.slice(stop);
          const seq = /x-frame:\s*(\d+)/i.exec(head);  // the pipeline's frame number
          return { jpeg, seq: seq ? Number(seq[1]) : null };
        }
      }
      const { value, done } = await this.reader.read();
      if (done) return null;
      const joined = new Uint8Array(this.buf.length + value.length);
      joined.set(this.buf);
      joined.set(value, this.buf.length);
      this.buf = joined;
    }
  }
}

const preview = {
  canvas: $("preview"),
  running: null,       // the AbortController of the stream being shown
  retryTimer: null,
  failures: 0,
  shownAt: [],         // when recent frames were drawn, for the frame-rate badge

  get view() { return document.querySelector('input[name="view"]:checked').value; },
  get wanted() { return $("preview-on").checked && !document.hidden && service.up; },

  say(state, text) {
    $("screen").dataset.state = state;
    $("preview-state").textContent = text;
    $("preview-state").hidden = state === "live";
    if (state !== "live") $("preview-fps").textContent = state === "paused" ? "Paused" : "";
  },

  // Start or stop the stream to match what the user and the service allow.
  update() {
    if (!this.wanted) {
      this.stop();
      if (!$("preview-on").checked) this.say("paused", "Paused. Turn “Live” on to see the camera again.");
      else if (!service.up) this.say("down", "No preview: the camera service is not running.");
      return;
    }
    if (!this.running && !this.retryTimer) this.start();
  },

  restart() { this.stop(); this.update(); },

  stop() {
    clearTimeout(this.retryTimer);
    this.retryTimer = null;
    if (this.running) { this.running.abort(); this.running = null; }
  },

  retry(state, text) {
    this.running = null;
    this.failures += 1;
    const delay = Math.min(10000, 1000 * 2 ** (this.failures - 1));
    this.say(state, `${text} Trying again in ${Math.round(delay / 1000)} s.`);
    this.retryTimer = setTimeout(() => { this.retryTimer = null; this.update(); }, delay);
  },

  async start() {
    const abort = new AbortController();
    this.running = abort;
    if ($("screen").dataset.state !== "live") this.say("connecting", "Connecting…");
    let response;
    try {
      response = await api("GET", `/api/preview/${this.view}.mjpg`, undefined, abort.signal);
    } catch (err) {
      if (this.running === abort) this.retry("error", "No preview (" + err.message + ").");
      return;
    }
    if (this.running !== abort) return;  // aborted meanwhile: the connection is closed already
    if (!response.ok) {
      const body = await jsonOf(response);
      this.retry("error", "No picture from the camera: " + (body.detail || body.error) + ".");
      return;
    }
    // Aborting the fetch (view switch, pause, hidden tab) closes the connection, which frees the
    // server's stream slot at once.
    const parts = new MjpegParts(response.body.getReader());
    try {
      for (;;) {
        const part = await parts.next();
        if (part === null || this.running !== abort) break;
        await this.draw(part.jpeg, part.seq, abort);
        this.failures = 0;
      }
    } catch (err) { /* cancelled, or the connection broke: handled below */ }
    if (this.running === abort) this.retry("error", "The preview stream ended.");
  },

  async draw(jpeg, seq, stream) {
    const bitmap = await createImageBitmap(new Blob([jpeg], { type: "image/jpeg" }));
    // Paused, switched or stopped while this frame was decoding: it must not undo that.
    if (this.running !== stream) { bitmap.close(); return; }
    if (this.canvas.width !== bitmap.width || this.canvas.height !== bitmap.height) {
      this.canvas.width = bitmap.width;
      this.canvas.height = bitmap.height;
    }
    this.canvas.getContext("2d").drawImage(bitmap, 0, 0);
    bitmap.close();
    this.canvas.dataset.frames = String(Number(this.canvas.dataset.frames || 0) + 1);
    this.canvas.dataset.view = this.view;
    if (seq !== null) this.canvas.dataset.seq = String(seq);
    const now = performance.now();
    this.shownAt.push(now);
    while (this.shownAt[0] < now - 2000) this.shownAt.shift();
    if ($("screen").dataset.state !== "live") this.say("live", "");
    // Frames over the time they took (the last 2 s; after a start, once a second has passed, so
    // that neither the first few frames nor a burst of them give a wild figure).
    const span = (now - this.shownAt[0]) / 1000;
    $("preview-fps").textContent = span >= 1 ? `${((this.shownAt.length - 1) / span).toFixed(0)} fps` : "…";
  },
};

for (const radio of document.querySelectorAll('input[name="view"]')) {
  radio.addEventListener("change", () => {
    $("screen").dataset.view = preview.view;
    preview.restart();
  });
}
$("preview-on").addEventListener("change", () => preview.update());
document.addEventListener("visibilitychange", () => preview.update());

// ---- start ----

async function loadAll() {
  const askedAt = settingsTick();
  const response = await api("GET", "/api/settings");
  if (response.ok) showSettings(await response.json(), askedAt);
  await Promise.all([backgroundPicker.load(), presets.load()]);
}

$("screen").dataset.view = preview.view;
service.poll();
if (service.up) { loadAll(); preview.update(); }
else preview.say("down", "No preview: the camera service is not running.");
