// The provider's dashboard: renders /api/dashboard, then every `dashboard`
// event of /api/events (server-sent events). Text goes in with textContent
// only; the chart is drawn on a canvas here. Buttons ask before they act.
"use strict";

const COLORS = ["#2f5bea", "#1b8a4b", "#b9770e", "#8e44ad", "#c0392b", "#16a085"];
let current = null;
let events = null;
let eventCount = 0;

function $(id) { return document.getElementById(id); }

function el(tag, props, children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (key === "text") node.textContent = value;
    else if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  for (const child of children || []) if (child) node.append(child);
  return node;
}

function short(id) { return id ? (id.length > 14 ? id.slice(0, 8) + "…" + id.slice(-4) : id) : "—"; }
function glm(amount) {
  const value = Number(amount || 0);
  return (value === 0 ? "0" : value < 0.001 ? value.toExponential(2) : value.toFixed(value < 1 ? 6 : 4).replace(/\.?0+$/, "")) + " GLM";
}
function when(date) { return date ? new Date(date).toLocaleString() : "—"; }
function seconds(value) { return value == null ? "—" : Number(value).toFixed(1) + " s"; }

function fill(tbody, rows) {
  tbody.replaceChildren(...rows.map(cells => el("tr", {}, cells.map(cell =>
    cell instanceof Node ? el("td", {}, [cell]) : el("td", typeof cell === "object" && cell !== null ? cell : { text: String(cell ?? "—") })))));
}

async function api(method, path, body) {
  const response = await fetch(path, {
    method, credentials: "same-origin",
    headers: body === undefined ? {} : { "Content-Type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (response.status === 401) { showLogin(); throw new Error("not logged in"); }
  if (!response.ok) {
    const text = await response.text();
    let message = text;
    try { message = JSON.parse(text).message || text; } catch (_) { /* plain text */ }
    throw new Error(message);
  }
  return response.status === 204 ? null : response.json();
}

function showLogin() {
  if (events) { events.close(); events = null; }
  $("main").hidden = true;
  $("login").hidden = false;
  $("live").textContent = "logged out";
  $("app-key").focus();
}

function renderStatus(status) {
  const reachable = status.daemon.reachable;
  const online = $("online");
  online.textContent = reachable ? (status.offersPaused ? "online · offers paused" : "online") : "daemon not reachable";
  online.className = "pill " + (reachable ? "ok" : "bad");
  const facts = [
    ["Daemon", reachable ? status.daemon.apiUrl : `${status.daemon.apiUrl} — ${status.daemon.error || "not reachable"}`],
    ["Node id", status.nodeId || "—"],
    ["Node name", status.nodeName],
    ["Subnet", status.subnet],
    ["Peers", status.peers == null ? "—" : String(status.peers)],
    ["Agent started", when(status.startedAt)],
  ];
  $("status-facts").replaceChildren(...facts.flatMap(([name, value]) => [el("dt", { text: name }), el("dd", { text: value, class: name === "Node id" ? "id" : "" })]));
  $("exe-units").replaceChildren(...status.exeUnits.map(unit =>
    el("li", { text: `${unit.runtime}${unit.sandbox ? " (sandbox " + unit.sandbox + ")" : ""} — ${unit.binary}` })));
}

function renderOffers(offers) {
  const pause = $("pause");
  pause.textContent = offers.paused ? "Resume offers" : "Pause offers";
  pause.dataset.paused = offers.paused ? "1" : "0";
  fill($("offers-table").tBodies[0], offers.offers.map(offer => [
    offer.runtime, offer.preset,
    { text: glm(offer.prices.startFee), class: "num" },
    { text: glm(offer.prices.perCpuSec), class: "num" },
    { text: glm(offer.prices.perSec), class: "num" },
    { text: `${offer.resources.cores} cores · ${offer.resources.threads} threads · ${offer.resources.memGib} GiB RAM · ${offer.resources.storageGib} GiB disk`, title: offer.platforms.join(", ") },
    offer.published ? "yes" : "no",
  ]));
  fill($("presets-table").tBodies[0], offers.presets.map(preset => [
    preset.name + (preset.inUse ? "" : " (not used)"), preset.exeUnit,
    preset.active ? "active" : "inactive",
    el("button", { type: "button", text: preset.active ? "Deactivate" : "Activate",
      onclick: () => act(`${preset.active ? "Deactivate" : "Activate"} preset ${preset.name}? ${preset.active ? "Its offer is withdrawn." : "Its offer is published again."}`,
        `/api/presets/${encodeURIComponent(preset.name)}/active`, { active: !preset.active }) }),
  ]));
}

function renderAgreements(section) {
  const list = section.agreements;
  $("no-agreements").hidden = list.length > 0;
  $("agreement-list").replaceChildren(...list.map(agreement => el("div", { class: "agreement " + agreement.state, "data-agreement-id": agreement.agreementId }, [
    el("dl", {}, [
      el("dt", { text: "Agreement" }), el("dd", { text: agreement.agreementId, class: "id" }),
      el("dt", { text: "Requestor" }), el("dd", { text: agreement.requestorId, class: "id" }),
      el("dt", { text: "Runtime" }), el("dd", { text: agreement.runtime }),
      el("dt", { text: "Started" }), el("dd", { text: when(agreement.startedAt) }),
      el("dt", { text: "State" }), el("dd", { text: agreement.state + (agreement.endedReason ? ` — ${agreement.endedReason}` : "") }),
      el("dt", { text: "Cost so far" }), el("dd", { text: glm(agreement.costSoFar), class: "cost" }),
    ]),
    ...agreement.activities.map(activity => el("div", { class: "activity" }, [
      el("h3", { text: `Activity ${short(activity.activityId)} · ${activity.state} · CPU ${seconds(activity.cpuSec)} · ${seconds(activity.durationSec)} · ${glm(activity.cost)}` }),
      activity.log.length ? el("pre", { class: "log", text: activity.log.join("\n") }) : null,
    ])),
  ])));
}

function drawChart(days) {
  const canvas = $("chart");
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth || 800, height = canvas.clientHeight || 220;
  canvas.width = Math.round(width * ratio);
  canvas.height = Math.round(height * ratio);
  const context = canvas.getContext("2d");
  context.setTransform(ratio, 0, 0, ratio, 0, 0);
  context.clearRect(0, 0, width, height);
  const platforms = [...new Set(days.flatMap(day => Object.keys(day.platforms)))].sort();
  const sums = days.map(day => platforms.reduce((sum, p) => sum + Number(day.platforms[p]?.invoiced.amount || 0), 0));
  const max = Math.max(...sums, 0) || 1;
  const left = 56, bottom = 20, top = 8;
  const plot = height - bottom - top, step = (width - left) / days.length;
  const style = getComputedStyle(document.body);
  context.fillStyle = style.color;
  context.font = "11px system-ui, sans-serif";
  context.strokeStyle = "rgba(128,128,128,.3)";
  for (const fraction of [0, 0.5, 1]) {
    const y = top + plot - fraction * plot;
    context.beginPath(); context.moveTo(left, y); context.lineTo(width, y); context.stroke();
    context.fillText((max * fraction).toPrecision(2), 2, y + 4);
  }
  days.forEach((day, index) => {
    let y = top + plot;
    platforms.forEach((platform, which) => {
      const totals = day.platforms[platform];
      if (!totals) return;
      const invoiced = Number(totals.invoiced.amount), paid = Number(totals.paid.amount);
      const barHeight = invoiced / max * plot, paidHeight = paid / max * plot;
      const x = left + index * step + step * 0.15, barWidth = step * 0.7;
      context.globalAlpha = 0.35;
      context.fillStyle = COLORS[which % COLORS.length];
      context.fillRect(x, y - barHeight, barWidth, barHeight);
      context.globalAlpha = 1;
      context.fillRect(x, y - paidHeight, barWidth, paidHeight);
      y -= barHeight;
    });
    if (index % 7 === days.length % 7 || index === days.length - 1) {
      context.fillStyle = style.color;
      context.fillText(day.date.slice(5), left + index * step, height - 5);
    }
  });
  $("legend").replaceChildren(...platforms.map((platform, which) => {
    const swatch = el("i");
    swatch.style.background = COLORS[which % COLORS.length];
    return el("span", {}, [swatch, platform]);
  }), el("span", { class: "muted", text: "solid: paid · light: invoiced, not yet paid (by day of invoice)" }));
}

function renderEarnings(earnings) {
  const totals = earnings.totals;
  const boxes = [["invoiced", "Invoiced"], ["accepted", "Accepted"], ["paid", "Paid"], ["late", "Late"], ["rejected", "Rejected"]];
  $("totals").replaceChildren(...boxes.map(([key, name]) => el("div", { class: "total " + (totals.counts[key] > 0 ? key : ""), id: "earn-" + key }, [
    el("b", { text: glm(totals[key]) }), el("span", { text: `${name} · ${totals.counts[key]} invoice${totals.counts[key] === 1 ? "" : "s"}` }),
  ])));
  drawChart(earnings.days);
  fill($("invoices-table").tBodies[0], earnings.invoices.map(invoice => [
    when(invoice.issuedAt), { text: short(invoice.invoiceId), class: "id", title: invoice.invoiceId }, invoice.platform,
    { text: glm(invoice.amount), class: "num" }, { text: invoice.standing, class: "standing-" + invoice.standing },
  ]));
}

function renderNegotiations(section) {
  fill($("negotiations-table").tBodies[0], section.recent.slice(0, 50).map(entry => [
    when(entry.at), entry.outcome, { text: short(entry.requestorId), class: "id", title: entry.requestorId }, entry.runtime, entry.reason || "",
  ]));
}

function render(doc) {
  current = doc;
  renderStatus(doc.status);
  renderOffers(doc.offers);
  renderAgreements(doc.agreements);
  renderEarnings(doc.earnings);
  renderNegotiations(doc.negotiations);
  $("login").hidden = true;
  $("main").hidden = false;
  if (!document.body.dataset.rendered) {
    document.body.dataset.rendered = "1";
    performance.mark("dashboard-rendered");
  }
}

function listen() {
  if (events) events.close();
  events = new EventSource("/api/events");
  events.addEventListener("dashboard", message => {
    eventCount += 1;
    document.body.dataset.events = String(eventCount);
    render(JSON.parse(message.data));
  });
  events.onopen = () => { $("live").textContent = "live"; $("live").className = "pill ok"; };
  events.onerror = async () => {
    $("live").textContent = "reconnecting"; $("live").className = "pill bad";
    // A lost session ends the stream with 401: ask again rather than retry forever.
    try { await api("GET", "/api/status"); } catch (_) { /* shown by api() */ }
  };
}

async function act(question, path, body) {
  if (!window.confirm(question)) return;
  try {
    await api("POST", path, body);
    render(await api("GET", "/api/dashboard"));
  } catch (error) {
    window.alert(error.message);
  }
}

async function start() {
  $("pause").addEventListener("click", () => {
    const paused = $("pause").dataset.paused === "1";
    act(paused ? "Resume offers? They are published again." : "Pause offers? All offers are withdrawn from the market; running agreements go on.",
      "/api/offers/pause", { paused: !paused });
  });
  $("login-form").addEventListener("submit", async event => {
    event.preventDefault();
    $("login-error").textContent = "";
    try {
      await api("POST", "/api/session", { appKey: $("app-key").value });
      $("app-key").value = "";
      await start_session();
    } catch (error) {
      $("login-error").textContent = error.message === "not logged in" ? "Wrong app-key." : error.message;
    }
  });
  window.addEventListener("resize", () => { if (current) drawChart(current.earnings.days); });
  await start_session();
}

async function start_session() {
  try {
    render(await api("GET", "/api/dashboard"));
    listen();
  } catch (error) {
    if (error.message !== "not logged in") $("live").textContent = error.message;
  }
}

document.addEventListener("DOMContentLoaded", start);
