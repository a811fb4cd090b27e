// External users: list with balances; per user: grant, prompt, library, login link, key rotation.
"use strict";

(function () {
  const { api, query, h, table, credits, when, notice, failed } = window.Console;
  const field = (id) => document.getElementById(id);
  let users = [];
  let cursor = null;
  let selected = null;

  const identity = (user) => ({ provider: user.provider, unique_key: user.unique_key });

  async function loadUsers(more = false) {
    if (!more) {
      users = [];
      cursor = null;
    }
    const page = await api("GET", `/v1/external_users${query({ limit: 50, after: cursor, order: "asc" })}`);
    users = users.concat(page.data);
    cursor = page.last_id;
    field("more").hidden = !page.has_more;
    table(field("users"), [
      { title: "User", cell: (u) => h("button", { type: "button", className: "link-button secondary", onclick: () => select(u) }, `${u.provider} / ${u.unique_key}`) },
      { title: "Balance", cell: (u) => h("span", { "data-balance": u.id }, credits(u.generation_credits)), className: "num" },
      { title: "Requests", cell: (u) => u.total_requests, className: "num" },
      { title: "Spent", cell: (u) => credits(u.total_credits_used), className: "num" },
      { title: "Last activity", cell: (u) => when(u.last_activity_at) },
    ], users, "No external users yet.");
  }

  function showUser(user) {
    selected = user;
    field("detail").hidden = false;
    field("detail-title").textContent = `${user.provider} / ${user.unique_key} (${user.id})`;
    field("detail-balance").textContent = credits(user.generation_credits);
    field("user-prompt").placeholder = user.has_system_prompt ? "(a prompt is set; saving replaces it)" : "";
  }

  async function select(user) {
    showUser(user);
    field("secret").hidden = true;
    try {
      const library = await api("GET", `/v1/external_users/requests${query({ ...identity(user), limit: 50 })}`);
      showUser(library.external_user);
      table(field("library"), [
        { title: "When", cell: (r) => when(r.created_at) },
        { title: "Route", cell: (r) => r.route_key || "" },
        { title: "Model", cell: (r) => r.model || "" },
        { title: "Credits", cell: (r) => credits(r.credits_charged), className: "num" },
        { title: "State", cell: (r) => (r.is_archived ? "archived" : r.is_published ? "published" : "") },
      ], library.requests, "No billed requests.");
      field("detail").scrollIntoView({ block: "nearest" });
    } catch (error) {
      failed(error);
    }
  }

  function secret(label, value) {
    const node = field("secret");
    node.replaceChildren(`${label} `, h("code", {}, value));
    node.hidden = false;
  }

  field("create").addEventListener("submit", async (event) => {
    event.preventDefault();
    const body = { external_user: { provider: field("provider").value.trim(), unique_key: field("unique-key").value.trim() } };
    try {
      const made = await api("POST", "/v1/external_users/session", body);
      await loadUsers();
      await select(made.external_user);
      if (made.external_api_key) secret("The user's API key (shown once):", made.external_api_key);
      field("unique-key").value = "";
    } catch (error) {
      failed(error);
    }
  });

  field("grant").addEventListener("submit", async (event) => {
    event.preventDefault();
    const amount = Number(field("grant-credits").value);
    try {
      const granted = await api("POST", "/v1/external_users/credits/grant", {
        external_user: identity(selected),
        input: { credits: amount },
      });
      notice(`Granted ${credits(granted.creditsGranted)} credits; the account has ${credits(granted.internalRemainingCredits)} left.`, "ok");
      field("grant-credits").value = "";
      showUser(granted.external_user);
      await loadUsers();
    } catch (error) {
      failed(error);
    }
  });

  field("prompt").addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      const saved = await api("POST", "/v1/external_users/assistant/set_system_prompt", {
        external_user: identity(selected),
        system_prompt: field("user-prompt").value,
      });
      notice(saved.system_prompt ? "Prompt saved." : "Prompt cleared: the account's applies.", "ok");
      showUser(saved.external_user);
    } catch (error) {
      failed(error);
    }
  });

  field("login-link").addEventListener("click", async () => {
    try {
      const made = await api("POST", "/v1/external_users/create_login_token", { external_user: identity(selected) });
      secret(`Login link (single use, ${made.expiresInSeconds} s):`, made.loginUrl);
    } catch (error) {
      failed(error);
    }
  });

  field("rotate").addEventListener("click", async () => {
    if (!window.confirm("Rotate this user's key? The old key and its tokens stop working.")) return;
    try {
      const made = await api("POST", "/v1/external_users/session", { external_user: identity(selected), rotate_api_key: true });
      secret("The new API key (shown once):", made.external_api_key);
    } catch (error) {
      failed(error);
    }
  });

  field("more").addEventListener("click", () => loadUsers(true).catch(failed));
  loadUsers().catch(failed);
})();
