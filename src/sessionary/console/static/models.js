// Models and health: the configured models, liveness, readiness and the API base URL.
"use strict";

(async function () {
  const { api, table, failed } = window.Console;
  const show = async (id, path) => {
    const node = document.getElementById(id);
    try {
      const response = await fetch(path, { headers: { accept: "application/json" } });
      const body = await response.json();
      node.textContent = response.ok ? body.status || "ok" : `failing (${response.status})`;
    } catch (error) {
      node.textContent = "unreachable";
    }
  };
  show("health", "/healthz");
  show("ready", "/readyz");
  try {
    const [models, door] = await Promise.all([
      api("GET", "/v1/models"),
      api("GET", "/"),
    ]);
    document.getElementById("base-url").textContent = door.base_url;
    table(document.getElementById("models"), [
      { title: "Model", cell: (m) => m.id },
      { title: "Provider", cell: (m) => m.owned_by },
    ], models.data, "No model configured.");
  } catch (error) {
    failed(error);
  }
})();
