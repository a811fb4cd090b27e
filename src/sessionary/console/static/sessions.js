// Sessions: list, find by id or text, a transcript (messages, images, tool calls), delete.
"use strict";

(function () {
  const { api, query, h, when, notice, failed } = window.Console;
  const { entry, messageParts, outputParts } = window.Transcript;
  const field = (id) => document.getElementById(id);
  let sessions = [];
  let cursor = null;
  let current = null;

  function render() {
    const needle = field("query").value.trim().toLowerCase();
    const shown = sessions.filter((s) =>
      !needle || s.id.toLowerCase().includes(needle) || (s.name || "").toLowerCase().includes(needle) ||
      JSON.stringify(s.metadata || {}).toLowerCase().includes(needle) || (s.text || "").includes(needle)
    );
    field("list").replaceChildren(
      ...shown.map((s) =>
        h("li", {}, h("button", { type: "button", "aria-current": current && current.id === s.id ? "true" : "false", onclick: () => open(s) },
          s.name || s.id, h("small", {}, `${s.kind} · ${when(s.updated_at)}`)))
      )
    );
    if (!shown.length) field("list").append(h("li", { className: "hint" }, "No session matches."));
  }

  async function load(more = false) {
    if (!more) {
      sessions = [];
      cursor = null;
    }
    const page = await api("GET", `/v1/sessions${query({ limit: 100, after: cursor })}`);
    sessions = sessions.concat(page.data);
    cursor = page.last_id;
    field("more").hidden = !page.has_more;
    render();
  }

  async function transcriptOf(session) {
    const messages = await api("GET", `/v1/threads/${encodeURIComponent(session.id)}/messages?order=asc&limit=100`);
    return messages.data;
  }

  async function open(session) {
    current = session;
    render();
    field("session-title").textContent = session.name || session.id;
    field("delete").hidden = false;
    const list = field("transcript");
    list.replaceChildren();
    try {
      for (const message of await transcriptOf(session)) list.append(entry(message.role, messageParts(message)));
      if (session.last_response_id) {
        const response = await api("GET", `/v1/responses/${encodeURIComponent(session.last_response_id)}`);
        const parts = outputParts(response);
        if (parts.length) list.append(entry("tool", parts));
      }
      if (!list.children.length) list.append(h("li", { className: "hint" }, "No messages."));
    } catch (error) {
      failed(error);
    }
  }

  // Text search reads the transcripts of the listed sessions (at most 100 at a time).
  async function searchText(needle) {
    for (const session of sessions) {
      if (session.text !== undefined) continue;
      const messages = await transcriptOf(session);
      session.text = messages.map((m) => messageParts(m).map((p) => p.text || "").join(" ")).join(" ").toLowerCase();
    }
    render();
    notice(needle ? `Searched the text of ${sessions.length} sessions.` : "");
  }

  field("find").addEventListener("submit", (event) => {
    event.preventDefault();
    render();
    const needle = field("query").value.trim().toLowerCase();
    if (needle) searchText(needle).catch(failed);
  });
  field("more").addEventListener("click", () => load(true).catch(failed));
  field("delete").addEventListener("click", async () => {
    if (!current || !window.confirm(`Delete the session ${current.id}?`)) return;
    try {
      await api("DELETE", `/v1/threads/${encodeURIComponent(current.id)}`);
      notice(`Deleted ${current.id}.`, "ok");
      current = null;
      field("transcript").replaceChildren();
      field("delete").hidden = true;
      await load();
    } catch (error) {
      failed(error);
    }
  });
  load().catch(failed);
})();
