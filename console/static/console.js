// eskit console: confirmation of actions, the live feed, the rebuild's
// progress bar. Every value from the server is inserted as text.
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  for (const form of document.querySelectorAll("form[data-confirm]")) {
    form.addEventListener("submit", (e) => {
      if (!window.confirm(form.dataset.confirm)) e.preventDefault();
    });
  }
  const live = document.getElementById("live");
  if (live) followLive(live);
  const build = document.getElementById("build");
  if (build) followBuild(build);
});

function cell(tr, text, href) {
  const td = document.createElement("td");
  if (href) {
    const a = document.createElement("a");
    a.href = href;
    a.textContent = text;
    td.appendChild(a);
  } else {
    td.textContent = text;
  }
  tr.appendChild(td);
  return td;
}

function followLive(table) {
  const body = table.tBodies[0];
  const state = document.getElementById("live-state");
  const pause = document.getElementById("pause");
  let paused = false;
  let held = [];
  const show = (ev) => {
    const tr = document.createElement("tr");
    tr.className = "fresh";
    cell(tr, ev.position, "/event?id=" + encodeURIComponent(ev.id));
    cell(tr, ev.stream, "/stream?id=" + encodeURIComponent(ev.stream));
    cell(tr, String(ev.version));
    cell(tr, ev.type);
    cell(tr, ev.recorded_at);
    const pre = document.createElement("pre");
    pre.className = "payload";
    pre.textContent = ev.data;
    cell(tr, "").appendChild(pre);
    body.insertBefore(tr, body.firstChild);
    while (body.rows.length > 500) body.deleteRow(body.rows.length - 1);
  };
  const src = new EventSource("/live/events?after=" + encodeURIComponent(table.dataset.after));
  src.onopen = () => { state.textContent = paused ? "paused" : "live"; };
  src.onerror = () => { state.textContent = "reconnecting"; };
  src.addEventListener("failure", (e) => { state.textContent = "store error: " + JSON.parse(e.data); });
  src.addEventListener("record", (e) => {
    const ev = JSON.parse(e.data);
    if (paused) {
      held.push(ev);
      state.textContent = "paused (" + held.length + " new)";
      return;
    }
    show(ev);
  });
  pause.addEventListener("click", () => {
    paused = !paused;
    pause.textContent = paused ? "Resume" : "Pause";
    state.textContent = paused ? "paused" : "live";
    if (!paused) {
      for (const ev of held) show(ev);
      held = [];
    }
  });
}

function followBuild(bar) {
  const text = document.getElementById("build-text");
  const tick = async () => {
    try {
      const res = await fetch(bar.dataset.url, { credentials: "same-origin" });
      if (!res.ok) throw new Error(res.statusText);
      const p = await res.json();
      if (p.building && p.total >= 0) {
        bar.value = p.total > 0 ? p.done / p.total : 1;
        text.textContent = p.done + "/" + p.total + " records (" + (100 * bar.value).toFixed(1) + "%)";
      } else if (p.building) {
        text.textContent = "at " + p.position;
      }
      if (!p.building && !p.running) {
        window.location.reload();
        return;
      }
    } catch (err) {
      text.textContent = "progress unknown: " + err.message;
    }
    window.setTimeout(tick, 500);
  };
  window.setTimeout(tick, 500);
}
