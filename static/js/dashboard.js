// The live dashboard: first paint from the REST API, then the websocket's
// summary and updates. Says plainly when the websocket is down and
// reconnects by itself with a growing pause.
"use strict";

(function () {
  const PRICE = JSON.parse(document.getElementById("price").textContent);
  const KWH_PER_W = 8.76;
  const CONNECTED_WITHIN_MS = 3000;
  const FLOW_POINTS = 120;
  const STATE_NAMES = {
    BW: "Baden-Württemberg", BY: "Bayern", BE: "Berlin", BB: "Brandenburg", HB: "Bremen", HH: "Hamburg",
    HE: "Hessen", MV: "Mecklenburg-Vorpommern", NI: "Niedersachsen", NW: "Nordrhein-Westfalen",
    RP: "Rheinland-Pfalz", SL: "Saarland", SN: "Sachsen", ST: "Sachsen-Anhalt", SH: "Schleswig-Holstein",
    TH: "Thüringen",
  };
  const STATES = Object.keys(STATE_NAMES);

  const sums = {};   // state -> [households, sum of averages, count]
  const edges = {};  // edge -> {last_heartbeat, backlog}
  let ackedThisSecond = 0;

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
      plugins: { tooltip: { callbacks: {
        title: (items) => STATE_NAMES[items[0].label],
        label: (item) => {
          const [households, total, count] = sums[item.label] || [0, 0, 0];
          const mean = count ? total / count : 0;
          return [`${item.parsed.y.toFixed(0)} kWh/year · ${(item.parsed.y * PRICE).toFixed(2)} €/year`,
                  `mean ${mean.toFixed(1)} W · ${households} households · ${count} windows`];
        } } } },
    },
  });
  const flowChart = new Chart(document.getElementById("flow-chart"), {
    type: "line",
    data: { labels: [], datasets: [
      { label: "acknowledged / s", data: [], borderColor: "#17692f", yAxisID: "y", pointRadius: 0, tension: .2 },
      { label: "backlog", data: [], borderColor: "#c2410c", yAxisID: "backlog", pointRadius: 0, tension: .2 },
    ] },
    options: { animation: false, maintainAspectRatio: false, scales: {
      y: { beginAtZero: true, title: { display: true, text: "tuples / s" } },
      backlog: { position: "right", beginAtZero: true, grid: { drawOnChartArea: false },
                 title: { display: true, text: "backlog" } },
    } },
  });

  // --- time zone ----------------------------------------------------------
  // Every time on the page is formatted in the browser's zone; say which, since
  // the pipeline's operators need not sit where its households are.
  function showTimeZone() {
    const zone = Intl.DateTimeFormat().resolvedOptions().timeZone || "local time";
    const minutes = -new Date().getTimezoneOffset();
    const abs = Math.abs(minutes);
    const offset = `UTC${minutes < 0 ? "-" : "+"}${String(Math.floor(abs / 60)).padStart(2, "0")}:` +
      String(abs % 60).padStart(2, "0");
    document.getElementById("time-zone").textContent =
      `Times are shown in ${zone} (${offset}), this browser's time zone.`;
  }
  showTimeZone();

  // --- painting -----------------------------------------------------------
  function paintStates() {
    statesChart.data.datasets[0].data = STATES.map((s) => {
      const [, total, count] = sums[s] || [0, 0, 0];
      return count ? (total / count) * KWH_PER_W : 0;
    });
    statesChart.update();
  }

  function pushFlow(ts, rate) {
    const backlog = Object.values(edges).reduce((a, e) => a + (e.backlog || 0), 0);
    const labels = flowChart.data.labels;
    labels.push(new Date(ts).toLocaleTimeString());
    flowChart.data.datasets[0].data.push(rate);
    flowChart.data.datasets[1].data.push(backlog);
    if (labels.length > FLOW_POINTS) {
      labels.shift();
      flowChart.data.datasets.forEach((d) => d.data.shift());
    }
    flowChart.update();
  }

  function paintEdges() {
    const box = document.getElementById("edges");
    const names = Object.keys(edges).sort();
    if (!names.length) return;
    const now = Date.now();
    box.replaceChildren(...names.map((name) => {
      const edge = edges[name];
      const up = edge.last_heartbeat && now - edge.last_heartbeat <= CONNECTED_WITHIN_MS;
      const badge = document.createElement("span");
      badge.className = "badge " + (up ? "up" : "down");
      badge.textContent = up
        ? `${name}: connected · backlog ${edge.backlog}`
        : edge.last_heartbeat ? `${name}: offline since ${new Date(edge.last_heartbeat).toLocaleTimeString()}`
                              : `${name}: offline (no heartbeat yet)`;
      return badge;
    }));
  }

  function paintRecent(rows) {
    const body = document.getElementById("recent");
    if (!rows.length) return;
    body.replaceChildren(...rows.slice(0, 15).map((t) => {
      const tr = document.createElement("tr");
      const cells = [new Date(t.window_start).toLocaleString(), t.household.slice(0, 16), t.state, t.postal_code,
                     t.power_w.toFixed(1)];
      cells.forEach((text, i) => {
        const td = document.createElement("td");
        td.textContent = text;
        if (i === 4) td.className = "num";
        tr.appendChild(td);
      });
      return tr;
    }));
  }

  function applySummary(summary) {
    summary.states.forEach((s) => {
      // The API gives the mean; keep sums so updates (absolute sums) fold in the same way.
      sums[s.state] = [s.households, s.mean_power_w * s.tuples, s.tuples];
    });
    summary.edges.forEach((e) => { edges[e.edge] = { last_heartbeat: e.last_heartbeat, backlog: e.backlog }; });
    paintStates();
    paintEdges();
    paintRecent(summary.recent);
  }

  let recentDue = 0;
  function applyUpdate(update) {
    Object.entries(update.states || {}).forEach(([state, triple]) => { sums[state] = triple; });
    Object.entries(update.beats || {}).forEach(([edge, beat]) => {
      edges[edge] = { last_heartbeat: beat.ts, backlog: beat.backlog };
    });
    ackedThisSecond += update.acked;
    paintStates();
    paintEdges();
    if (update.acked && Date.now() >= recentDue) {
      recentDue = Date.now() + 2000;
      fetch("/api/tuples/recent/?limit=15").then((r) => r.json()).then(paintRecent).catch(() => {});
    }
  }

  // --- first paint from the API, then the websocket ------------------------
  Promise.all(["/api/states/", "/api/edges/", "/api/tuples/recent/?limit=15"].map((u) => fetch(u).then((r) => r.json())))
    .then(([states, edgeRows, recent]) => applySummary({ states, edges: edgeRows, recent, ts: Date.now() }))
    .catch(() => {});

  const link = document.getElementById("link");
  function showLink(kind, text) { link.className = "link link-" + kind; link.textContent = text; }

  let pause = 1000;
  function connect() {
    const socket = new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws/dashboard/");
    socket.onopen = () => { pause = 1000; showLink("live", "Live: updates arrive as the cloud stores tuples."); };
    socket.onmessage = (event) => {
      const message = JSON.parse(event.data);
      if (message.type === "summary") applySummary(message);
      else if (message.type === "update") applyUpdate(message);
    };
    socket.onclose = () => {
      showLink("down", `Live updates are down: the websocket closed. Reconnecting in ${Math.round(pause / 1000)} s…`);
      setTimeout(connect, pause);
      pause = Math.min(pause * 2, 15000);
    };
  }
  connect();
  setInterval(() => {  // a point a second, and "offline since" without waiting for a message
    pushFlow(Date.now(), ackedThisSecond);
    ackedThisSecond = 0;
    paintEdges();
  }, 1000);
})();
