// The /status page: reads GET /v1/status/stream (Server-Sent Events, read with fetch so that an
// API key can be sent as a header) and draws each `status` event. When the stream drops it says
// so in a banner and connects again, with backoff; the banner goes once an event arrives.
"use strict";

(function () {
  const STREAM = "/v1/status/stream";
  const KEY_STORE = "imgq-status-api-key";
  const SILENT_LIMIT_MS = 15000; // the server sends at least a ping every 5 s
  const BACKOFF_MS = [1000, 2000, 4000, 8000, 10000];
  const WORDS = { green: "serving", yellow: "degraded", red: "not serving" };

  const $ = (id) => document.getElementById(id);
  let retries = 0; // connection attempts that failed in a row
  let clockOffsetMs = 0; // server clock minus ours, from each document's generated_at_ms
  let lastUpdate = null;
  let everConnected = false;

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (name === "className") node.className = value;
      else node.setAttribute(name, value === true ? "" : String(value));
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function apiKey() {
    try { return localStorage.getItem(KEY_STORE); } catch (e) { return null; }
  }

  function setKey(key) {
    try {
      if (key) localStorage.setItem(KEY_STORE, key); else localStorage.removeItem(KEY_STORE);
    } catch (e) { /* private mode: the key lives until the page is closed */ }
    memoryKey = key;
  }
  let memoryKey = apiKey();

  // --- formatting ------------------------------------------------------------------------------

  function clock(ms) {
    return new Date(ms).toLocaleTimeString([], { hour12: false });
  }

  function seconds(s) {
    if (s === null || s === undefined) return "–";
    if (s < 1) return "under 1 s";
    if (s < 90) return `${Math.round(s)} s`;
    if (s < 5400) return `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`;
    return `${(s / 3600).toFixed(1)} h`;
  }

  function latency(s) {
    if (s === null || s === undefined) return "–";
    return s < 10 ? `${s.toFixed(2)} s` : `${s.toFixed(1)} s`;
  }

  function plural(count, word) {
    return `${count} ${word}${count === 1 ? "" : "s"}`;
  }

  function percent(rate) {
    return `${Math.round(rate * 100)} %`;
  }

  function countdownText(untilMs) {
    const left = (untilMs - (Date.now() + clockOffsetMs)) / 1000;
    return left <= 0 ? "due now" : `in ${seconds(left)}`;
  }

  // --- drawing ---------------------------------------------------------------------------------

  function tile(label, value, note) {
    return el("div", { className: "tile" },
      el("span", { className: "tile-label" }, label),
      el("span", { className: "tile-value" }, value),
      note ? el("span", { className: "tile-note" }, note) : null);
  }

  function drawQueue(doc) {
    const lanes = Object.entries(doc.lanes).map(([lane, figures]) => {
      const start = figures.new_job_eta_start_seconds;
      const finish = figures.new_job_eta_finish_seconds;
      let eta = `a new job starts in ${seconds(start)}, done in ${seconds(finish)}`;
      if (start === null) {
        eta = doc.snapshot_age_seconds === null
          ? "no ETA: no scheduler publishes one"
          : "no ETA: no worker is alive";
      }
      return el("div", { className: "tile lane", "data-lane": lane },
        el("span", { className: "tile-label" }, `${lane} lane`),
        el("span", { className: "tile-value" }, `${figures.depth} waiting`),
        el("span", { className: "tile-note" }, eta));
    });
    $("lanes").replaceChildren(...lanes);
    const workers = doc.workers;
    $("tiles").replaceChildren(
      tile("running", doc.running, "jobs in a worker now"),
      tile("workers alive", workers.alive, `${workers.slots} slots`),
      tile("throughput", `${doc.throughput.jobs_per_minute} / min`,
        `jobs served, last ${Math.round(doc.throughput.over_seconds / 60)} min`),
    );
  }

  const REASONS = {
    failure_rate: "too many calls failed",
    slow_call_rate: "too many calls were slow",
    probe_failed: "a trial call failed",
    probes_succeeded: "the trial calls succeeded",
    reset: "reset by an operator",
    disabled: "disabled by an operator",
    quota_cooldown: "quota cooldown",
    misconfigured: "misconfigured",
  };

  function transitionText(t) {
    const state = (s) => s.replaceAll("_", " ");
    const hop = t.from === t.to ? state(t.to) : `${state(t.from)} → ${state(t.to)}`;
    const forced = "forced_open: ";
    const why = t.reason.startsWith(forced)
      ? `by an operator: ${t.reason.slice(forced.length)}`
      : REASONS[t.reason] || state(t.reason);
    let figures = "";
    if (t.reason === "failure_rate") figures = ` (${t.failures} of ${plural(t.calls, "call")})`;
    if (t.reason === "slow_call_rate") figures = ` (${t.slow} of ${plural(t.calls, "call")})`;
    return `${hop}: ${why}${figures}`;
  }

  function transitionItem(t) {
    return el("li", {}, el("time", { datetime: t.at }, clock(t.at_ms)), " ", transitionText(t));
  }

  function modelCard(id, m) {
    const w = m.window;
    const rows = [
      ["failed", w.calls
        ? `${w.failures} of ${plural(w.calls, "call")} (${percent(w.failure_rate)}) in the last ${w.seconds} s`
        : `no calls in the last ${w.seconds} s`],
      ["p50 latency", m.p50_latency_s === null
        ? `no calls yet · baseline ${latency(m.baseline_latency_s)}`
        : `${latency(m.p50_latency_s)} vs ${latency(m.baseline_latency_s)} baseline` +
          ` (×${m.p50_vs_baseline}, last ${plural(m.p50_calls, "call")})`],
    ];
    if (m.breaker_state === "closed") {
      const slow = m.slow_running ? `, ${m.slow_running} slow` : "";
      rows.push(["in flight", m.gate_limit === null
        ? `${plural(m.in_flight, "call")}${slow} · gate open`
        : `${m.in_flight} of at most ${m.gate_limit}${slow} · slow start`]);
    }
    if (w.calls) rows.push(["slow", `${w.slow} of ${plural(w.calls, "call")} in the last ${w.seconds} s`]);
    const figures = rows.map(([label, value]) =>
      el("div", {}, el("dt", {}, label), el("dd", {}, value)));
    if (m.open_until_ms !== null) {
      figures.push(el("div", {}, el("dt", {}, "next probe"),
        el("dd", { className: "countdown", "data-until": m.open_until_ms },
          countdownText(m.open_until_ms))));
    }
    if (m.cooldown_until_ms !== null) {
      figures.push(el("div", {}, el("dt", {}, "cooldown ends"),
        el("dd", { className: "countdown", "data-until": m.cooldown_until_ms },
          countdownText(m.cooldown_until_ms))));
    }
    const transitions = m.last_transitions.length
      ? el("ol", { className: "transitions", "aria-label": "last transitions" },
        m.last_transitions.map(transitionItem))
      : el("p", { className: "transitions none" }, "no transitions recorded");
    return el("article", { className: "model", "data-model": id, "data-colour": m.health },
      el("header", {},
        el("h3", {}, id),
        el("span", { className: "badge", "data-colour": m.health }, WORDS[m.health] || m.health)),
      el("p", { className: "vendor" }, m.vendor),
      el("p", { className: "reason" }, m.reason),
      el("dl", { className: "figures" }, figures),
      transitions);
  }

  function drawModels(doc) {
    $("models").replaceChildren(
      ...Object.entries(doc.models).map(([id, m]) => modelCard(id, m)));
  }

  function drawFailovers(doc) {
    const list = $("failovers");
    if (!doc.recent_failovers.length) {
      list.replaceChildren(el("li", { className: "none" }, "none recently"));
      return;
    }
    list.replaceChildren(...doc.recent_failovers.map((f) => {
      const status = f.http_status ? ` ${f.http_status}` : "";
      return el("li", {},
        el("time", { datetime: f.at }, clock(f.at_ms)), " ",
        el("span", { className: "hop" }, `${f.from} → ${f.to}`), " ",
        f.count > 1 ? el("span", { className: "count" }, `×${f.count} `) : null,
        el("span", { className: "why" },
          `${f.why.replaceAll("_", " ")}${status}${f.message ? `: ${f.message}` : ""}`));
    }));
  }

  function drawWorkers(doc) {
    const body = $("workers").tBodies[0];
    const nodes = doc.workers.nodes || [];
    if (!nodes.length) {
      body.replaceChildren(el("tr", {}, el("td", { className: "none", colspan: 6 }, "no worker is alive")));
      return;
    }
    const shown = (value) => (value === null || value === undefined ? "?" : value);
    body.replaceChildren(...nodes.map((w) => {
      const state = w.draining ? "shutting down" : "serving";
      const beat = w.last_beat_seconds_ago === null ? "?" : `${w.last_beat_seconds_ago.toFixed(1)} s ago`;
      return el("tr", { "data-worker": w.name },
        el("td", {}, w.name), el("td", {}, shown(w.host)),
        el("td", {}, `${shown(w.running)} of ${w.concurrency}`), el("td", {}, shown(w.version)),
        el("td", { "data-state": state }, state), el("td", {}, beat));
    }));
  }

  function draw(doc) {
    clockOffsetMs = doc.generated_at_ms - Date.now();
    drawQueue(doc);
    drawModels(doc);
    drawFailovers(doc);
    drawWorkers(doc);
    lastUpdate = doc.generated_at_ms;
    $("content").hidden = false;
    $("content").classList.remove("stale");
  }

  function tick() {
    for (const node of document.querySelectorAll(".countdown[data-until]")) {
      node.textContent = countdownText(Number(node.dataset.until));
    }
  }

  // --- connection state ------------------------------------------------------------------------

  function setLive(state, text) {
    $("live").dataset.state = state;
    $("live-text").textContent = text;
  }

  function connected() {
    retries = 0;
    everConnected = true;
    $("banner").hidden = true;
    setLive("live", `live · updated ${clock(lastUpdate)}`);
  }

  function lost(detail, retryMs) {
    if (everConnected) {
      $("banner").hidden = false;
      $("banner-detail").textContent = detail ? ` (${detail})` : "";
      $("content").classList.add("stale");
    }
    const last = lastUpdate ? ` · last update ${clock(lastUpdate)}` : "";
    setLive("lost", `reconnecting${last}`);
    const wait = retryMs || BACKOFF_MS[Math.min(retries, BACKOFF_MS.length - 1)];
    retries += 1;
    setTimeout(connect, wait);
  }

  function askForKey(message) {
    setLive("locked", "API key needed");
    $("banner").hidden = true;
    $("content").hidden = true;
    $("key-form").hidden = false;
    $("key-error").textContent = message || "";
    $("forget").hidden = true;
    $("key").focus();
  }

  async function errorMessage(response) {
    try {
      const body = await response.json();
      return body.error ? body.error.message : `HTTP ${response.status}`;
    } catch (e) {
      return `HTTP ${response.status}`;
    }
  }

  // --- the stream ------------------------------------------------------------------------------

  async function connect() {
    const headers = { Accept: "text/event-stream" };
    if (memoryKey) headers.Authorization = `Bearer ${memoryKey}`;
    const abort = new AbortController();
    let watchdog = null;
    const arm = () => {
      clearTimeout(watchdog);
      watchdog = setTimeout(() => abort.abort(), SILENT_LIMIT_MS);
    };
    let retryMs = null;
    let detail = "the connection closed";
    try {
      arm();
      const response = await fetch(STREAM, { headers, cache: "no-store", signal: abort.signal });
      if (response.status === 401) {
        clearTimeout(watchdog);
        const message = await errorMessage(response);
        const sentKey = Boolean(memoryKey);
        if (sentKey) setKey(null);
        askForKey(sentKey ? message : ""); // a wrong key: say why; none yet: just ask
        return;
      }
      if (!response.ok || !response.body) {
        detail = await errorMessage(response);
        const after = Number(response.headers.get("Retry-After"));
        retryMs = after > 0 ? after * 1000 : null;
      } else {
        $("forget").hidden = !memoryKey;
        const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
        let buffer = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          arm();
          buffer += value.replace(/\r\n?/g, "\n");
          let end;
          while ((end = buffer.indexOf("\n\n")) >= 0) {
            const frame = buffer.slice(0, end);
            buffer = buffer.slice(end + 2);
            const parsed = handle(frame);
            if (parsed.retry) retryMs = parsed.retry;
            if (parsed.error) detail = parsed.error;
          }
        }
      }
    } catch (e) {
      detail = abort.signal.aborted ? "no word from the server" : "the connection failed";
    }
    clearTimeout(watchdog);
    lost(detail, retryMs);
  }

  function handle(frame) {
    let event = "message";
    const data = [];
    let retry = null;
    for (const line of frame.split("\n")) {
      if (!line || line.startsWith(":")) continue;
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
      if (field === "event") event = value;
      else if (field === "data") data.push(value);
      else if (field === "retry" && /^\d+$/.test(value)) retry = Number(value);
    }
    if (!data.length) return { retry };
    const body = JSON.parse(data.join("\n"));
    if (event === "status") {
      draw(body);
      connected();
      return { retry };
    }
    if (event === "error") {
      return { retry, error: body.error ? body.error.message : "the server ended the stream" };
    }
    return { retry };
  }

  function start() {
    $("key-form").addEventListener("submit", (e) => {
      e.preventDefault();
      const key = $("key").value.trim();
      if (!key) return;
      setKey(key);
      $("key-form").hidden = true;
      $("key").value = "";
      setLive("connecting", "connecting…");
      connect();
    });
    $("forget-key").addEventListener("click", () => {
      setKey(null);
      location.reload();
    });
    setInterval(tick, 1000);
    connect();
  }

  start();
})();
