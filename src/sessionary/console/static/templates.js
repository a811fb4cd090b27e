// Search templates: list, upload (.json / .jsonl / .csv) in batches with a progress bar, the
// detected schema and its field options, and a search playground with editable filter chips.
"use strict";

(function () {
  const { api, h, table, when, notice, failed } = window.Console;
  const field = (id) => document.getElementById(id);
  const BATCH = 50;
  let templates = [];
  let current = null;
  let chips = {};

  // RFC 4180 CSV: quoted fields, doubled quotes, CRLF or LF line ends.
  function parseCsv(text) {
    const rows = [];
    let row = [];
    let value = "";
    let quoted = false;
    for (let i = 0; i < text.length; i += 1) {
      const c = text[i];
      if (quoted) {
        if (c === '"' && text[i + 1] === '"') { value += '"'; i += 1; }
        else if (c === '"') quoted = false;
        else value += c;
      } else if (c === '"') quoted = true;
      else if (c === ",") { row.push(value); value = ""; }
      else if (c === "\n" || c === "\r") {
        if (c === "\r" && text[i + 1] === "\n") i += 1;
        row.push(value); rows.push(row); row = []; value = "";
      } else value += c;
    }
    if (value !== "" || row.length) { row.push(value); rows.push(row); }
    const [header, ...body] = rows.filter((r) => r.some((v) => v !== ""));
    if (!header) return [];
    const typed = (v) => (v.trim() !== "" && !Number.isNaN(Number(v)) ? Number(v) : v);
    return body.map((r) => Object.fromEntries(header.map((name, i) => [name.trim(), typed(r[i] ?? "")])));
  }

  function parseRecords(name, text) {
    const lower = name.toLowerCase();
    if (lower.endsWith(".csv")) return parseCsv(text);
    if (lower.endsWith(".jsonl")) return text.split(/\r?\n/).filter((l) => l.trim()).map((l) => JSON.parse(l));
    const data = JSON.parse(text);
    if (Array.isArray(data)) return data;
    if (data && Array.isArray(data.records)) return data.records;
    throw new Error("A .json file holds an array of records (or {\"records\": [...]}).");
  }

  async function loadTemplates(select) {
    const listed = await api("GET", "/v1/chat/embedding_templates?limit=100");
    templates = listed.templates;
    field("list").replaceChildren(
      ...templates.map((t) =>
        h("li", {}, h("button", { type: "button", "aria-current": current && current.template_id === t.template_id ? "true" : "false", onclick: () => show(t) },
          t.name || t.template_id, h("small", {}, `${t.record_count} records · ${when(t.updated_at)}`)))
      )
    );
    if (!templates.length) field("list").append(h("li", { className: "hint" }, "No templates yet."));
    const target = field("target");
    target.replaceChildren(h("option", { value: "" }, "A new template"),
      ...templates.map((t) => h("option", { value: t.template_id }, t.name || t.template_id)));
    if (select) show(templates.find((t) => t.template_id === select) || templates[0]);
  }

  function show(template) {
    current = template;
    field("template-title").textContent = `Schema of ${template.name || template.template_id}`;
    table(field("schema"), [
      { title: "Field", cell: (f) => f.key },
      { title: "Kind", cell: (f) => f.kind + (f.private ? " (private)" : "") },
      { title: "Samples", cell: (f) => (f.sampleValues || []).map(String).join(", ") },
    ], [...template.structured_fields, ...template.unstructured_fields.map((key) => ({ key, kind: "text", sampleValues: [] }))]);
    const options = template.field_options || {};
    const keys = [...new Set([...template.structured_fields.map((f) => f.key), ...template.unstructured_fields])];
    const flag = (key, name) => {
      const value = options[key] && options[key][name];
      return h("input", { type: "checkbox", "data-field": key, "data-flag": name, checked: value !== false, "aria-label": `${key} ${name}` });
    };
    table(field("options-table"), [
      { title: "Field", cell: (k) => k },
      { title: "Searchable", cell: (k) => flag(k, "searchable") },
      { title: "Filterable", cell: (k) => flag(k, "filterable") },
      { title: "Retrievable", cell: (k) => flag(k, "retrievable") },
      { title: "Aliases", cell: (k) => h("input", { "data-field": k, "data-flag": "aliases", value: ((options[k] || {}).aliases || []).join(", "), "aria-label": `${k} aliases` }) },
    ], keys);
    field("options").hidden = !keys.length;
    loadTemplates();
  }

  field("upload").addEventListener("submit", async (event) => {
    event.preventDefault();
    const file = field("file").files[0];
    if (!file) return;
    const progress = field("progress");
    const status = field("progress-text");
    try {
      const records = parseRecords(file.name, await file.text());
      if (!records.length) throw new Error("The file holds no records.");
      progress.hidden = false;
      progress.value = 0;
      let templateId = field("target").value;
      for (let start = 0; start < records.length; start += BATCH) {
        const batch = records.slice(start, start + BATCH);
        const answer = templateId
          ? await api("POST", "/v1/chat/update_embedding", { template_id: templateId, records: batch })
          : await api("POST", "/v1/chat/create_embedding", { records: batch, name: field("name").value.trim() || file.name });
        templateId = answer.template_id;
        const done = Math.min(start + BATCH, records.length);
        progress.value = Math.round((100 * done) / records.length);
        status.textContent = `${done} of ${records.length} records embedded.`;
      }
      notice(`Uploaded ${records.length} records into ${templateId}.`, "ok");
      await loadTemplates(templateId);
    } catch (error) {
      failed(error);
    }
  });

  field("options").addEventListener("submit", async (event) => {
    event.preventDefault();
    const options = {};
    for (const input of field("options-table").querySelectorAll("input")) {
      const entry = (options[input.dataset.field] ||= {});
      if (input.dataset.flag === "aliases") {
        const aliases = input.value.split(",").map((a) => a.trim()).filter(Boolean);
        if (aliases.length) entry.aliases = aliases;
      } else entry[input.dataset.flag] = input.checked;
    }
    try {
      await api("POST", "/v1/chat/update_embedding", { template_id: current.template_id, records: [], field_options: options });
      notice("Field options saved.", "ok");
      await loadTemplates(current.template_id);
    } catch (error) {
      failed(error);
    }
  });

  function renderChips() {
    const node = field("chips");
    node.replaceChildren();
    for (const [key, condition] of Object.entries(chips)) {
      const input = h("input", { value: JSON.stringify(condition), "aria-label": `Filter ${key}` });
      input.addEventListener("change", () => {
        try { chips[key] = JSON.parse(input.value); } catch (error) { chips[key] = input.value; }
      });
      node.append(h("span", { className: "chip", "data-field": key }, `${key}: `, input,
        h("button", { type: "button", "aria-label": `Remove filter ${key}`, onclick: () => { delete chips[key]; renderChips(); } }, "×")));
    }
    if (Object.keys(chips).length) {
      node.append(h("button", { type: "button", className: "secondary", onclick: () => search(true) }, "Search with these filters"));
    }
  }

  async function search(withChips) {
    if (!current) { notice("Pick a template first.", "error"); return; }
    const body = {
      template_id: current.template_id,
      search_term: field("term").value.trim(),
      rerank: field("rerank").checked,
      limit: Number(field("limit").value) || 10,
      include_raw: true,
    };
    if (withChips) body.structured_filters = chips;
    const started = performance.now();
    try {
      const found = await api("POST", "/v1/chat/search_against_embedding", body);
      field("took").textContent = `${found.results.length} results in ${Math.round(performance.now() - started)} ms${body.rerank ? " (reranked)" : ""}.`;
      chips = { ...found.structured_filters };
      renderChips();
      field("results").replaceChildren(
        ...found.results.map((r) => h("li", {}, h("strong", {}, `score ${Number(r.score).toFixed(4)}`), " ", h("code", {}, r.id),
          h("pre", {}, JSON.stringify(r.record || r.structured_filters, null, 1))))
      );
      if (found.notice) notice(found.notice);
    } catch (error) {
      failed(error);
    }
  }

  field("search").addEventListener("submit", (event) => {
    event.preventDefault();
    search(false);
  });
  loadTemplates().catch(failed);
})();
