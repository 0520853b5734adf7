// The cluster dashboard. It follows /api/cluster/stream and, for the cart
// being inspected, /api/carts/{id}/events, both as Server-Sent Events read
// through fetch (EventSource cannot send the token). Every value from the
// network goes into the page with textContent, never as markup.
"use strict";

const TOKEN_KEY = "cart-actor-internal-token";
const SPARK_POINTS = 60;
const RETRY_MS = 1000;

const $ = (id) => document.getElementById(id);

class Unauthorized extends Error {}

function headers() {
  const token = sessionStorage.getItem(TOKEN_KEY);
  return token ? { Authorization: `Bearer ${token}` } : {};
}

async function getJson(path) {
  const r = await fetch(path, { headers: headers(), cache: "no-store" });
  if (r.status === 401) throw new Unauthorized();
  if (r.status === 404) return null;
  if (!r.ok) throw new Error(`${path}: ${r.status} ${await r.text()}`);
  return r.json();
}

// Reads an SSE stream, calling onEvent(type, data) per message, until the
// stream ends or `signal` aborts. Throws Unauthorized on 401.
async function follow(path, onEvent, signal) {
  const r = await fetch(path, { headers: { ...headers(), Accept: "text/event-stream" }, signal, cache: "no-store" });
  if (r.status === 401) throw new Unauthorized();
  if (!r.ok) throw new Error(`${path}: ${r.status}`);
  const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let type = "message";
      const data = [];
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) type = line.slice(6).trim();
        else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
      }
      if (data.length) onEvent(type, data.join("\n"));
    }
  }
}

// Runs `connect` again and again, with the live marker `marker` on while a
// stream is open; asks for the token on 401.
async function keepFollowing(connect, marker, signal) {
  while (!signal.aborted) {
    try {
      await connect(() => marker.classList.remove("off"));
    } catch (e) {
      if (e instanceof Unauthorized) return askForToken();
      if (signal.aborted) return;
    }
    marker.classList.add("off");
    await new Promise((done) => setTimeout(done, RETRY_MS));
  }
}

// Builds an element: el("td", { class: "num" }, "text", child, ...).
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v !== undefined && v !== null && v !== false) node.setAttribute(k, v);
  }
  for (const child of children) {
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

const number = new Intl.NumberFormat("en-US", { maximumFractionDigits: 1 });
const clock = new Intl.DateTimeFormat("en-GB", { hour: "2-digit", minute: "2-digit", second: "2-digit" });
const day = new Intl.DateTimeFormat("en-GB", { dateStyle: "medium", timeStyle: "medium" });

function money(minor, currency) {
  try {
    return new Intl.NumberFormat("sv-SE", { style: "currency", currency: currency || "SEK" }).format(minor / 100);
  } catch {
    return `${(minor / 100).toFixed(2)} ${currency}`;
  }
}

function ago(ms) {
  if (ms < 1000) return `${ms} ms ago`;
  return `${number.format(ms / 1000)} s ago`;
}

// ---- the cluster view --------------------------------------------------

const samples = new Map(); // host -> { mutations, reads, at }
const spark = { mutations: [], reads: [] };

function rate(host, load, at) {
  const last = samples.get(host);
  samples.set(host, { mutations: load.mutations, reads: load.reads, at });
  if (!last || at <= last.at || load.mutations < last.mutations || load.reads < last.reads) return null;
  const seconds = (at - last.at) / 1000;
  return { mutations: (load.mutations - last.mutations) / seconds, reads: (load.reads - last.reads) / seconds };
}

function drawSpark(svg, values) {
  const max = Math.max(1, ...values);
  const step = 120 / (SPARK_POINTS - 1);
  const start = SPARK_POINTS - values.length;
  const points = values.map((v, i) => `${((start + i) * step).toFixed(1)},${(27 - (v / max) * 25).toFixed(1)}`);
  svg.querySelector("polyline").setAttribute("points", points.join(" "));
}

// A share bar; its width is set through the CSSOM (the policy forbids
// inline style attributes).
function bar(percent) {
  const fill = el("div");
  fill.style.width = `${percent.toFixed(1)}%`;
  return el("div", { class: "bar" }, fill);
}

function health(member) {
  if (member.me) return el("span", { class: "health ok" }, "this node");
  if (member.misses === 0) return el("span", { class: "health ok" }, "healthy");
  return el("span", { class: "health warn" }, `${member.misses} missed ping${member.misses > 1 ? "s" : ""}`);
}

function showCluster(view) {
  const at = Date.now();
  $("node").textContent = view.node;
  $("view-version").textContent = view.viewVersion;
  const state = $("node-state");
  const [label, kind] = view.closing ? ["leaving", "warn"] : !view.ready ? ["not ready", "bad"]
    : !view.lease ? ["no lease", "bad"] : ["serving", "ok"];
  state.textContent = label;
  state.className = `pill ${kind}`;

  const members = view.members || [];
  const resident = members.reduce((sum, m) => sum + (m.load ? m.load.resident_carts : 0), 0);
  let totalMutations = 0, totalReads = 0;
  const rows = members.map((m) => {
    const r = m.load ? rate(m.host, m.load, at) : null;
    if (r) { totalMutations += r.mutations; totalReads += r.reads; }
    const carts = m.load ? m.load.resident_carts : null;
    const share = carts === null || resident === 0 ? 0 : (100 * carts) / resident;
    return el("tr", { class: "member", "data-host": m.host },
      el("td", {}, el("span", { class: "host" }, m.host), m.me ? el("span", { class: "me" }, "this node") : ""),
      el("td", {}, health(m)),
      el("td", {}, m.me ? "–" : ago(m.last_ok_ago_ms)),
      el("td", { class: "num carts" }, carts === null ? "–" : number.format(carts)),
      el("td", { class: "share" }, bar(share)),
      el("td", { class: "num" }, r ? number.format(r.mutations) : "…"),
      el("td", { class: "num" }, r ? number.format(r.reads) : "…"));
  });
  $("members").replaceChildren(...rows);
  $("total-members").textContent = members.length;
  $("total-carts").textContent = number.format(resident);
  $("total-mutations").textContent = number.format(totalMutations);
  $("total-reads").textContent = number.format(totalReads);
  for (const [key, value] of [["mutations", totalMutations], ["reads", totalReads]]) {
    spark[key].push(value);
    if (spark[key].length > SPARK_POINTS) spark[key].shift();
    drawSpark($(`spark-${key}`), spark[key]);
  }

  const changes = view.recentChanges || [];
  $("no-changes").hidden = changes.length > 0;
  $("changes").replaceChildren(...changes.map((c) => el("li", {},
    el("span", { class: "when" }, clock.format(new Date(c.at_ms))),
    el("span", { class: `event ${c.event}` }, c.event),
    el("span", {}, c.host),
    el("span", { class: "muted" }, `view ${c.view_version} · ${c.members} member${c.members === 1 ? "" : "s"}`))));
}

// ---- the cart inspector ------------------------------------------------

let inspecting = null; // AbortController of the inspected cart's stream

const empty = (v) => v === "" || v === 0 || v === null || v === undefined || (Array.isArray(v) && v.length === 0);

// A nested value without its empty fields, as short text.
function brief(v) {
  if (Array.isArray(v)) return `[${v.map(brief).join(", ")}]`;
  if (v && typeof v === "object") {
    return `{${Object.entries(v).filter(([, x]) => !empty(x)).map(([k, x]) => `${k}: ${brief(x)}`).join(", ")}}`;
  }
  return String(v);
}

// An event's fields that say most, at most four, without the empty ones.
function summary(data) {
  if (!data || typeof data !== "object") return "";
  const preferred = ["sku", "name", "quantity", "id", "provider", "price", "orderId", "status"];
  const keys = [...preferred.filter((k) => k in data), ...Object.keys(data).filter((k) => !preferred.includes(k))];
  const parts = [];
  for (const k of keys) {
    if (empty(data[k])) continue;
    parts.push(`${k}=${brief(data[k])}`);
    if (parts.length === 4) break;
  }
  return parts.join("  ");
}

function showState(cart) {
  $("cart-name").textContent = cart.id;
  $("cart-version").textContent = cart.version;
  const flags = [];
  if (cart.processing) flags.push(el("span", { class: "flag" }, "checkout"));
  if (cart.paymentInProgress) flags.push(el("span", { class: "flag" }, "payment in progress"));
  $("cart-flags").replaceChildren(...flags);
  $("cart-lines").replaceChildren(...(cart.items || []).map((item) => el("tr", { class: "line" },
    el("td", {}, item.id),
    el("td", { class: "sku" }, item.sku),
    el("td", { class: "product" }, item.name),
    el("td", { class: "num qty" }, item.qty),
    el("td", { class: "num" }, money(item.price * item.qty, cart.currency)))));
  $("cart-total").textContent = money(cart.totalPrice, cart.currency);
  $("cart-deliveries").replaceChildren(...(cart.deliveries || []).map((d) => el("div", { class: "delivery" },
    `Delivery ${d.id}: ${d.provider}, ${money(d.price, cart.currency)}`,
    d.pickupPoint ? el("span", { class: "pickup" }, ` · pickup at ${d.pickupPoint.name || d.pickupPoint.id}`) : "")));
}

let shownVersion = 0;

function showHistory(history) {
  const items = [];
  if (history.snapshot) {
    items.push(el("li", { class: "snapshot" },
      el("span", { class: "when" }, day.format(new Date(history.snapshot.atMs))),
      el("span", { class: "type" }, "snapshot"),
      el("span", { class: "muted" }, `versions 1–${history.snapshot.version} folded in`)));
  }
  if (history.omitted > 0) {
    items.push(el("li", { class: "snapshot" }, el("span", { class: "muted" }, `${history.omitted} older events not shown`)));
  }
  for (const e of history.events) {
    items.push(el("li", { class: `event-row${e.version > shownVersion && shownVersion > 0 ? " fresh" : ""}`, title: JSON.stringify(e.data) },
      el("span", { class: "when" }, `v${e.version} · ${clock.format(new Date(e.atMs))}`),
      el("span", { class: "type" }, e.type),
      el("span", { class: "detail" }, e.error ? e.error : summary(e.data))));
  }
  shownVersion = history.version;
  $("timeline").replaceChildren(...items.reverse());
}

async function refreshCart(id) {
  const [cart, history] = await Promise.all([
    getJson(`/api/carts/${encodeURIComponent(id)}`),
    getJson(`/api/carts/${encodeURIComponent(id)}/history`),
  ]);
  if (cart) showState(cart);
  if (history) showHistory(history);
  return cart !== null;
}

async function inspect(id) {
  if (inspecting) inspecting.abort();
  inspecting = new AbortController();
  const signal = inspecting.signal;
  shownVersion = 0;
  $("cart-error").hidden = true;
  $("cart").hidden = true;
  location.hash = `cart=${encodeURIComponent(id)}`;
  try {
    if (!(await refreshCart(id))) {
      $("cart-error").textContent = `No cart ${id} (or it was erased).`;
      $("cart-error").hidden = false;
    }
  } catch (e) {
    if (e instanceof Unauthorized) return askForToken();
    $("cart-error").textContent = String(e.message || e);
    $("cart-error").hidden = false;
  }
  $("cart").hidden = !$("cart-error").hidden;
  // Every new state of the cart, wherever it lives, refreshes the view.
  keepFollowing((opened) => follow(`/api/carts/${encodeURIComponent(id)}/events`, () => {
    opened();
    $("cart").hidden = false;
    $("cart-error").hidden = true;
    refreshCart(id).catch(() => {});
  }, signal), $("cart-live"), signal);
}

// ---- start -------------------------------------------------------------

let started = null;

function askForToken(message) {
  if (started) started.abort();
  started = null;
  $("dashboard").hidden = true;
  $("login").hidden = false;
  $("login-error").hidden = !message;
  $("login-error").textContent = message || "";
  $("token").focus();
}

async function start() {
  try {
    const first = await getJson("/api/cluster");
    if (first) showCluster(first);
  } catch (e) {
    if (e instanceof Unauthorized) {
      const hadToken = sessionStorage.getItem(TOKEN_KEY) !== null;
      sessionStorage.removeItem(TOKEN_KEY);
      return askForToken(hadToken ? "That token was refused." : "");
    }
  }
  $("login").hidden = true;
  $("dashboard").hidden = false;
  started = new AbortController();
  const signal = started.signal;
  keepFollowing((opened) => follow("/api/cluster/stream", (type, data) => {
    opened();
    if (type === "cluster") showCluster(JSON.parse(data));
  }, signal), $("live"), signal);
  const fromHash = new URLSearchParams(location.hash.slice(1)).get("cart");
  if (fromHash) {
    $("cart-id").value = fromHash;
    inspect(fromHash);
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("login").addEventListener("submit", (e) => {
    e.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, $("token").value.trim());
    start();
  });
  $("inspect").addEventListener("submit", (e) => {
    e.preventDefault();
    const id = $("cart-id").value.trim();
    if (id) inspect(id);
  });
  start();
});
