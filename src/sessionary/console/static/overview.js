// Overview: balance, spend over 7 and 30 days, requests by route and model, recent errors.
"use strict";

(async function () {
  const { api, query, table, credits, when, barChart, isoDay, failed } = window.Console;
  const window30 = { from: isoDay(-29), to: isoDay(0) };
  try {
    const [balance, days, routes, models, releases, charges] = await Promise.all([
      api("GET", "/v1/credits"),
      api("GET", `/v1/usage${query({ group_by: "day", ...window30 })}`),
      api("GET", `/v1/usage${query({ group_by: "route", ...window30 })}`),
      api("GET", `/v1/usage${query({ group_by: "model", ...window30 })}`),
      api("GET", `/v1/credits/ledger${query({ kind: "release", limit: 100, from: window30.from })}`),
      api("GET", `/v1/credits/ledger${query({ kind: "charge", limit: 100, from: window30.from })}`),
    ]);
    document.getElementById("balance").textContent = credits(balance.remainingCredits);
    const last7 = days.data.slice(-7);
    const sum = (rows, key) => rows.reduce((total, row) => total + row[key], 0);
    document.getElementById("spend7").textContent = credits(sum(last7, "credits"));
    document.getElementById("requests7").textContent = `${sum(last7, "requests")} requests`;
    document.getElementById("spend30").textContent = credits(days.total.credits);
    document.getElementById("requests30").textContent = `${days.total.requests} requests`;
    barChart(document.getElementById("chart"), days.data.map((d) => ({ label: d.key.slice(5), value: d.credits })));
    const columns = (name) => [
      { title: name, cell: (r) => r.key },
      { title: "Requests", cell: (r) => r.requests, className: "num" },
      { title: "Credits", cell: (r) => credits(r.credits), className: "num" },
    ];
    table(document.getElementById("by-route"), columns("Route"), routes.data);
    table(document.getElementById("by-model"), columns("Model"), models.data);
    // A hold given back with no charge on the same reservation: the request failed.
    const charged = new Set(charges.data.map((c) => c.reservation_id).filter(Boolean));
    const errors = releases.data.filter((r) => r.reservation_id && !charged.has(r.reservation_id)).slice(0, 10);
    table(
      document.getElementById("errors"),
      [
        { title: "When", cell: (r) => when(r.created_at) },
        { title: "Route", cell: (r) => r.route || "" },
        { title: "Owner", cell: (r) => r.owner_id },
        { title: "Request", cell: (r) => r.request_id || "" },
      ],
      errors,
      "No failed requests."
    );
  } catch (error) {
    failed(error);
  }
})();
