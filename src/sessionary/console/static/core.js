// The console's shared helpers: API calls with the session cookie and CSRF header, element
// building (text only, never HTML strings), number formats and inline SVG charts.
"use strict";

(function () {
  const csrf = document.querySelector('meta[name="csrf-token"]')?.content || "";

  class ApiError extends Error {
    constructor(status, body) {
      super((body && body.error && body.error.message) || `HTTP ${status}`);
      this.status = status;
      this.body = body;
    }
  }

  async function api(method, path, body, options = {}) {
    const headers = { "x-csrf-token": csrf, accept: "application/json" };
    if (body !== undefined) headers["content-type"] = "application/json";
    const response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: "same-origin",
      signal: options.signal,
    });
    if (options.raw) {
      if (!response.ok) throw new ApiError(response.status, await response.json().catch(() => null));
      return response;
    }
    const data = await response.json().catch(() => null);
    if (response.status === 401) {
      window.location.assign("/console/sign-in");
    }
    if (!response.ok) throw new ApiError(response.status, data);
    return data;
  }

  function query(params) {
    const search = new URLSearchParams();
    for (const [key, value] of Object.entries(params)) {
      if (value !== undefined && value !== null && value !== "") search.set(key, value);
    }
    const text = search.toString();
    return text ? `?${text}` : "";
  }

  function h(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else if (key === "className") node.className = value;
      else node.setAttribute(key, value === true ? "" : value);
    }
    for (const child of children.flat()) {
      if (child === undefined || child === null || child === false) continue;
      node.append(child instanceof Node ? child : String(child));
    }
    return node;
  }

  function table(node, columns, rows, empty = "Nothing yet.") {
    node.replaceChildren();
    const head = h("thead", {}, h("tr", {}, columns.map((c) => h("th", { scope: "col" }, c.title))));
    const body = h("tbody");
    if (!rows.length) {
      body.append(h("tr", {}, h("td", { colspan: columns.length, className: "hint" }, empty)));
    }
    for (const row of rows) {
      body.append(
        h("tr", {}, columns.map((c) => h("td", { "data-label": c.title, className: c.className }, c.cell(row))))
      );
    }
    node.append(head, body);
  }

  function credits(value) {
    const number = Number(value || 0);
    return number.toLocaleString("en-US", { maximumFractionDigits: 6 });
  }

  function when(value) {
    if (!value) return "";
    const date = typeof value === "number" ? new Date(value * 1000) : new Date(value);
    return date.toISOString().replace("T", " ").slice(0, 19);
  }

  function notice(message, kind = "info") {
    const node = document.getElementById("notice");
    if (!node) return;
    node.textContent = message;
    node.className = `notice ${kind}`;
    node.hidden = !message;
  }

  function failed(error) {
    notice(error.message || String(error), "error");
  }

  const SVG = "http://www.w3.org/2000/svg";

  function svg(tag, attrs = {}, text) {
    const node = document.createElementNS(SVG, tag);
    for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
    if (text !== undefined) node.textContent = text;
    return node;
  }

  // A bar chart of [{label, value}] drawn to the container's width; labels thin out when dense.
  function barChart(container, points, { unit = "" } = {}) {
    container.replaceChildren();
    const width = Math.max(container.clientWidth || 600, 280);
    const height = 180;
    const pad = { left: 48, right: 8, top: 8, bottom: 36 };
    const max = Math.max(...points.map((p) => p.value), 0) || 1;
    const chart = svg("svg", { viewBox: `0 0 ${width} ${height}`, width: "100%", height, class: "bars" });
    const inner = width - pad.left - pad.right;
    const step = inner / Math.max(points.length, 1);
    const every = Math.ceil(points.length / Math.max(1, Math.floor(inner / 70)));
    for (const fraction of [0, 0.5, 1]) {
      const y = pad.top + (height - pad.top - pad.bottom) * (1 - fraction);
      chart.append(svg("line", { x1: pad.left, x2: width - pad.right, y1: y, y2: y, class: "grid" }));
      chart.append(svg("text", { x: pad.left - 4, y: y + 4, "text-anchor": "end", class: "axis" }, credits(max * fraction)));
    }
    points.forEach((point, index) => {
      const barHeight = ((height - pad.top - pad.bottom) * point.value) / max;
      const x = pad.left + index * step + step * 0.1;
      const bar = svg("rect", {
        x, y: height - pad.bottom - barHeight, width: Math.max(step * 0.8, 1), height: barHeight, class: "bar",
      });
      bar.append(svg("title", {}, `${point.label}: ${credits(point.value)}${unit}`));
      chart.append(bar);
      if (index % every === 0) {
        const label = point.label.length > 12 ? `${point.label.slice(0, 11)}…` : point.label;
        chart.append(svg("text", { x: x + step * 0.4, y: height - pad.bottom + 14, "text-anchor": "middle", class: "axis" }, label));
      }
    });
    if (!points.length) chart.append(svg("text", { x: width / 2, y: height / 2, "text-anchor": "middle", class: "axis" }, "No data"));
    container.append(chart);
  }

  function isoDay(offsetDays = 0) {
    const day = new Date(Date.now() + offsetDays * 86400000);
    return day.toISOString().slice(0, 10);
  }

  // Server-Sent Events from a fetch body: yields {event, data} with data parsed as JSON.
  async function* events(response) {
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        let event = "message";
        const data = [];
        for (const line of block.split("\n")) {
          if (line.startsWith("event:")) event = line.slice(6).trim();
          else if (line.startsWith("data:")) data.push(line.slice(5).trimStart());
        }
        if (!data.length) continue;
        const text = data.join("\n");
        if (text === "[DONE]") return;
        yield { event, data: JSON.parse(text) };
      }
    }
  }

  window.Console = { api, query, h, table, credits, when, notice, failed, barChart, isoDay, events, csrf };
})();
