// nbgroups dashboard: live counts, sorting and filtering. Vanilla JS, no
// dependencies, nothing fetched from the web. Every value from the store is
// written with textContent (never innerHTML), so it shows as text.
"use strict";
(function () {
  const body = document.body;
  const root = body.dataset.root;
  const POLL_MS = 1000;
  const MAX_ROWS = 500;  // drawn each second; a filter finds the others
  const COLUMNS = ["group", "state", "percent", "submitted", "done", "failed", "cancelled",
    "reused", "running", "queued", "elapsed", "eta", "first", "last"];
  let sortKey = "last";
  let sortDescending = true;

  function cell(tr, text, cls) {
    const td = document.createElement("td");
    td.textContent = text;
    if (cls) td.className = cls;
    tr.appendChild(td);
    return td;
  }

  function stamp(t) {
    return t == null ? "" : new Date(t * 1000).toLocaleString();
  }

  function groupRow(g) {
    const tr = document.createElement("tr");
    tr.dataset.group = g.group;
    if (g.cached) tr.dataset.cached = "1";
    tr.className = "state-" + g.state;
    const a = document.createElement("a");
    a.href = root + "/group?name=" + encodeURIComponent(g.group) + (g.cached ? "&cached=1" : "");
    a.textContent = g.group;
    const td = cell(tr, "");
    td.appendChild(a);
    if (g.cached) {  // a group of the cache layer (cached=): its entries expire
      const badge = document.createElement("span");
      badge.className = "badge";
      badge.textContent = "cache";
      td.append(" ", badge);
    }
    cell(tr, g.state);
    const progress = cell(tr, "");
    const bar = document.createElement("progress");
    bar.max = g.submitted;
    bar.value = g.done + g.failed + g.cancelled;
    progress.appendChild(bar);
    progress.appendChild(document.createTextNode(" " + g.percent + "%"));
    for (const key of ["submitted", "done", "failed", "cancelled", "reused", "running", "queued"]) {
      cell(tr, String(g[key]), "num").dataset.field = key;
    }
    cell(tr, g.elapsed_text);
    cell(tr, g.eta_text);
    cell(tr, stamp(g.first));
    cell(tr, stamp(g.last));
    return tr;
  }

  function compare(a, b) {
    let x = a[sortKey], y = b[sortKey];
    if (x == null) x = -Infinity;
    if (y == null) y = -Infinity;
    const order = typeof x === "string" ? x.localeCompare(y) : x - y;
    return sortDescending ? -order : order;
  }

  function visible(g) {
    const text = document.getElementById("filter").value.trim().toLowerCase();
    const state = document.getElementById("state-filter").value;
    return (!text || g.group.toLowerCase().includes(text)) && (!state || g.state === state);
  }

  let lastGroups = null;

  function drawGroups() {
    const tbody = document.querySelector("#groups tbody");
    const shown = lastGroups.filter(visible).sort(compare);
    tbody.replaceChildren(...shown.slice(0, MAX_ROWS).map(groupRow));
    document.getElementById("shown").textContent = shown.length > MAX_ROWS
      ? `the first ${MAX_ROWS} of ${shown.length} groups shown: filter to find others` : "";
    for (const th of document.querySelectorAll("#groups th")) {
      th.classList.toggle("sorted", th.dataset.key === sortKey);
      th.classList.toggle("descending", th.dataset.key === sortKey && sortDescending);
    }
    document.getElementById("no-groups").hidden = lastGroups.length > 0;
  }

  async function poll(url, draw) {
    for (;;) {
      if (document.hidden) {  // a background tab asks nothing (the store reads cost)
        await new Promise((resolve) => setTimeout(resolve, POLL_MS));
        continue;
      }
      try {
        const response = await fetch(typeof url === "function" ? url() : url,
                                     {credentials: "same-origin",
                                      headers: {Accept: "application/json"}});
        if (response.ok) {
          draw(await response.json());
          const updated = document.getElementById("updated");
          if (updated) updated.textContent = new Date().toLocaleTimeString();
          body.dataset.polls = String(Number(body.dataset.polls || 0) + 1);
        }
      } catch (e) {
        // the server restarting: try again at the next tick
      }
      await new Promise((resolve) => setTimeout(resolve, POLL_MS));
    }
  }

  function groupsPage() {
    for (const th of document.querySelectorAll("#groups th")) {
      th.addEventListener("click", () => {
        if (sortKey === th.dataset.key) sortDescending = !sortDescending;
        else { sortKey = th.dataset.key; sortDescending = th.dataset.key !== "group"; }
        if (lastGroups) drawGroups();
      });
    }
    for (const id of ["filter", "state-filter"]) {
      document.getElementById(id).addEventListener("input", () => lastGroups && drawGroups());
    }
    poll(root + "/api/groups", (data) => { lastGroups = data.groups; drawGroups(); });
  }

  function groupPage() {
    const name = encodeURIComponent(body.dataset.group) +
      (body.dataset.cached ? "&cached=1" : "");
    const table = document.getElementById("tasks");
    const page = `&offset=${table.dataset.offset}&limit=${table.dataset.limit}`;
    let running = true;  // until the first answer says otherwise
    // While the group runs, the rows of this page are asked for too (their states
    // change); once it is settled, only the counts (a few key reads).
    const url = () => root + "/api/group?name=" + name + (running ? page : "&tasks=0");
    poll(url, (data) => {
      const s = data.summary;
      for (const el of document.querySelectorAll("#summary [data-field]")) {
        const value = s[el.dataset.field];
        el.textContent = value == null ? "" : String(value);
      }
      const bar = document.getElementById("bar");
      bar.max = s.submitted;
      bar.value = s.done + s.failed + s.cancelled;
      for (const row of data.rows || []) {
        const tr = table.querySelector(`tr[data-id="${row.id}"]`);
        if (!tr) continue;
        tr.className = "state-" + row.state;
        for (const td of tr.querySelectorAll("[data-cell]")) {
          td.textContent = String(row[td.dataset.cell]);
        }
      }
      running = s.state === "running";
    });
  }

  for (const form of document.querySelectorAll("form.confirm")) {
    form.addEventListener("submit", (event) => {
      if (!window.confirm(form.dataset.confirm)) event.preventDefault();
    });
  }
  if (body.dataset.page === "groups") groupsPage();
  if (body.dataset.page === "group") groupPage();
})();
