// Keys: list, create (the secret is shown once), revoke; ChatKit sessions: list, cancel.
"use strict";

(function () {
  const { api, h, table, when, notice, failed } = window.Console;

  async function loadKeys() {
    const keys = await api("GET", "/v1/keys?limit=100");
    table(document.getElementById("keys"), [
      { title: "Name", cell: (k) => k.name || "(unnamed)" },
      { title: "Prefix", cell: (k) => h("code", {}, `${k.prefix}…`) },
      { title: "Created", cell: (k) => when(k.created_at) },
      { title: "Last used", cell: (k) => when(k.last_used_at) || "never" },
      {
        title: "State",
        cell: (k) =>
          k.revoked_at
            ? `revoked ${when(k.revoked_at)}`
            : h("button", { type: "button", className: "danger", "data-key": k.id, onclick: () => revoke(k) }, "Revoke"),
      },
    ], keys.data.slice().reverse());
  }

  async function revoke(key) {
    if (!window.confirm(`Revoke the key ${key.prefix}…? Clients using it stop working at once.`)) return;
    try {
      await api("DELETE", `/v1/keys/${encodeURIComponent(key.id)}`);
      notice(`Revoked ${key.prefix}…`, "ok");
      await loadKeys();
    } catch (error) {
      failed(error);
    }
  }

  async function loadChatKit() {
    const sessions = await api("GET", "/v1/chatkit/sessions?limit=100");
    table(document.getElementById("chatkit"), [
      { title: "Session", cell: (s) => h("code", {}, s.id) },
      { title: "User", cell: (s) => s.user },
      { title: "Expires", cell: (s) => when(s.expires_at) },
      {
        title: "Status",
        cell: (s) =>
          s.status === "active"
            ? h("button", { type: "button", className: "danger", onclick: () => cancel(s) }, "Cancel")
            : s.status,
      },
    ], sessions.data, "No ChatKit sessions.");
  }

  async function cancel(session) {
    try {
      await api("POST", `/v1/chatkit/sessions/${encodeURIComponent(session.id)}/cancel`);
      await loadChatKit();
    } catch (error) {
      failed(error);
    }
  }

  document.getElementById("create").addEventListener("submit", async (event) => {
    event.preventDefault();
    const name = document.getElementById("key-name").value.trim();
    try {
      const made = await api("POST", "/v1/keys", { name: name || null });
      const shown = document.getElementById("new-key");
      shown.replaceChildren("New key (shown once, copy it now): ", h("code", { id: "new-key-value" }, made.key));
      shown.hidden = false;
      document.getElementById("key-name").value = "";
      await loadKeys();
    } catch (error) {
      failed(error);
    }
  });

  Promise.all([loadKeys(), loadChatKit()]).catch(failed);
})();
