// Usage and credits: usage by day and model, the ledger with filters and paging, CSV export.
"use strict";

(function () {
  const { api, query, h, table, credits, when, barChart, isoDay, failed } = window.Console;
  const field = (id) => document.getElementById(id);
  field("from").value = isoDay(-29);
  field("to").value = isoDay(0);
  let entries = [];
  let cursor = null;
  // Each load takes a number; an answer that arrives after a newer load started is dropped, so
  // a slow first load can never paint over the filters the user has just applied.
  let usageLoad = 0;
  let ledgerLoad = 0;

  function filters() {
    return {
      owner: field("owner").value.trim(),
      route: field("route").value.trim(),
      model: field("model").value.trim(),
      from: field("from").value,
      to: field("to").value,
    };
  }

  async function loadUsage() {
    const mine = ++usageLoad;
    const chosen = filters();
    const [days, models, grants] = await Promise.all([
      api("GET", `/v1/usage${query({ group_by: "day", ...chosen })}`),
      api("GET", `/v1/usage${query({ group_by: "model", ...chosen })}`),
      api("GET", `/v1/credits/ledger${query({ kind: "grant", limit: 100, owner: chosen.owner, from: chosen.from, to: chosen.to })}`),
    ]);
    if (mine !== usageLoad) return;
    field("total-credits").textContent = credits(days.total.credits);
    field("total-credits").dataset.exact = days.total.credits_exact;
    field("total-requests").textContent = days.total.requests;
    field("total-grants").textContent = credits(grants.data.reduce((t, g) => t + g.credits, 0)) + (grants.has_more ? "+" : "");
    barChart(field("by-day"), days.data.map((d) => ({ label: d.key.slice(5), value: d.credits })));
    barChart(field("by-model"), models.data.map((d) => ({ label: d.key, value: d.credits })));
  }

  function ledgerQuery(extra) {
    return query({ ...filters(), kind: field("kind").value, ...extra });
  }

  async function loadLedger(more = false) {
    const mine = ++ledgerLoad;
    const csv = `/v1/credits/ledger${ledgerQuery({ format: "csv" })}`;
    const page = await api("GET", `/v1/credits/ledger${ledgerQuery({ limit: 50, after: more ? cursor : null })}`);
    if (mine !== ledgerLoad) return;
    if (!more) entries = [];
    entries = entries.concat(page.data);
    cursor = page.last_id;
    field("more").hidden = !page.has_more;
    table(field("ledger"), [
      { title: "When", cell: (e) => when(e.created_at) },
      { title: "Kind", cell: (e) => e.kind },
      { title: "Owner", cell: (e) => (e.owner_type === "account" ? "account" : e.owner_id) },
      { title: "Credits", cell: (e) => credits(e.credits), className: "num" },
      { title: "Balance after", cell: (e) => credits(e.balance_after), className: "num" },
      { title: "Route", cell: (e) => e.route || "" },
      { title: "Model", cell: (e) => e.model || "" },
    ], entries, "No entries match.");
    field("csv").href = csv;
  }

  async function refresh() {
    try {
      await Promise.all([loadUsage(), loadLedger()]);
    } catch (error) {
      failed(error);
    }
  }

  field("filters").addEventListener("submit", (event) => {
    event.preventDefault();
    refresh();
  });
  field("kind").addEventListener("change", () => loadLedger().catch(failed));
  field("more").addEventListener("click", () => loadLedger(true).catch(failed));
  refresh();
})();
