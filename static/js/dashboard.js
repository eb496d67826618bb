// The live dashboard: first paint from the REST API, then the websocket's
// summary and updates; nothing polls. Says plainly when the websocket is down
// and reconnects by itself with a growing pause; each connect's summary
// repaints everything the updates change (power, the edges' hours), so what
// came while the socket was down is not missing. Updates carry the totals
// of what they changed, and the page keeps the larger (they only grow): an update
// of batches the summary already held counts nothing twice. Times are shown in
// the browser's time zone, which the page names.
"use strict";

(function () {
  const PRICE = JSON.parse(document.getElementById("price").textContent);
  // A minute of power is drawn once its windows have all come in (cloud_app/reader.py, power_settled_ms).
  const POWER_SETTLED_MS = JSON.parse(document.getElementById("power-settled-ms").textContent);
  // The cloud sends an update at least this often (cloud_app/server.py, TICK_EVERY_SECONDS); three missed
  // mean the cloud is away, though this page's own feed is up.
  const CLOUD_SILENT_MS = 3 * JSON.parse(document.getElementById("cloud-tick-ms").textContent);
  // The web server says "alive" on a socket it sent nothing else on for this long (cloud_app/consumers.py),
  // whether the cloud speaks or not: three missed mean the socket died on the way (dropped half-open by a
  // sleeping laptop, a proxy or a NAT), which the browser would not notice for a long time by itself.
  const SOCKET_DEAD_MS = 3 * JSON.parse(document.getElementById("socket-alive-ms").textContent);
  // A socket not open this long after it was made never will be: a proxy or server that took the connection
  // and does not answer its handshake (the browser itself may wait minutes).
  const SOCKET_OPEN_MS = SOCKET_DEAD_MS;
  // The ids a household may have (fogwire/limits.py); another is not asked for.
  const HOUSEHOLD_ID = new RegExp(JSON.parse(document.getElementById("household-id").textContent));
  const KWH_PER_W = 8.76;
  const CONNECTED_WITHIN_MS = 3000;
  const FLOW_POINTS = 120;
  const MINUTE = 60000;
  const HOUR = 60 * MINUTE;
  const STATE_NAMES = {
    BW: "Baden-Württemberg", BY: "Bayern", BE: "Berlin", BB: "Brandenburg", HB: "Bremen", HH: "Hamburg",
    HE: "Hessen", MV: "Mecklenburg-Vorpommern", NI: "Niedersachsen", NW: "Nordrhein-Westfalen",
    RP: "Rheinland-Pfalz", SL: "Saarland", SN: "Sachsen", ST: "Sachsen-Anhalt", SH: "Schleswig-Holstein",
    TH: "Thüringen",
  };
  const STATES = Object.keys(STATE_NAMES);
  const ZONE = Intl.DateTimeFormat().resolvedOptions().timeZone || "local time";

  const FIRST_PAUSE_MS = 1000;
  const LONGEST_PAUSE_MS = 15000;

  // Maps, not objects: an edge may call itself "__proto__" or "constructor".
  const sums = new Map();   // state -> [households, sum of averages, count]
  const edges = new Map();  // edge -> {last_heartbeat, backlog, history: {minutes, backlog, offline, ...}, chart}
  let ackedThisSecond = 0;
  let socket = null;
  let live = false;  // a message came on the current socket
  let heardAt = 0;  // when the last one came (this browser's clock)
  let socketHeardAt = 0;  // when anything last came on the current socket, "alive" included
  let socketMadeAt = 0;  // when the current socket was made
  let cloudSilent = false;  // the socket is up, but the cloud has sent nothing for CLOUD_SILENT_MS
  let rejoin = false;  // the socket is closed on purpose, to reconnect at once for a summary
  const hearing = () => live && !cloudSilent;
  let summarised = false;  // a socket's summary was painted: the REST first paint is older, if it comes at all
  let watching = null;  // the household shown in the household view

  const time = (ms) => new Date(ms).toLocaleTimeString();
  const el = (tag, text, cls) => { const e = document.createElement(tag); if (text !== undefined) e.textContent = text; if (cls) e.className = cls; return e; };
  const getJSON = (url) => fetch(url).then((r) => {
    if (!r.ok) throw Object.assign(new Error(`${url}: HTTP ${r.status}`), { status: r.status });
    return r.json();
  });
  const annualKwh = (s) => { const [, total, count] = sums.get(s) || [0, 0, 0]; return count ? (total / count) * KWH_PER_W : 0; };

  function lineChart(canvas, datasets, yTitle, extra = {}) {
    return new Chart(canvas, {
      type: "line",
      data: { labels: [], datasets: datasets.map((d) => ({ pointRadius: 0, tension: .2, spanGaps: false, ...d })) },
      options: { animation: false, maintainAspectRatio: false, ...extra,
                 scales: { y: { beginAtZero: true, title: { display: !!yTitle, text: yTitle } }, ...(extra.scales || {}) } },
    });
  }

  // --- time zone ----------------------------------------------------------
  // Every time on the page is formatted in the browser's zone; say which, since
  // the pipeline's operators need not sit where its households are.
  function showTimeZone() {
    const minutes = -new Date().getTimezoneOffset();
    const abs = Math.abs(minutes);
    const offset = `UTC${minutes < 0 ? "-" : "+"}${String(Math.floor(abs / 60)).padStart(2, "0")}:` +
      String(abs % 60).padStart(2, "0");
    document.getElementById("time-zone").textContent =
      `Times are shown in ${ZONE} (${offset}), this browser's time zone.`;
  }
  showTimeZone();

  // --- charts ------------------------------------------------------------
  const statesChart = new Chart(document.getElementById("states-chart"), {
    type: "bar",
    data: { labels: STATES, datasets: [{ label: "annual kWh (mean household)", data: STATES.map(() => 0),
                                         backgroundColor: "#3b7dd8" }] },
    options: {
      animation: false, maintainAspectRatio: false,
      scales: {
        y: { beginAtZero: true, title: { display: true, text: "kWh / year" } },
        cost: { position: "right", beginAtZero: true, grid: { drawOnChartArea: false },
                title: { display: true, text: "€ / year" },
                afterDataLimits: (scale) => {
                  const y = scale.chart.scales.y;
                  scale.min = y.min * PRICE; scale.max = y.max * PRICE;
                } },
      },
      plugins: { tooltip: { callbacks: { title: (items) => STATE_NAMES[items[0].label], label: (item) => describe(item.label).split("\n").slice(1) } } },
    },
  });
  const flowChart = lineChart(document.getElementById("flow-chart"), [
    { label: "acknowledged / s", data: [], borderColor: "#17692f", yAxisID: "y" },
    { label: "backlog", data: [], borderColor: "#c2410c", yAxisID: "backlog" },
  ], "tuples / s", { scales: { backlog: { position: "right", beginAtZero: true, grid: { drawOnChartArea: false },
                                          title: { display: true, text: "backlog" } } } });
  const powerChart = lineChart(document.getElementById("power-chart"),
    [{ label: "total power (kW)", data: [], borderColor: "#7c3aed", fill: true, backgroundColor: "rgba(124,58,237,.08)" }], "kW");
  const householdChart = lineChart(document.getElementById("household-chart"),
    [{ label: "power (W), 5 s windows", data: [], borderColor: "#0f766e", pointRadius: 1 }], "W");

  function describe(state) {
    const [households, total, count] = sums.get(state) || [0, 0, 0];
    const mean = count ? total / count : 0;
    const kwh = mean * KWH_PER_W;
    return `${STATE_NAMES[state]}\n${kwh.toFixed(0)} kWh/year · ${(kwh * PRICE).toFixed(2)} €/year\n` +
           `mean ${mean.toFixed(1)} W · ${households} households · ${count} windows`;
  }

  // --- map and a state's households ------------------------------------------
  const map = FogMap.create(document.getElementById("map"), document.getElementById("legend"),
                            document.getElementById("map-tip"), { describe, onChoose: (s) => showState(s, 1) });

  function showState(state, page) {
    document.getElementById("state-title").replaceChildren(el("span", `Households in ${STATE_NAMES[state]} `),
      el("small", "click one for its last hour"));
    getJSON(`/api/states/${state}/households/?page=${page}&page_size=50`).then((body) => {
      const rows = body.results.map((h) => {
        const tr = el("tr", undefined, "clickable");
        [h.household, h.postal_code, h.power_w.toFixed(1), h.edge].forEach((t, i) => tr.appendChild(el("td", t, i === 2 ? "num" : "")));
        tr.addEventListener("click", () => showHousehold(h.household));
        return tr;
      });
      const body_ = document.getElementById("state-households");
      body_.replaceChildren(...(rows.length ? rows : [el("tr")]));
      if (!rows.length) body_.firstChild.appendChild(el("td", "No household of this state yet.", "muted"));
      const pages = document.getElementById("state-pages");
      pages.replaceChildren(el("span", `${body.count} households`));
      if (body.previous) { const a = el("a", "‹ previous"); a.onclick = () => showState(state, page - 1); pages.appendChild(a); }
      if (body.next) { const a = el("a", "next ›"); a.onclick = () => showState(state, page + 1); pages.appendChild(a); }
    }).catch((e) => {
      const row = el("tr");
      row.appendChild(el("td", `The households could not be loaded (${e.message}).`, "muted"));
      document.getElementById("state-households").replaceChildren(row);
      document.getElementById("state-pages").replaceChildren();
    });
  }

  // --- one household -----------------------------------------------------------
  let householdPoints = new Map();  // window_start -> power
  function paintHousehold() {
    const starts = [...householdPoints.keys()].sort((a, b) => a - b);
    const newest = starts[starts.length - 1] || 0;
    // The hour up to its newest window, as its API gives it (cloud_app/reader.py, household).
    starts.filter((s) => s <= newest - HOUR).forEach((s) => householdPoints.delete(s));
    const kept = starts.filter((s) => s > newest - HOUR);
    householdChart.data.labels = kept.map(time);
    householdChart.data.datasets[0].data = kept.map((s) => householdPoints.get(s));
    householdChart.update();
  }
  function watch(household) {  // what the socket sends this page of one household (null: none)
    watching = household;
    if (socket && socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify({ watch: watching }));
  }
  function showHousehold(id, scroll = true) {
    const card = document.getElementById("household");
    // Not an id a household may have (fogwire/limits.py): not asked for ("." and ".." would name another URL).
    const lookup = HOUSEHOLD_ID.test(id) ? getJSON(`/api/households/${encodeURIComponent(id)}/`)
      : Promise.reject(Object.assign(new Error("not a household id"), { status: 404 }));
    lookup.then((h) => {
      card.hidden = false;
      document.getElementById("household-title").textContent = `Household ${h.household}`;
      document.getElementById("household-facts").textContent =
        `PLZ ${h.postal_code} · ${STATE_NAMES[h.state] || h.state} · edge ${h.edge} · latest ${h.power_w.toFixed(1)} W ` +
        `(window from ${time(h.window_start)}, ${ZONE})`;
      householdPoints = new Map(h.series.map((p) => [p.window_start, p.power_w]));
      paintHousehold();
      watch(h.household);
      if (scroll) card.scrollIntoView({ behavior: "smooth", block: "nearest" });
    }).catch((e) => {
      card.hidden = false;
      document.getElementById("household-title").textContent = e.status === 404
        ? `No household "${id}" has been stored yet.` : `Household "${id}" could not be loaded (${e.message}).`;
      document.getElementById("household-facts").textContent = "";
      householdPoints = new Map();
      paintHousehold();
      watch(null);  // the household shown before is no longer on the card: its windows must not be drawn here
    });
  }
  document.getElementById("search").addEventListener("submit", (e) => {
    e.preventDefault();
    const id = document.getElementById("search-id").value.trim();
    if (id) showHousehold(id);
  });

  // --- power over time ---------------------------------------------------------
  let powerMinutes = [];  // [minute ms, W·ms sum or null]
  let skewMs = 0;  // the server's clock minus this browser's, from the updates' times
  const serverNow = () => Date.now() + skewMs;
  const learnSkew = (ts) => { if (ts) skewMs = ts - Date.now(); };  // which minutes have settled is the server's to say
  function extendPower(minute) {  // empty minutes up to `minute`, so its updates have a place to go
    while (powerMinutes.length && powerMinutes[powerMinutes.length - 1][0] < minute) {
      powerMinutes.push([powerMinutes[powerMinutes.length - 1][0] + MINUTE, null]);
    }
  }
  function paintPower() {
    const now = serverNow();
    extendPower(Math.floor(now / MINUTE) * MINUTE);
    powerMinutes = powerMinutes.slice(-60);
    // A minute still filling (its later windows not stored yet) would be drawn far too low: it is summed, not shown.
    const shown = powerMinutes.filter(([m]) => m + MINUTE + POWER_SETTLED_MS <= now);
    powerChart.data.labels = shown.map(([m]) => time(m));
    powerChart.data.datasets[0].data = shown.map(([, wms]) => (wms === null ? null : wms / MINUTE / 1000));
    powerChart.update();
  }
  function setPower(rows) {
    powerMinutes = rows.map((p) => [p.minute, p.power_w === null ? null : p.power_w * MINUTE]);
    paintPower();
  }
  function mergePower(totals) {
    const current = Math.floor(serverNow() / MINUTE) * MINUTE;
    Object.entries(totals || {}).forEach(([minute, wms]) => {
      // A minute just begun may come before the next paint adds it; one ahead of the clock (a meter's clock
      // running fast) has no place on the chart, and must not push the hour off it.
      if (Number(minute) <= current) extendPower(Number(minute));
      const point = powerMinutes.find(([m]) => m === Number(minute));
      // Totals, which only grow: an update about batches the summary already holds changes nothing.
      if (point) point[1] = Math.max(point[1] || 0, wms);
    });
  }

  // --- edges ---------------------------------------------------------------------
  function loadEdgeHistory(name) {
    // A summary's history, if one came meanwhile, is as new or newer.
    return getJSON(`/api/edges/${encodeURIComponent(name)}/history/`)
      .then((h) => { const edge = edges.get(name); if (!edge.history) { edge.history = h; paintEdges(); } })
      .catch(() => {});
  }
  function ensureEdge(name, history) {
    let edge = edges.get(name);
    if (!edge) {
      edge = { last_heartbeat: null, backlog: 0, rate: 0, history: history || null };
      edges.set(name, edge);
      if (!history) loadEdgeHistory(name);
    } else if (history) {
      edge.history = history;
    }
    return edge;
  }
  function minuteSlot(history, ms) {
    const current = Math.floor(ms / MINUTE) * MINUTE;
    while (history.minutes[history.minutes.length - 1] < current) {
      history.minutes.push(history.minutes[history.minutes.length - 1] + MINUTE);
      history.backlog.push(null);
      history.minutes.shift(); history.backlog.shift();
    }
    return history.minutes.indexOf(current);
  }
  function beat(name, ts, backlog, paused) {
    const edge = ensureEdge(name);
    if (edge.last_heartbeat && ts - edge.last_heartbeat > CONNECTED_WITHIN_MS && edge.history) {
      edge.history.offline = edge.history.offline.filter((p) => p.end !== null);
      edge.history.offline.push({ start: edge.last_heartbeat, end: ts });
    }
    edge.last_heartbeat = ts; edge.backlog = backlog; edge.paused = paused;
    if (edge.history) { const i = minuteSlot(edge.history, ts); if (i >= 0) edge.history.backlog[i] = backlog; }
  }
  function acked(name, count) {
    const edge = ensureEdge(name);
    edge.ackedNow = (edge.ackedNow || 0) + count;  // its rate (the badge's acked/s)
  }
  function paintEdges() {
    const box = document.getElementById("edges");
    const names = [...edges.keys()].sort();
    if (!names.length) return;
    const now = serverNow();  // heartbeats carry the server's times
    names.forEach((name) => {
      const edge = edges.get(name);
      if (!edge.card) {
        edge.card = el("div", undefined, "edge-card");
        edge.card.dataset.edge = name;
        edge.badge = el("span", "", "badge");
        const spark = el("div", undefined, "spark");
        const canvas = el("canvas");
        canvas.setAttribute("aria-label", `backlog of ${name} over the last hour`);
        spark.appendChild(canvas);
        edge.list = el("ul");
        edge.card.append(edge.badge, spark, edge.list);
        edge.chart = lineChart(canvas, [{ label: "backlog", data: [], borderColor: "#c2410c", borderWidth: 1.5 }], "",
          { plugins: { legend: { display: false } }, scales: { x: { display: false }, y: { beginAtZero: true, ticks: { maxTicksLimit: 3 } } } });
      }
      const up = edge.last_heartbeat && now - edge.last_heartbeat <= CONNECTED_WITHIN_MS;
      if (!hearing()) {  // no heartbeat reaches the page while its feed or the cloud is down: nothing is known of it
        edge.badge.className = "badge unknown";
        edge.badge.textContent = `${name}: ` + (!summarised ? "waiting for the live feed"
          : cloudSilent ? "not known while the cloud is silent" : "not known while the live feed is down") +
          (edge.last_heartbeat ? ` (last heartbeat ${time(edge.last_heartbeat)})` : "");
      } else {
        edge.badge.className = "badge " + (up ? (edge.paused ? "paused" : "up") : "down");
        edge.badge.textContent = up ? `${name}: connected · ${edge.rate.toFixed(0)} acked/s · backlog ${edge.backlog}`
            + (edge.paused ? " · paused for its disk budget" : "")
          : edge.last_heartbeat ? `${name}: offline since ${time(edge.last_heartbeat)}` : `${name}: offline (no heartbeat yet)`;
      }
      if (edge.history) {
        edge.chart.data.labels = edge.history.minutes.map(time);
        edge.chart.data.datasets[0].data = edge.history.backlog;
        edge.chart.update();
        const periods = edge.history.offline.filter((p) => p.end === null || p.end > now - HOUR).slice(-3);
        edge.list.replaceChildren(...(periods.length ? periods.map((p) => el("li", p.end === null
          ? `offline since ${time(p.start)}` : `offline ${time(p.start)}–${time(p.end)} (${Math.round((p.end - p.start) / 1000)} s)`))
          : [el("li", "no offline period in the last hour")]));
      }
    });
    const cards = names.map((n) => edges.get(n).card);
    if (box.children.length !== cards.length || cards.some((c, i) => box.children[i] !== c)) box.replaceChildren(...cards);
  }

  // --- latest tuples -------------------------------------------------------------
  let recentRows = [];
  function paintRecent(rows, replace) {
    // An update may carry tuples the summary before it already showed, or older ones it had no room for:
    // each tuple once, newest stored first.
    // A tuple is its edge's household's window, as the store tells them apart (an edge's ids begin again).
    const key = (t) => [t.edge, t.household, t.window_start, t.window_end].join("\u0000");
    const shown = new Set(replace ? [] : recentRows.map(key));
    rows = rows.filter((t) => !shown.has(key(t)));
    if (!rows.length) return;
    recentRows = replace ? rows : rows.concat(recentRows).sort((a, b) => (b.acked_ms || 0) - (a.acked_ms || 0));
    recentRows = recentRows.slice(0, 15);
    document.getElementById("recent").replaceChildren(...recentRows.map((t) => {
      const tr = el("tr", undefined, "clickable");
      [new Date(t.window_start).toLocaleString(), t.household.slice(0, 24), t.state, t.postal_code, t.power_w.toFixed(1), t.edge]
        .forEach((text, i) => tr.appendChild(el("td", text, i === 4 ? "num" : "")));
      tr.addEventListener("click", () => showHousehold(t.household));
      return tr;
    }));
  }

  // --- applying what arrives -------------------------------------------------------
  function paintStates() {
    statesChart.data.datasets[0].data = STATES.map(annualKwh);
    statesChart.update();
    map.update(Object.fromEntries(STATES.map((s) => [s, annualKwh(s)])));
  }

  function applySummary(summary) {
    learnSkew(summary.ts);
    summary.states.forEach((s) => { sums.set(s.state, [s.households, s.mean_power_w * s.tuples, s.tuples]); });
    if (summary.power) setPower(summary.power);
    summary.edges.forEach((e) => {
      const edge = ensureEdge(e.edge, e.history);
      edge.last_heartbeat = e.last_heartbeat; edge.backlog = e.backlog; edge.rate = e.acked_per_second;
      edge.paused = e.paused;
    });
    paintStates(); paintEdges(); paintRecent(summary.recent, true);
  }

  function applyUpdate(update) {
    learnSkew(update.ts);
    // A state's totals with more tuples are the newer ones (updates may hold batches the summary had).
    Object.entries(update.states || {}).forEach(([state, triple]) => {
      if (!sums.has(state) || triple[2] >= sums.get(state)[2]) sums.set(state, triple);
    });
    Object.entries(update.beats || {}).forEach(([edge, b]) => beat(edge, b.ts, b.backlog, b.paused));
    Object.entries(update.edges || {}).forEach(([edge, count]) => acked(edge, count));
    ackedThisSecond += update.acked;
    mergePower(update.power);
    paintStates(); paintEdges(); paintRecent(update.recent || []);
  }

  function applyHousehold(h) {
    if (h.household !== watching) return;
    h.series.forEach((p) => householdPoints.set(p.window_start, p.power_w));
    paintHousehold();
  }

  // --- first paint from the API, then the websocket ------------------------------
  Promise.all([getJSON("/api/states/"), getJSON("/api/edges/"), getJSON("/api/tuples/recent/?limit=15"), getJSON("/api/power/")])
    .then(([states, edgeRows, recent, power]) => { if (!summarised) applySummary({ states, edges: edgeRows, recent, power }); })
    .catch(() => {});

  const link = document.getElementById("link");
  function showLink(kind, text) { link.className = "link link-" + kind; link.textContent = text; }

  let pause = FIRST_PAUSE_MS;
  function connect() {
    socket = new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws/dashboard/");
    socketMadeAt = Date.now();
    socket.onopen = () => {
      socketHeardAt = Date.now();
      if (watching) socket.send(JSON.stringify({ watch: watching }));
    };
    socket.onmessage = (event) => {
      socketHeardAt = Date.now();
      const message = JSON.parse(event.data);
      if (message.type === "alive") return;  // the web server's, not the cloud's: says only that the socket is up
      // Live, and the pause short again, only once the server delivers: one that accepts and then closes
      // (its channel layer down) must still be retried ever more slowly.
      heardAt = Date.now();
      if (live && cloudSilent) {
        // The cloud speaks again: what it may have stored while its updates did not come (a channel layer
        // it could not reach) is caught up by a new socket's summary.
        rejoin = true;
        socket.close();
        return;
      }
      if (!live) {
        live = true;
        pause = FIRST_PAUSE_MS;
        showLink("live", "Live: updates arrive as the cloud stores tuples.");
      }
      if (message.type === "summary") {
        const again = summarised;
        summarised = true;
        applySummary(message);
        if (again && watching) showHousehold(watching, false);  // its windows stored while the socket was down
      } else if (message.type === "update") applyUpdate(message);
      else if (message.type === "household") applyHousehold(message);
    };
    socket.onclose = () => {
      live = false;
      cloudSilent = false;
      if (rejoin) { rejoin = false; connect(); return; }
      showLink("down", `Live updates are down: the websocket closed. Reconnecting in ${Math.round(pause / 1000)} s…`);
      setTimeout(connect, jittered(pause));
      pause = Math.min(pause * 2, LONGEST_PAUSE_MS);
    };
  }
  // A little off the pause, each page its own: after a web server's restart the pages do not all come back at once.
  const jittered = (ms) => ms * (0.8 + 0.4 * Math.random());
  function abandon(why) {
    // A socket that died on the way may never close by itself: it is left to its fate, unheard, and a new one
    // opened (its summary catches up what the dead one missed).
    const dead = socket;
    dead.onopen = dead.onmessage = dead.onclose = null;
    dead.close();
    live = false;
    cloudSilent = false;
    showLink("down", `Live updates are down: ${why}. Reconnecting in ${Math.round(pause / 1000)} s…`);
    setTimeout(connect, jittered(pause));
    pause = Math.min(pause * 2, LONGEST_PAUSE_MS);
  }
  connect();
  setInterval(() => {  // a point a second, and "offline since" without waiting for a message
    const backlog = [...edges.values()].reduce((a, e) => a + (e.backlog || 0), 0);
    flowChart.data.labels.push(time(Date.now()));
    if (socket.readyState === WebSocket.OPEN && Date.now() - socketHeardAt > SOCKET_DEAD_MS) {
      abandon(`nothing has come on the websocket since ${time(socketHeardAt)}, so the connection died on the way`);
    } else if (socket.readyState === WebSocket.CONNECTING && Date.now() - socketMadeAt > SOCKET_OPEN_MS) {
      abandon(`the websocket did not open within ${Math.round(SOCKET_OPEN_MS / 1000)} s: nothing answered its handshake`);
    } else if (live && !cloudSilent && Date.now() - heardAt > CLOUD_SILENT_MS && socketHeardAt > heardAt) {
      // The cloud is silent only while the socket is heard from: an "alive" came after the cloud's last message.
      cloudSilent = true;
      showLink("down", `Live updates have stopped: the cloud has sent nothing since ${time(heardAt)}. ` +
        "This page stays connected and goes on when the cloud speaks again.");
    }
    // While nothing is heard nothing is known: a gap, not a fall to zero a fresh page would not show.
    flowChart.data.datasets[0].data.push(hearing() ? ackedThisSecond : null);
    flowChart.data.datasets[1].data.push(hearing() ? backlog : null);
    if (flowChart.data.labels.length > FLOW_POINTS) { flowChart.data.labels.shift(); flowChart.data.datasets.forEach((d) => d.data.shift()); }
    flowChart.update();
    ackedThisSecond = 0;
    edges.forEach((e) => { e.rate = 0.8 * (e.rate || 0) + 0.2 * (e.ackedNow || 0); e.ackedNow = 0; });
    paintEdges();
    paintPower();
  }, 1000);
})();
