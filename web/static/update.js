// The settings page's software update form (web/update.py): asks the camera to download and
// install a bundle, then follows the installer until the camera restarts. Uses app.js's api().
"use strict";

(() => {
  const form = document.getElementById("update-form");
  if (!form) return;
  const status = document.getElementById("update-status");
  const error = document.getElementById("e-url");
  const words = {
    requested: "Update requested…",
    installing: "Downloading and installing… (the camera keeps working meanwhile)",
    rebooting: "Installed. The camera is restarting into the new version; this page comes back by itself.",
  };

  async function follow() {
    let state;
    try {
      const response = await api("GET", "/api/update");
      state = await response.json();
    } catch (e) {
      status.textContent = words.rebooting;  // the camera is away while it restarts
      setTimeout(follow, 5000);
      return;
    }
    if (state.state === "failed") {
      status.textContent = `The update was not installed: ${state.error}`;
      return;
    }
    if (words[state.state]) {
      status.textContent = words[state.state];
      setTimeout(follow, 3000);
    }
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    error.hidden = true;
    const response = await api("POST", "/api/update", { url: form.url.value.trim() });
    const body = await response.json();
    if (response.status !== 202) {
      error.textContent = (body.errors && body.errors.url) || body.error;
      error.hidden = false;
      return;
    }
    toast("Update requested");
    follow();
  });
  follow();
})();
