// The Customer 360 page. Plain JavaScript, no dependencies, nothing fetched
// from outside. Every value that came from an event or an identifier is put
// into the page as text (text nodes, textContent), never parsed as markup.
"use strict";

const SVG_NS = "http://www.w3.org/2000/svg";
const CHANNELS = ["web", "pos", "app", "call_center"];
const NS_COLOURS = {
  customer_id: "#2f6fde", loyalty_id: "#1b9e77", email_sha256: "#7b4fd6", phone_sha256: "#d95f02",
  device_id: "#e7298a", cookie_id: "#66a61e", card_token: "#a6761d",
};
const HASHED = new Set(["email_sha256", "phone_sha256"]);

const state = { oneId: null, shown: "", settings: null, poll: null, erasing: false };

// ---------- DOM helpers: text only ----------

// An element with attributes and children (text for anything not a node).
function fill(e, attrs, children) {
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v !== undefined && v !== null) e.setAttribute(k, String(v));
  }
  for (const c of children) {
    if (c === null || c === undefined) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

function el(tag, attrs, ...children) {
  return fill(document.createElement(tag), attrs, children);
}

function svg(tag, attrs, ...children) {
  return fill(document.createElementNS(SVG_NS, tag), attrs, children);
}

function clear(node) {
  while (node.firstChild) node.removeChild(node.firstChild);
  return node;
}

const $ = (id) => document.getElementById(id);

function message(text, isError) {
  const m = $("message");
  m.textContent = text || "";
  m.className = isError ? "error" : "";
}

function fmtTime(s) {
  if (!s) return "–";
  return s.replace("T", " ").replace(/\.\d+Z$/, "Z").replace(/:00Z$/, "Z");
}

function fmtMoney(v) {
  return v === null || v === undefined ? "" : Number(v).toFixed(2);
}

// A hash is shown as a hash: its namespace says so, and it is shortened.
function showValue(namespace, value) {
  if (HASHED.has(namespace) && value.length > 16) return "sha256:" + value.slice(0, 12) + "…";
  return value;
}

function profileLink(oneId, text) {
  const a = el("a", { href: "/ui/profiles/one_id/" + encodeURIComponent(oneId) }, text || oneId);
  a.addEventListener("click", (e) => {
    e.preventDefault();
    openOneId(oneId, true);
  });
  return a;
}

// ---------- API ----------

function token() {
  return sessionStorage.getItem("onejourney.token") || "";
}

// Erasing is a power of its own: the erase token, kept for this tab like the
// API token, and sent only with DELETE.
function eraseToken() {
  return sessionStorage.getItem("onejourney.erase_token") || "";
}

async function api(method, path, body, bearer) {
  const headers = { Accept: "application/json" };
  const tok = bearer === undefined ? token() : bearer;
  if (tok) headers.Authorization = "Bearer " + tok;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const r = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  let data = null;
  try {
    data = await r.json();
  } catch (_) {
    data = null;
  }
  if (r.status === 401 && bearer === undefined) {
    message("This engine needs an API token: enter it above.", true);
    $("token").focus();
  }
  return { status: r.status, data };
}

// The page's settings (timer delays) come through the same helper as the API.
async function settings() {
  if (!state.settings) {
    const { status, data } = await api("GET", "/ui/settings.json");
    state.settings = status === 200 && data ? data : {};
  }
  return state.settings;
}

// ---------- recent list ----------

async function loadRecent() {
  const { status, data } = await api("GET", "/v1/profiles/recent?limit=15");
  const body = clear($("recent"));
  if (status !== 200 || !data) return;
  for (const p of data.profiles) {
    const id = p.identifier ? p.identifier.namespace + ": " + showValue(p.identifier.namespace, p.identifier.value) : "";
    body.append(el("tr", {},
      el("td", {}, fmtTime(p.last_seen)),
      el("td", { class: "mono" }, profileLink(p.one_id)),
      el("td", {}, id),
      el("td", {}, p.stage),
      el("td", {}, p.tier),
      el("td", {}, p.channels_touched.join(", "))));
  }
}

// ---------- lookups ----------

async function lookup(namespace, value, push) {
  message("Looking up…");
  const { status, data } = await api("POST", "/v1/profiles/lookup", { namespace, value });
  if (status === 200) {
    message("");
    await show(data, push);
  } else if (status === 404) {
    hideProfile();
    message("Not found: no profile holds this identifier.", true);
  } else if (status !== 401) {
    hideProfile();
    message((data && data.error) || "The lookup failed (" + status + ").", true);
  }
}

async function openOneId(oneId, push) {
  await lookup("one_id", oneId, push);
}

function hideProfile() {
  $("profile").hidden = true;
  $("profile").classList.remove("gone");
  state.oneId = null;
  state.shown = "";
}

async function show(profile, push) {
  const { data: explain } = await api("GET", "/v1/profiles/one_id/" + encodeURIComponent(profile.one_id) + "/explain");
  const key = JSON.stringify([profile, explain]);
  if (key === state.shown && state.oneId === profile.one_id) return;
  const fresh = state.oneId !== profile.one_id;
  state.oneId = profile.one_id;
  state.shown = key;
  const url = "/ui/profiles/one_id/" + encodeURIComponent(profile.one_id);
  if (push && location.pathname !== url) history.pushState({}, "", url);
  else if (location.pathname !== url) history.replaceState({}, "", url);
  if (fresh) resetErase();
  $("profile").classList.remove("gone");
  renderPerson(profile);
  renderGraph(profile, explain || { links: [], refused: [], shared_devices: [] });
  await renderTimeline(profile);
  renderChurn(profile.churn);
  renderChurnHistory(profile.churn.history || []);
  renderActions(profile.recent_actions);
  $("profile").hidden = false;
}

// ---------- the person ----------

function renderPerson(p) {
  const j = p.journey;
  const days = (from) => {
    if (!from || !j.last_seen) return "–";
    const d = (Date.parse(j.last_seen) - Date.parse(from)) / 86400000;
    return d.toFixed(1) + " days before the last event";
  };
  const cart = Object.keys(j.cart.items).length
    ? fmtMoney(Object.values(j.cart.items).reduce((s, l) => s + l.quantity * l.unit_price, 0)) +
      " (" + Object.keys(j.cart.items).length + " lines)"
    : "empty";
  const rows = [
    ["One ID", p.one_id, "oneid"],
    ["stage", j.stage], ["value tier", j.tier],
    ["churn", (p.churn.band || "not reported") + " · " + p.churn.score.toFixed(2)],
    ["recency", j.last_purchase ? fmtTime(j.last_purchase) + " (" + days(j.last_purchase) + ")" : "never purchased"],
    ["frequency", j.purchases + " purchases"],
    ["monetary", fmtMoney(j.revenue) + (j.returns ? " (returns " + fmtMoney(j.returned_value) + ")" : "")],
    ["channels", j.channels_touched.join(", ") || "–"],
    ["first seen", fmtTime(j.first_seen)], ["last seen", fmtTime(j.last_seen)],
    ["cart", cart],
    ["consent", j.push_opt_out ? "push: opted out" : "push: allowed"],
    ["calls", j.call.calls + " (" + j.call.unresolved + " unresolved, " + j.complaints + " complaints)"],
    ["last CSAT", j.last_csat === null ? "–" : j.last_csat],
  ];
  const dl = clear($("person"));
  for (const [k, v, cls] of rows) {
    dl.append(el("dt", {}, k), el("dd", { class: cls, id: cls === "oneid" ? "one-id" : undefined }, v));
  }
}

// ---------- identity graph ----------

function renderGraph(p, explain) {
  const g = clear($("graph"));
  const ids = p.identifiers.map((i) => ({ namespace: i.namespace, value: i.value }));
  const key = (i) => i.namespace + "\u0000" + i.value;
  const index = new Map(ids.map((i, n) => [key(i), n]));
  const refused = explain.refused || [];
  const shared = new Set((explain.shared_devices || []).map(key));
  const W = 1100;
  const H = (ids.length > 6 ? 420 : 320) + (refused.length ? 110 : 0);
  g.setAttribute("viewBox", "0 0 " + W + " " + H);
  g.setAttribute("height", H);
  const ringH = refused.length ? H - 110 : H;
  const cx = W / 2, cy = ringH / 2 - 10, r = ids.length === 1 ? 0 : Math.min(ringH / 2 - 60, 70 + ids.length * 18);
  const pos = ids.map((_, n) => {
    const a = -Math.PI / 2 + (2 * Math.PI * n) / ids.length;
    return [cx + r * 3 * Math.cos(a), cy + r * Math.sin(a)];
  });
  const edges = svg("g", {});
  const nodes = svg("g", {});
  g.append(edges, nodes);
  const links = clear($("links"));
  const rules = new Map();
  for (const l of explain.links) {
    const from = index.get(key(l.from));
    const to = l.to ? index.get(key(l.to)) : undefined;
    rules.set(key(l.from), l.rule);
    links.append(el("tr", {},
      el("td", {}, fmtTime(l.at)),
      el("td", {}, l.rule),
      el("td", { class: "mono" }, l.from.namespace + ": " + showValue(l.from.namespace, l.from.value)),
      el("td", { class: "mono" }, l.to ? l.to.namespace + ": " + showValue(l.to.namespace, l.to.value) : "–"),
      el("td", {}, l.channel),
      el("td", { class: "mono" }, l.event_id)));
    if (from === undefined || to === undefined) continue;
    const [x1, y1] = pos[from], [x2, y2] = pos[to];
    edges.append(svg("line", { class: "edge " + l.rule, x1, y1, x2, y2 }));
    // The label runs along its edge, upright, on two lines.
    let angle = (Math.atan2(y2 - y1, x2 - x1) * 180) / Math.PI;
    if (angle > 90) angle -= 180;
    if (angle < -90) angle += 180;
    edges.append(svg("text", {
      class: "edge-label", "text-anchor": "middle",
      transform: "translate(" + (x1 + x2) / 2 + " " + (y1 + y2) / 2 + ") rotate(" + angle.toFixed(1) + ")",
    },
    svg("tspan", { x: 0, y: -5 }, l.rule + " · " + l.channel),
    svg("tspan", { x: 0, y: 12 }, l.event_id + " · " + fmtTime(l.at))));
  }
  drawRefused(edges, nodes, refused, shared, pos[0], W, H);
  ids.forEach((i, n) => {
    const [x, y] = pos[n];
    const colour = NS_COLOURS[i.namespace] || "#555";
    const rule = rules.get(key(i));
    const isShared = shared.has(key(i));
    const node = svg("g", { class: "node" + (isShared ? " shared" : ""), "data-namespace": i.namespace, "data-value": i.value },
      svg("title", {}, i.namespace + ": " + i.value + (rule ? " (" + rule + ")" : "")),
      svg("circle", { cx: x, cy: y, r: 13, fill: colour, stroke: "#fff", "stroke-width": 2,
        "stroke-dasharray": rule === "household" ? "3 2" : null }),
      svg("text", { x, y: y + 28, "text-anchor": "middle", "font-weight": 600 }, i.namespace),
      svg("text", { x, y: y + 42, "text-anchor": "middle", class: "muted" }, showValue(i.namespace, i.value)));
    if (rule === "household") node.append(svg("text", { x, y: y + 56, "text-anchor": "middle", class: "muted" }, "household: recorded, never links"));
    if (isShared) node.append(svg("text", { x, y: y - 20, "text-anchor": "middle", class: "shared-mark" }, "shared device"));
    nodes.append(node);
  });
}

// Refused links: the identifier kept apart, in a row below the profile, with
// a dashed edge to the profile's first identifier labelled with the reason.
function drawRefused(edges, nodes, refused, shared, anchor, W, H) {
  const body = clear($("refused"));
  if (!refused.length) body.append(el("tr", {}, el("td", { colspan: 6 }, "none")));
  const key = (i) => i.namespace + "\u0000" + i.value;
  refused.forEach((f, n) => {
    const i = f.identifier;
    body.append(el("tr", { class: "refused", "data-reason": f.reason },
      el("td", {}, fmtTime(f.at)),
      el("td", {}, f.reason),
      el("td", { class: "mono" }, i.namespace + ": " + showValue(i.namespace, i.value) + (shared.has(key(i)) ? " (shared device)" : "")),
      el("td", { class: "mono" }, f.kept_in ? profileLink(f.kept_in) : "–"),
      el("td", {}, f.channel),
      el("td", { class: "mono" }, f.event_id)));
    if (!anchor) return;
    const x = ((n + 1) * W) / (refused.length + 1), y = H - 62;
    const [ax, ay] = anchor;
    edges.append(svg("line", { class: "edge refused", "data-reason": f.reason, x1: ax, y1: ay, x2: x, y2: y }));
    edges.append(svg("text", { class: "edge-label refused", "text-anchor": "middle", x: (ax + x) / 2, y: (ay + y) / 2 },
      svg("tspan", { x: (ax + x) / 2, dy: 0 }, "refused: " + f.reason.replace(/_/g, " ")),
      svg("tspan", { x: (ax + x) / 2, dy: 12 }, f.event_id + " · " + fmtTime(f.at))));
    const isShared = shared.has(key(i));
    const node = svg("g", { class: "refused-node" + (isShared ? " shared" : ""), "data-namespace": i.namespace, "data-value": i.value, "data-reason": f.reason },
      svg("title", {}, i.namespace + ": " + i.value + " (refused: " + f.reason + ")"),
      svg("circle", { cx: x, cy: y, r: 11, fill: NS_COLOURS[i.namespace] || "#555" }),
      svg("text", { x, y: y + 26, "text-anchor": "middle", "font-weight": 600 }, i.namespace),
      svg("text", { x, y: y + 40, "text-anchor": "middle", class: "muted" }, showValue(i.namespace, i.value)));
    if (isShared) node.append(svg("text", { x, y: y - 17, "text-anchor": "middle", class: "shared-mark" }, "shared device"));
    nodes.append(node);
  });
}

// ---------- timeline ----------

async function renderTimeline(p) {
  const t = clear($("timeline"));
  const j = p.journey;
  const cfg = await settings();
  const events = j.recent_events.slice();
  const decisions = p.recent_actions.map((a) => ({ at: a.decided_at, label: a.action + " via " + a.channel }));
  const timers = [];
  const plus = (at, s) => (at && s ? new Date(Date.parse(at) + s * 1000).toISOString() : null);
  if (Object.keys(j.cart.items).length && j.cart.updated_at) {
    timers.push({ at: plus(j.cart.updated_at, cfg.cart_abandon_after_s), label: "cart timer" });
  }
  if (j.last_product_view) {
    timers.push({ at: plus(j.last_product_view.at, cfg.browse_abandon_after_s), label: "browse timer" });
  }
  if (j.quiet_due) timers.push({ at: j.quiet_due, label: "quiet check" });
  const live = timers.filter((x) => x.at);
  const all = events.map((e) => Date.parse(e.at))
    .concat(decisions.map((d) => Date.parse(d.at)), live.map((x) => Date.parse(x.at)));
  const lanes = CHANNELS.concat(["decisions", "timers"]);
  const W = 1100, left = 110, right = 30, laneH = 34, top = 24;
  const H = top + lanes.length * laneH + 30;
  t.setAttribute("viewBox", "0 0 " + W + " " + H);
  t.setAttribute("height", H);
  if (!all.length) {
    t.append(svg("text", { x: 20, y: 30 }, "no events kept for this profile"));
  } else {
    const lo = Math.min(...all), hi = Math.max(...all);
    const span = Math.max(hi - lo, 60000);
    const x = (ms) => left + ((ms - lo) / span) * (W - left - right);
    lanes.forEach((lane, n) => {
      const y = top + n * laneH + laneH / 2;
      t.append(svg("line", { class: "axis", x1: left, x2: W - right, y1: y, y2: y }),
        svg("text", { x: 8, y: y + 4 }, lane));
    });
    const y = (lane) => top + lanes.indexOf(lane) * laneH + laneH / 2;
    for (const e of events) {
      t.append(svg("circle", { class: "ev-" + e.channel, cx: x(Date.parse(e.at)), cy: y(e.channel), r: 5 },
        svg("title", {}, fmtTime(e.at) + " " + e.channel + " " + e.event_type + (e.detail ? " · " + e.detail : ""))));
    }
    for (const d of decisions) {
      const cx = x(Date.parse(d.at)), cy = y("decisions");
      t.append(svg("rect", { class: "decision", x: cx - 5, y: cy - 5, width: 10, height: 10, transform: "rotate(45 " + cx + " " + cy + ")" },
        svg("title", {}, fmtTime(d.at) + " " + d.label)));
    }
    live.forEach((m, n) => {
      const cx = x(Date.parse(m.at)), cy = y("timers");
      const nearEnd = cx > W - 220;
      t.append(svg("circle", { class: "timer", cx, cy, r: 6 }, svg("title", {}, m.label + " due " + fmtTime(m.at))),
        svg("text", { x: nearEnd ? cx - 9 : cx + 9, y: cy + (n % 2 ? 14 : -6), "text-anchor": nearEnd ? "end" : "start", class: "muted" },
          m.label + " due " + fmtTime(m.at)));
    });
    const axisY = top + lanes.length * laneH + 14;
    t.append(svg("text", { x: left, y: axisY, class: "muted" }, fmtTime(new Date(lo).toISOString())),
      svg("text", { x: W - right, y: axisY, "text-anchor": "end", class: "muted" }, fmtTime(new Date(hi).toISOString())));
  }
  const body = clear($("events"));
  const rows = events.map((e) => ({ at: e.at, kind: "event", e }))
    .concat(decisions.map((d) => ({ at: d.at, kind: "decision", d })))
    .sort((a, b) => Date.parse(a.at) - Date.parse(b.at));
  for (const r of rows) {
    if (r.kind === "event") {
      const e = r.e;
      body.append(el("tr", { class: "event", "data-channel": e.channel, "data-at": e.at },
        el("td", {}, fmtTime(e.at)),
        el("td", {}, el("span", { class: "chip " + e.channel }, e.channel)),
        el("td", {}, e.event_type),
        el("td", { class: "detail" }, e.detail || ""),
        el("td", {}, fmtMoney(e.amount)),
        el("td", { class: "mono" }, e.event_id)));
    } else {
      body.append(el("tr", { class: "decision-row", "data-at": r.at },
        el("td", {}, fmtTime(r.at)), el("td", {}, "decision"), el("td", { colspan: 4 }, r.d.label)));
    }
  }
}

// ---------- churn ----------

function renderChurn(c) {
  $("churn-summary").textContent = "Score " + c.score.toFixed(3) + ", band " + (c.band || "not reported yet") +
    ". Each bar is a factor's contribution to sum(w·x); score = 1 − exp(−sum).";
  const g = clear($("churn"));
  const factors = c.factors.slice().sort((a, b) => Math.abs(b.contribution) - Math.abs(a.contribution));
  const W = 1100, left = 230, rowH = 22;
  const H = Math.max(40, factors.length * rowH + 20);
  g.setAttribute("viewBox", "0 0 " + W + " " + H);
  g.setAttribute("height", H);
  const max = Math.max(0.001, ...factors.map((f) => Math.abs(f.contribution)));
  factors.forEach((f, n) => {
    const y = 10 + n * rowH;
    const w = (Math.abs(f.contribution) / max) * (W - left - 140);
    g.append(svg("text", { x: 8, y: y + 13 }, f.name + " = " + Number(f.value).toFixed(2)),
      svg("rect", { class: "bar" + (f.contribution < 0 ? " neg" : ""), x: left, y, width: Math.max(w, 1), height: rowH - 6 }),
      svg("text", { x: left + w + 6, y: y + 13, class: "muted" }, f.contribution.toFixed(3)));
  });
}

const FACTOR_COLOURS = ["#e07b39", "#c0362c", "#7b4fd6", "#2f6fde", "#1b9e77", "#d95f02", "#e7298a", "#66a61e", "#a6761d", "#8a8f98", "#4c9a6a"];

// The churn score over the kept evaluations: per evaluation a column of the
// factors' contributions stacked, and the score as a line through points.
function renderChurnHistory(history) {
  const g = clear($("churn-history"));
  const W = 1100, left = 50, right = 220, top = 14, plotH = 200;
  const H = top + plotH + 36;
  g.setAttribute("viewBox", "0 0 " + W + " " + H);
  g.setAttribute("height", H);
  if (!history.length) {
    g.append(svg("text", { x: 20, y: 30 }, "no evaluations kept yet"));
    return;
  }
  const names = [];
  for (const p of history) for (const c of p.contributions) if (!names.includes(c.name)) names.push(c.name);
  const colour = (name) => FACTOR_COLOURS[names.indexOf(name) % FACTOR_COLOURS.length];
  const y = (v) => top + plotH - Math.max(0, Math.min(1, v)) * plotH;
  for (const v of [0, 0.25, 0.5, 0.75, 1]) {
    g.append(svg("line", { class: "axis", x1: left, x2: W - right, y1: y(v), y2: y(v) }),
      svg("text", { x: left - 6, y: y(v) + 4, "text-anchor": "end", class: "muted" }, v.toFixed(2)));
  }
  const step = (W - left - right) / history.length;
  const x = (n) => left + step * (n + 0.5);
  const bw = Math.min(28, step * 0.6);
  history.forEach((p, n) => {
    let base = 0;
    for (const c of p.contributions.filter((c) => c.contribution > 0)) {
      g.append(svg("rect", { class: "contribution", "data-factor": c.name, x: x(n) - bw / 2, y: y(base + c.contribution), width: bw,
        height: Math.max(0.5, y(base) - y(base + c.contribution)), fill: colour(c.name) },
      svg("title", {}, fmtTime(p.at) + " · " + c.name + ": " + c.contribution.toFixed(3))));
      base += c.contribution;
    }
  });
  g.append(svg("polyline", { class: "score-line", points: history.map((p, n) => x(n) + "," + y(p.score)).join(" ") }));
  history.forEach((p, n) => {
    g.append(svg("circle", { class: "churn-point", "data-score": p.score, "data-at": p.at, cx: x(n), cy: y(p.score), r: 4 },
      svg("title", {}, fmtTime(p.at) + " · score " + p.score.toFixed(3) + " · band " + (p.band || "not reported"))));
  });
  const first = history[0].at, last = history[history.length - 1].at;
  g.append(svg("text", { x: left, y: H - 10, class: "muted" }, fmtTime(first)),
    svg("text", { x: W - right, y: H - 10, "text-anchor": "end", class: "muted" }, fmtTime(last)));
  names.forEach((name, n) => {
    const ly = top + 6 + n * 16;
    g.append(svg("rect", { x: W - right + 16, y: ly - 9, width: 10, height: 10, fill: colour(name) }),
      svg("text", { x: W - right + 32, y: ly }, name));
  });
}

// ---------- actions ----------

function renderActions(actions) {
  const body = clear($("actions"));
  if (!actions.length) {
    body.append(el("tr", {}, el("td", { colspan: 9 }, "no decisions yet")));
  }
  const list = (items, text) => items.length
    ? el("ul", { class: "plain" }, ...items.map((i) => el("li", {}, text(i))))
    : "–";
  for (const a of actions) {
    const beaten = a.beaten || [], held = a.held_back || [];
    body.append(el("tr", { class: "action" },
      el("td", {}, fmtTime(a.decided_at)),
      el("td", { class: "nowrap" }, a.action),
      el("td", { class: "nowrap" }, a.channel),
      el("td", { class: "score" }, a.score === null || a.score === undefined ? "–" : a.score.toFixed(2)),
      el("td", { class: "reason" }, a.reason),
      el("td", { class: "beaten" }, list(beaten, (b) => b.action + " (" + b.score.toFixed(2) + ")")),
      el("td", { class: "held-back" }, list(held, (h) => h.action + ": " + h.rule.replace(/_/g, " "))),
      el("td", {}, a.tier),
      el("td", {}, outcomeText(a))));
  }
}

// A held-out decision was never sent (the control group); either kind may
// have converted (a purchase within the action's window).
function outcomeText(a) {
  const what = a.held_out ? "held out (control group, not sent)" : (a.outcome || "no outcome yet");
  return a.converted ? what + "; bought within the window" : what;
}

// ---------- erasure ----------

function resetErase() {
  state.erasing = false;
  $("erase").hidden = false;
  $("erase-confirm").hidden = true;
  $("erase-cancel").hidden = true;
  $("erase-token-row").hidden = true;
  $("erase-status").textContent = "";
}

// The confirmation step: asks for the erase token (filled in when this tab has one).
function askErase() {
  $("erase").hidden = true;
  $("erase-token").value = eraseToken();
  $("erase-token-row").hidden = false;
  $("erase-confirm").hidden = false;
  $("erase-cancel").hidden = false;
}

async function erase() {
  const oneId = state.oneId;
  if (!oneId) return;
  const status = $("erase-status");
  const tok = $("erase-token").value.trim();
  if (!tok) {
    status.textContent = "Enter an erase token: the API token only reads.";
    $("erase-token").focus();
    return;
  }
  sessionStorage.setItem("onejourney.erase_token", tok);
  state.erasing = true;
  $("erase-confirm").hidden = true;
  $("erase-cancel").hidden = true;
  $("erase-token-row").hidden = true;
  const { status: code, data } = await api("DELETE", "/v1/profiles/one_id/" + encodeURIComponent(oneId), undefined, tok);
  if (code === 401 || code === 403) {
    // Not an erase token (or erasure is off here): forget it and ask again.
    sessionStorage.removeItem("onejourney.erase_token");
    state.erasing = false;
    askErase();
    status.textContent = code + ": " + ((data && data.error) || "this token may not erase");
    return;
  }
  if (code !== 202) {
    status.textContent = code + ": " + ((data && data.error) || "the forget command was not accepted");
    state.erasing = false;
    $("erase").hidden = false;
    return;
  }
  status.textContent = "202 Accepted: the forget command for " + data.one_id + " is published; waiting for the pipeline to apply it…";
  for (let i = 0; i < 120; i++) {
    await new Promise((r) => setTimeout(r, 500));
    const r = await api("GET", "/v1/profiles/one_id/" + encodeURIComponent(oneId));
    if (r.status === 404) {
      status.textContent = "202 Accepted, then 404 Not found: " + oneId + " is forgotten.";
      $("profile").classList.add("gone");
      message("Not found: " + oneId + " was forgotten.", true);
      state.oneId = null;
      state.shown = "";
      state.erasing = false;
      loadRecent();
      return;
    }
  }
  status.textContent = "202 Accepted, but the profile is still there after a minute: is the pipeline running?";
}

// ---------- wiring ----------

function route(push) {
  const m = location.pathname.match(/^\/ui\/profiles\/([^/]+)\/([^/]+)$/);
  if (!m) {
    hideProfile();
    return;
  }
  const namespace = decodeURIComponent(m[1]);
  const value = decodeURIComponent(m[2]);
  $("ns").value = namespace;
  if (!HASHED.has(namespace) && namespace !== "email" && namespace !== "phone") $("value").value = value;
  lookup(namespace, value, push);
}

async function refresh() {
  if (document.hidden || state.erasing) return;
  loadRecent();
  if (state.oneId) {
    const { status, data } = await api("GET", "/v1/profiles/one_id/" + encodeURIComponent(state.oneId));
    if (status === 200 && !state.erasing) await show(data, false);
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("token").value = token();
  $("token-form").addEventListener("submit", (e) => {
    e.preventDefault();
    sessionStorage.setItem("onejourney.token", $("token").value.trim());
    message("Token kept for this browser tab.");
    loadRecent();
    if (location.pathname.startsWith("/ui/profiles/")) route(false);
  });
  $("search-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const value = $("value").value.trim();
    if (!value) return;
    lookup($("ns").value, value, true);
  });
  $("recent-refresh").addEventListener("click", loadRecent);
  $("erase").addEventListener("click", askErase);
  $("erase-cancel").addEventListener("click", resetErase);
  $("erase-confirm").addEventListener("click", erase);
  window.addEventListener("popstate", () => route(false));
  loadRecent();
  route(false);
  state.poll = setInterval(refresh, 5000);
});
