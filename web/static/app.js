// The settings page: applies each change as it is made, keeps the preview and status live.
"use strict";

const csrfToken = () => document.querySelector('meta[name="csrf-token"]').content;

async function api(method, path, body) {
  const init = { method, headers: { "X-CSRF-Token": csrfToken() }, credentials: "same-origin" };
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

function toast(message, isError = false) {
  const el = document.getElementById("toast");
  el.textContent = message;
  el.classList.toggle("error", isError);
  el.classList.add("show");
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => el.classList.remove("show"), 2500);
}

function showFieldErrors(errors) {
  for (const el of document.querySelectorAll(".error")) {
    if (!(el.id.slice(2) in errors)) { el.hidden = true; el.textContent = ""; }
  }
  for (const [field, reason] of Object.entries(errors)) {
    const el = document.getElementById("e-" + field);
    if (el) { el.textContent = reason; el.hidden = false; }
  }
}

// ---- settings ----

const form = document.getElementById("settings-form");

function readSetting(name) {
  const inputs = [...form.elements].filter((el) => el.name === name);
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

function showSettings(settings) {
  for (const el of form.elements) {
    if (!el.name || !(el.name in settings)) continue;
    const value = settings[el.name];
    if (el.dataset.type === "list") el.checked = value.includes(el.value);
    else if (el.type === "radio") el.checked = el.value === String(value);
    else if (el.type === "checkbox") el.checked = Boolean(value);
    else if (document.activeElement !== el) el.value = value;
    const out = document.getElementById("o-" + el.name);
    if (out) out.textContent = el.value;
  }
  document.getElementById("background-current").textContent =
    settings.background ? "Current: " + settings.background : "No picture uploaded yet.";
  document.body.dataset.effect = settings.effect;
}

let lastSaved = null;

async function saveSetting(name) {
  const change = { [name]: readSetting(name) };
  try {
    const response = await api("PUT", "/api/settings", change);
    const body = await response.json();
    if (response.ok) {
      lastSaved = body;
      showSettings(body);
      showFieldErrors({});
      toast("Saved");
    } else if (response.status === 400 && body.errors) {
      showFieldErrors(body.errors);
      toast("Not saved: " + Object.keys(body.errors).join(", "), true);
      if (lastSaved) showSettings(lastSaved);  // the control shows what is really in effect
    } else {
      toast(body.detail || body.error || "Not saved", true);
    }
  } catch (err) {
    toast("Not saved: " + err.message, true);
  }
}

const pending = new Map();
function saveSoon(name, delayMs) {
  clearTimeout(pending.get(name));
  pending.set(name, setTimeout(() => saveSetting(name), delayMs));
}

form.addEventListener("input", (event) => {
  const el = event.target;
  const out = document.getElementById("o-" + el.name);
  if (out) out.textContent = el.value;
  if (el.type === "range") saveSoon(el.name, 150);  // live while dragging, not on every pixel
});
form.addEventListener("change", (event) => saveSoon(event.target.name, 0));
form.addEventListener("submit", (event) => event.preventDefault());

// ---- background upload ----

document.getElementById("background-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const file = document.getElementById("background-file").files[0];
  if (!file) { showFieldErrors({ image: "Choose a picture first." }); return; }
  const data = new FormData();
  data.append("image", file);
  const response = await api("POST", "/api/background", data);
  const body = await response.json();
  if (response.ok) {
    lastSaved = body;
    showSettings(body);
    showFieldErrors({});
    toast("Background uploaded");
  } else {
    showFieldErrors(body.errors || { image: body.detail || body.error });
    toast("Upload failed", true);
  }
});

// ---- password ----

const passwordForm = document.getElementById("password-form");
if (passwordForm) {
  passwordForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    const response = await api("POST", "/api/password", {
      current_password: passwordForm.current_password.value,
      new_password: passwordForm.new_password.value,
    });
    const body = await response.json();
    if (response.ok) {
      document.querySelector('meta[name="csrf-token"]').content = body.csrf_token;
      for (const input of document.querySelectorAll('input[name="csrf_token"]')) input.value = body.csrf_token;
      passwordForm.reset();
      showFieldErrors({});
      toast("Password changed");
    } else {
      showFieldErrors(body.errors || {});
      toast("Password not changed", true);
    }
  });
}

// ---- service state, status and preview ----

function setServiceUp(up, detail) {
  const pill = document.getElementById("service-state");
  pill.textContent = up ? "Connected" : "Camera service not running";
  pill.className = "pill " + (up ? "ok" : "bad");
  document.getElementById("service-banner").hidden = up;
  document.getElementById("service-detail").textContent = detail || "";
  for (const el of form.elements) el.disabled = !up;
}

const fmt = {
  duration(s) {
    const d = Math.floor(s / 86400), h = Math.floor((s % 86400) / 3600), m = Math.floor((s % 3600) / 60);
    return d ? `${d} d ${h} h` : h ? `${h} h ${m} min` : `${m} min ${Math.floor(s % 60)} s`;
  },
  number(v, digits, unit) { return v === null || v === undefined ? "–" : `${Number(v).toFixed(digits)}${unit}`; },
};

function showStatus(s) {
  const set = (id, text) => { document.getElementById(id).textContent = text; };
  set("st-state", { idle: "Idle", streaming: "Streaming", preview: "Preview only" }[s.state] || s.state);
  set("st-fps", fmt.number(s.fps, 1, " fps"));
  set("st-inference", fmt.number(s.inference_ms, 1, " ms"));
  set("st-host", s.host_connected ? "Connected" : "Not connected");
  set("st-format", s.stream_format || "Not streaming");
  set("st-model", s.model ? `${s.model} · ${s.precision}` : "–");
  set("st-load", Array.isArray(s.cpu_load) ? s.cpu_load.map((v) => v.toFixed(2)).join(" · ") : "–");
  set("st-temp", fmt.number(s.temperature_c, 1, " °C"));
  if (!s.throttled) set("st-power", "Not reported");
  else {
    const problems = Object.entries(s.throttled).filter(([, on]) => on).map(([k]) => k.replaceAll("_", " "));
    set("st-power", problems.length ? problems.join(", ") : "OK");
    document.getElementById("st-power").classList.toggle("warn", problems.length > 0);
  }
  set("st-uptime", fmt.duration(s.uptime_s || 0));
  if (s.version) set("st-version", s.version);
}

async function pollStatus() {
  try {
    const response = await api("GET", "/api/status");
    const body = await response.json();
    if (response.ok) {
      const wasDown = document.getElementById("service-banner").hidden === false;
      setServiceUp(true);
      showStatus(body);
      if (wasDown) {  // the daemon came back: show what it really runs with
        const settings = await api("GET", "/api/settings");
        if (settings.ok) { lastSaved = await settings.json(); showSettings(lastSaved); }
      }
    } else {
      setServiceUp(false, body.detail);
    }
  } catch (err) {
    setServiceUp(false, err.message);
  }
  setTimeout(pollStatus, 1000);
}

const previewOn = document.getElementById("preview-on");

// One request at a time per view: a slow link shows fewer frames instead of a growing queue.
async function previewLoop(img) {
  if (previewOn.checked && !document.hidden) {
    try {
      const response = await api("GET", `/api/preview/${img.dataset.view}.jpg`);
      if (response.ok) {
        const url = URL.createObjectURL(await response.blob());
        await new Promise((resolve) => { img.onload = img.onerror = resolve; img.src = url; });
        if (img.dataset.url) URL.revokeObjectURL(img.dataset.url);
        img.dataset.url = url;
        img.dataset.frames = String(Number(img.dataset.frames || 0) + 1);
      }
    } catch (err) { /* shown by the status poll */ }
  }
  setTimeout(() => previewLoop(img), previewOn.checked ? 150 : 500);
}

pollStatus();
for (const img of document.querySelectorAll("img[data-view]")) previewLoop(img);
api("GET", "/api/settings").then(async (r) => { if (r.ok) { lastSaved = await r.json(); showSettings(lastSaved); } });
