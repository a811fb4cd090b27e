// Rendering of conversation parts shared by the playground and the sessions page.
"use strict";

(function () {
  const { h } = window.Console;

  function imageSource(value) {
    if (!value) return null;
    if (value.startsWith("data:image/") || value.startsWith("/")) return value;
    if (/^[A-Za-z0-9+/=\s]+$/.test(value.slice(0, 200))) return `data:image/png;base64,${value}`;
    return null; // another host: the console's policy would refuse it anyway
  }

  // One entry of the transcript: a role and its parts (text, images, tool calls).
  function entry(role, parts) {
    const item = h("li", { className: role }, h("span", { className: "role" }, role));
    for (const part of parts) {
      if (part.text !== undefined) item.append(h("span", { className: "text" }, part.text));
      else if (part.image) {
        const src = imageSource(part.image);
        item.append(src ? h("img", { src, alt: "generated image" }) : h("span", {}, "[image on another host]"));
      } else if (part.call) {
        item.append(h("pre", { className: "json" }, `${part.call.name}(${part.call.arguments})`));
      }
    }
    return item;
  }

  function messageParts(message) {
    return (message.content || []).map((part) => {
      if (part.type === "text") return { text: part.text.value };
      if (part.type === "image_url") return { image: part.image_url.url };
      return { text: `[${part.type}]` };
    });
  }

  // The output items of a Responses payload that a thread message does not show.
  function outputParts(response) {
    const parts = [];
    for (const item of response.output || []) {
      if (item.type === "function_call") parts.push({ call: item });
      if (item.type === "image_generation_call" && item.result) parts.push({ image: item.result });
    }
    return parts;
  }

  window.Transcript = { entry, messageParts, outputParts };
})();
