// Playground: a streamed assistant turn on a new or existing session, with the account's prompt
// and model, max output tokens, JSON-schema mode and function tools; the credits of each turn.
"use strict";

(function () {
  const { api, h, credits, notice, failed, events, csrf } = window.Console;
  const { entry, outputParts } = window.Transcript;
  const field = (id) => document.getElementById(id);
  const transcript = field("transcript");

  async function load() {
    const [me, models, sessions] = await Promise.all([
      api("GET", "/v1/me"),
      api("GET", "/v1/models"),
      api("GET", "/v1/sessions?limit=100"),
    ]);
    field("system-prompt").value = me.system_prompt || "";
    for (const model of models.data) {
      field("model").append(h("option", { value: model.id, selected: model.id === me.assistant_model }, model.id));
    }
    for (const session of sessions.data) {
      field("session").append(h("option", { value: session.id }, session.name ? `${session.name} (${session.id})` : session.id));
    }
  }

  async function showSession(id) {
    transcript.replaceChildren();
    if (!id) return;
    const messages = await api("GET", `/v1/threads/${encodeURIComponent(id)}/messages?order=asc&limit=100`);
    for (const message of messages.data) transcript.append(entry(message.role, window.Transcript.messageParts(message)));
  }

  function parsed(id, what) {
    const text = field(id).value.trim();
    if (!text) return undefined;
    try {
      return JSON.parse(text);
    } catch (error) {
      throw new Error(`${what} is not valid JSON: ${error.message}`);
    }
  }

  async function send(message) {
    const schema = parsed("json-schema", "The JSON schema");
    const tools = parsed("tools", "The tools");
    let session = field("session").value;
    if (!session) {
      const made = await api("POST", "/v1/assistant/session", {});
      session = made.session_id;
      field("session").append(h("option", { value: session }, session));
      field("session").value = session;
    }
    const body = {
      session_id: session,
      input: message,
      stream: true,
      model: field("model").value || undefined,
      max_output_tokens: Number(field("max-tokens").value) || undefined,
    };
    if (schema) body.text = { format: { type: "json_schema", name: "answer", schema, strict: false } };
    if (tools) body.tools = tools;
    transcript.append(entry("user", [{ text: message }]));
    const answer = entry("assistant", [{ text: "" }]);
    answer.setAttribute("aria-busy", "true");
    transcript.append(answer);
    const text = answer.querySelector(".text");
    const response = await fetch("/v1/assistant/completion", {
      method: "POST",
      headers: { "content-type": "application/json", "x-csrf-token": csrf, accept: "text/event-stream" },
      body: JSON.stringify(body),
      credentials: "same-origin",
    });
    if (!response.ok) {
      answer.remove();
      const error = await response.json().catch(() => null);
      throw new Error((error && error.error && error.error.message) || `HTTP ${response.status}`);
    }
    for await (const { data } of events(response)) {
      if (data.type === "response.output_text.delta") {
        text.textContent += data.delta;
        transcript.scrollTop = transcript.scrollHeight;
      } else if (data.type === "response.completed" || data.type === "response.incomplete") {
        for (const part of outputParts(data.response)) answer.append(entry("tool", [part]));
        const cost = data.response.credits || {};
        field("turn-cost").textContent = `This turn: ${credits(cost.charged)} credits charged, ${credits(cost.remaining)} left.`;
        answer.dataset.charged = cost.charged;
      } else if (data.type === "response.failed" || data.type === "error") {
        const reason = (data.response && data.response.error) || data.error || data;
        throw new Error(reason.message || "The turn failed.");
      }
    }
    answer.removeAttribute("aria-busy");
  }

  field("session").addEventListener("change", () => showSession(field("session").value).catch(failed));
  field("save-prompt").addEventListener("click", async () => {
    try {
      await api("POST", "/v1/assistant/set_system_prompt", {
        system_prompt: field("system-prompt").value,
        model: field("model").value || undefined,
      });
      notice("Prompt and model saved for the account.", "ok");
    } catch (error) {
      failed(error);
    }
  });
  field("message").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) field("composer").requestSubmit();
  });
  field("composer").addEventListener("submit", async (event) => {
    event.preventDefault();
    const message = field("message").value.trim();
    if (!message) return;
    field("send").disabled = true;
    notice("");
    try {
      field("message").value = "";
      await send(message);
    } catch (error) {
      failed(error);
    } finally {
      field("send").disabled = false;
      field("message").focus();
    }
  });
  load().catch(failed);
})();
