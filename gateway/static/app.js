// The gateway page: polls /api/v1/swarm every update period and draws, per model, a
// table of servers x blocks; streams chat answers from /v1/chat/completions (SSE).
"use strict";

let period = 2.0;          // seconds; the API says the gateway's value
let servedModel = null;
const conversation = [];

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child);
  return node;
}

function fmt(x, digits = 1) { return x === null || x === undefined ? "–" : Number(x).toFixed(digits); }

function totalBox(label, value, id) {
  return el("div", { class: "total", "data-total": id }, el("b", { text: String(value) }), label);
}

// Blocks held by an online server that answers the gateway's ping: what a route can use now.
function reachableBlocks(m) {
  const blocks = new Set();
  for (const s of m.servers) {
    if (s.state !== "online" || !s.reachable) continue;
    for (let b = s.blocks[0]; b < s.blocks[1]; b++) blocks.add(b);
  }
  return blocks;
}

function drawTotals(models) {
  const box = document.getElementById("totals");
  box.replaceChildren();
  for (const m of models) {
    const t = m.totals;
    const reachable = m.servers.filter((s) => s.reachable).length;
    box.append(
      totalBox(`${m.model}: servers`, t.servers, "servers"),
      totalBox("online", t.online, "online"),
      totalBox("reachable", `${reachable}/${t.servers}`, "reachable"),
      totalBox("blocks covered", `${t.covered_blocks}/${m.num_blocks}`, "covered"),
      totalBox("blocks reachable", `${reachableBlocks(m).size}/${m.num_blocks}`, "reachable-blocks"),
      totalBox("slowest block, tok/s", fmt(t.min_block_inference_tokens_per_s), "speed"),
      totalBox("state", m.complete ? "complete" : "INCOMPLETE", "complete"));
  }
}

function nextHops(server) {
  const hops = Object.entries(server.next_hop_rtt_ms || {});
  return hops.length ? hops.map(([id, ms]) => `→${id.slice(0, 8)} ${fmt(ms)} ms`).join(", ") : "–";
}

function serverRow(m, s) {
  const state = s.reachable ? s.state : "unreachable";
  const row = el("tr", { class: s.reachable ? "" : "unreachable", "data-server-id": s.server_id,
    "data-state": s.state, "data-reachable": String(s.reachable) });
  row.append(el("td", { class: "info", text: s.short_id, title: s.server_id }),
    el("td", { class: "info", text: s.address }),
    el("td", { class: "info", text: s.reachable ? s.state : `${s.state}, UNREACHABLE` }),
    el("td", { class: "info", text: `${s.blocks[0]}:${s.blocks[1]}` }),
    el("td", { class: "info", text: fmt(s.inference_tokens_per_s) }),
    el("td", { class: "info", text: fmt(s.forward_tokens_per_s) }),
    el("td", { class: "info", text: String(s.free_cache_tokens) }),
    el("td", { class: "info", text: s.reachable ? `${fmt(s.ping_ms, 2)} ms` : "no answer" }),
    el("td", { class: "info", text: nextHops(s) }));
  for (let b = 0; b < m.num_blocks; b++) {
    const held = b >= s.blocks[0] && b < s.blocks[1];
    row.append(el("td", held ? { class: `block ${state}`, "data-block": String(b), title: `block ${b}` }
                             : { class: "block" }));
  }
  return row;
}

function drawMap(m) {
  const head = el("tr", {}, ...["server", "address", "state", "blocks", "infer tok/s", "fwd tok/s",
    "free cache", "ping", "next hops"].map((h) => el("th", { text: h })));
  for (let b = 0; b < m.num_blocks; b++) head.append(el("th", { text: b % 5 === 0 ? String(b) : "" }));
  const table = el("table", { class: "map", "data-model": m.model }, head);
  for (const s of m.servers) table.append(serverRow(m, s));
  const foot = el("tr", {}, el("td", { colspan: "9", class: "muted",
    text: "online servers per block (red: none reachable)" }));
  const reachable = reachableBlocks(m);
  for (const b of m.blocks) {
    foot.append(el("td", { class: reachable.has(b.block) ? "" : "gap", "data-block-online": String(b.block),
                           text: String(b.online) }));
  }
  table.append(foot);
  return el("div", {}, el("h3", { text: `${m.model}: ${m.num_blocks} blocks` }), table);
}

async function refresh() {
  const began = Date.now();
  const status = document.getElementById("status");
  try {
    const response = await fetch("/api/v1/swarm", { cache: "no-store" });
    const data = await response.json();
    period = data.gateway.update_period_s || period;
    servedModel = data.gateway.model;
    document.getElementById("model-name").textContent = `— ${servedModel}`;
    drawTotals(data.models);
    document.getElementById("maps").replaceChildren(...data.models.map(drawMap));
    status.textContent = `updated ${new Date().toLocaleTimeString()} (every ${period} s)`;
    status.dataset.updated = String(Date.now());
  } catch (error) {
    status.textContent = `cannot reach the gateway: ${error}`;
  } finally {
    // a fixed rate: the next refresh is one period after this one began
    setTimeout(refresh, Math.max(period * 1000 - (Date.now() - began), 0));
  }
}

function addMessage(role, text) {
  const box = document.getElementById("messages");
  const node = el("div", { class: `msg ${role}`, "data-role": role, text });
  box.append(node);
  box.scrollTop = box.scrollHeight;
  return node;
}

// Reads an SSE body: calls onData with each `data:` payload (JSON parsed) until [DONE].
async function readEvents(response, onData) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const event = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      for (const line of event.split("\n")) {
        if (!line.startsWith("data: ")) continue;
        const payload = line.slice(6);
        if (payload === "[DONE]") return;
        onData(JSON.parse(payload));
      }
    }
  }
}

async function send(text) {
  conversation.push({ role: "user", content: text });
  addMessage("user", text);
  const answer = addMessage("assistant", "");
  answer.dataset.done = "false";
  const temperature = Number(document.getElementById("temperature").value) || 0;
  const button = document.getElementById("chat-send");
  button.disabled = true;
  try {
    const response = await fetch("/v1/chat/completions", { method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ model: servedModel || undefined, messages: conversation, stream: true,
                             temperature, max_tokens: 256 }) });
    if (!response.ok) throw new Error((await response.json()).error.message);
    await readEvents(response, (chunk) => {
      if (chunk.error) throw new Error(chunk.error.message);
      const delta = chunk.choices.length ? chunk.choices[0].delta.content : "";
      if (delta) answer.textContent += delta;
    });
    conversation.push({ role: "assistant", content: answer.textContent });
  } catch (error) {
    answer.classList.add("error");
    answer.textContent += ` [error: ${error.message}]`;
    conversation.pop();
  } finally {
    answer.dataset.done = "true";
    button.disabled = false;
  }
}

document.getElementById("chat-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const input = document.getElementById("chat-input");
  const text = input.value.trim();
  if (text) { input.value = ""; send(text); }
});
document.getElementById("chat-input").addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey) {
    event.preventDefault();
    document.getElementById("chat-form").requestSubmit();
  }
});
refresh();
