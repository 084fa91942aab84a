// CRM Pulse wall display: loads today's leaderboard and totals over REST, then follows the
// live WebSocket feed (docs/websocket.md). Plain JavaScript, no build step, no network but the API.
"use strict";

(function () {
  const params = new URLSearchParams(window.location.search);
  const team = params.get("team");
  const maxRows = Math.max(1, parseInt(params.get("rows") || "15", 10) || 15);
  const totalScope = team ? "t:" + team : "c";
  const ROW_KPIS = ["calls", "meetings", "deals_won", "revenue"];
  const TOTAL_KPIS = ["calls", "meetings", "deals_won", "revenue", "win_rate"];
  const HEARTBEAT_TIMEOUT_MS = 45000;

  const state = {
    day: null, // current day label, e.g. "2026-11-27"
    month: null, // current month label, e.g. "2026-11"
    currency: "USD",
    totals: { day: null, month: null },
    managers: new Map(), // manager id -> today's KPI values
    members: null, // team view: the team's manager ids (null: every manager)
  };

  let socket = null;
  let backoffMs = 500;
  let lastMessageAt = 0;
  let reconnectTimer = null;
  let membershipTimer = null;

  // ---------- formatting ----------

  const integer = new Intl.NumberFormat("en-US");
  let money = makeMoney("USD");

  function makeMoney(currency) {
    try {
      return new Intl.NumberFormat("en-US", { style: "currency", currency: currency, maximumFractionDigits: 0 });
    } catch (e) {
      return new Intl.NumberFormat("en-US", { maximumFractionDigits: 0 });
    }
  }

  function format(kpi, value) {
    if (value === null || value === undefined) return "–";
    if (kpi === "revenue") return money.format(Number(value));
    if (kpi === "win_rate") return (Number(value) * 100).toFixed(1) + "%";
    return integer.format(Number(value));
  }

  // Write a value into a cell; flash it when the shown value changes.
  function setCell(cell, kpi, value, animate) {
    const raw = value === null || value === undefined ? "" : String(value);
    const text = format(kpi, value);
    if (cell.textContent === text && cell.dataset.value === raw) return;
    const changed = cell.dataset.value !== undefined && cell.dataset.value !== raw;
    cell.dataset.value = raw;
    cell.textContent = text;
    if (animate && changed) {
      cell.classList.remove("flash");
      void cell.offsetWidth; // restart the animation
      cell.classList.add("flash");
    }
  }

  // ---------- rendering ----------

  function renderTotals(animate) {
    for (const period of ["day", "month"]) {
      const kpis = state.totals[period];
      for (const kpi of TOTAL_KPIS) {
        const cell = document.querySelector(
          '[data-scope="total"][data-period="' + period + '"][data-kpi="' + kpi + '"]'
        );
        if (cell) setCell(cell, kpi, kpis ? kpis[kpi] : null, animate);
      }
    }
  }

  function ranked() {
    return Array.from(state.managers.entries())
      .filter(([id]) => state.members === null || state.members.has(id))
      .sort((a, b) => {
        const byRevenue = Number(b[1].revenue) - Number(a[1].revenue);
        return byRevenue !== 0 ? byRevenue : a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0;
      })
      .slice(0, maxRows);
  }

  function renderLeaderboard(animate) {
    const body = document.getElementById("leaderboard");
    const template = document.getElementById("row-template");
    const existing = new Map();
    for (const row of body.querySelectorAll("tr[data-manager]")) existing.set(row.dataset.manager, row);
    const rows = ranked();
    rows.forEach(([id, kpis], index) => {
      let row = existing.get(id);
      if (!row) {
        row = template.content.firstElementChild.cloneNode(true);
        row.dataset.manager = id;
        row.querySelector("[data-name]").textContent = id;
      }
      existing.delete(id);
      row.querySelector("[data-rank]").textContent = String(index + 1);
      row.dataset.rank = String(index + 1);
      for (const kpi of ROW_KPIS) setCell(row.querySelector('[data-kpi="' + kpi + '"]'), kpi, kpis[kpi], animate);
      if (body.children[index] !== row) body.insertBefore(row, body.children[index] || null);
    });
    for (const row of existing.values()) row.remove();
    showMessage(rows.length === 0 ? "No activity yet today" : null);
  }

  function showMessage(text) {
    const message = document.getElementById("message");
    message.hidden = !text;
    message.textContent = text || "";
  }

  function setLive(live) {
    const status = document.getElementById("live-status");
    status.dataset.state = live ? "live" : "reconnecting";
    document.getElementById("live-status-text").textContent = live ? "live" : "reconnecting";
  }

  function tickClock() {
    const now = new Date();
    document.getElementById("clock-time").textContent = now.toLocaleTimeString("en-GB");
    document.getElementById("clock-date").textContent = now.toLocaleDateString("en-GB", {
      weekday: "long",
      day: "numeric",
      month: "long",
      year: "numeric",
    });
  }

  // ---------- REST ----------

  async function fetchJSON(url) {
    const response = await fetch(url, { cache: "no-store" });
    if (!response.ok) {
      let detail = response.statusText;
      try {
        detail = (await response.json()).detail || detail;
      } catch (e) {
        /* not JSON */
      }
      const error = new Error(detail);
      error.status = response.status;
      throw error;
    }
    return response.json();
  }

  async function loadLeaderboard() {
    const query = "period=day&sort=revenue" + (team ? "&team_id=" + encodeURIComponent(team) : "");
    const board = await fetchJSON("/api/v1/leaderboard?" + query);
    state.day = board.period.label;
    state.currency = board.currency || state.currency;
    money = makeMoney(state.currency);
    state.managers = new Map(board.rows.map((row) => [row.manager_id, row.kpis]));
    if (team) state.members = new Set(board.rows.map((row) => row.manager_id));
  }

  async function loadTotals() {
    const base = team ? "/api/v1/kpis/teams/" + encodeURIComponent(team) : "/api/v1/kpis/company";
    const [day, month] = await Promise.all([fetchJSON(base + "?period=day"), fetchJSON(base + "?period=month")]);
    state.totals.day = day.kpis;
    state.totals.month = month.kpis;
    state.month = month.period.label;
  }

  async function loadAll() {
    try {
      await Promise.all([loadLeaderboard(), loadTotals()]);
      renderTotals(false);
      renderLeaderboard(false);
    } catch (error) {
      showMessage(error.status === 404 ? "Unknown team " + team : "Could not load the figures: " + error.message);
    }
  }

  function refreshMembershipSoon() {
    if (membershipTimer) return;
    membershipTimer = setTimeout(async () => {
      membershipTimer = null;
      try {
        await loadLeaderboard();
        renderLeaderboard(true);
      } catch (e) {
        /* next change retries */
      }
    }, 2000);
  }

  // ---------- live feed ----------

  function applySnapshot(message) {
    for (const [scope, snapshot] of Object.entries(message.scopes)) {
      state.day = snapshot.day.label;
      state.month = snapshot.month.label;
      if (scope === totalScope) {
        state.totals.day = snapshot.day.kpis;
        state.totals.month = snapshot.month.kpis;
      } else if (scope.startsWith("m:")) {
        const id = scope.slice(2);
        if (state.members === null || state.members.has(id)) state.managers.set(id, snapshot.day.kpis);
      }
    }
    renderTotals(true);
    renderLeaderboard(true);
  }

  function applyChange(message) {
    if (message.g === "day" && state.day && message.b > state.day) {
      // Midnight in the business time zone: start the new day from the server's figures.
      state.day = message.b;
      loadAll();
      return;
    }
    if (message.g === "month" && state.month && message.b > state.month) {
      state.month = message.b;
      loadAll();
      return;
    }
    const current = message.g === "day" ? state.day : state.month;
    if (message.b !== current) return; // a late event for an earlier bucket: not on the wall
    if (message.scope === totalScope) {
      state.totals[message.g] = message.kpis;
      renderTotals(true);
    } else if (message.scope.startsWith("m:") && message.g === "day") {
      const id = message.scope.slice(2);
      if (state.members !== null && !state.members.has(id)) {
        refreshMembershipSoon(); // a manager new to the team, or another team's
        return;
      }
      state.managers.set(id, message.kpis);
      renderLeaderboard(true);
    }
  }

  function onMessage(event) {
    lastMessageAt = Date.now();
    let message;
    try {
      message = JSON.parse(event.data);
    } catch (e) {
      return;
    }
    if (message.type === "snapshot") {
      setLive(true);
      backoffMs = 500;
      applySnapshot(message);
    } else if (message.type === "change") {
      applyChange(message);
    }
  }

  function connect() {
    reconnectTimer = null;
    const scheme = window.location.protocol === "https:" ? "wss:" : "ws:";
    const ws = new WebSocket(scheme + "//" + window.location.host + "/ws");
    socket = ws;
    ws.onopen = () => {
      lastMessageAt = Date.now();
      ws.send(JSON.stringify({ type: "subscribe", scopes: "*" }));
    };
    ws.onmessage = onMessage;
    ws.onclose = () => {
      if (socket !== ws) return;
      setLive(false);
      scheduleReconnect();
    };
    ws.onerror = () => ws.close();
  }

  function scheduleReconnect() {
    if (reconnectTimer) return;
    const delay = backoffMs * (0.75 + Math.random() * 0.5);
    backoffMs = Math.min(backoffMs * 2, 15000);
    reconnectTimer = setTimeout(async () => {
      await loadAll(); // catch up on what happened while disconnected
      connect();
    }, delay);
  }

  function watchHeartbeat() {
    // The server pings every 15 s; silence for longer means a dead connection.
    if (socket && socket.readyState === WebSocket.OPEN && Date.now() - lastMessageAt > HEARTBEAT_TIMEOUT_MS) {
      socket.close();
    }
  }

  // ---------- start ----------

  document.getElementById("scope-name").textContent = team ? "· " + team : "";
  tickClock();
  setInterval(tickClock, 1000);
  setInterval(watchHeartbeat, 5000);
  loadAll().then(connect);
})();
