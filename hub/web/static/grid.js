// Keeps the study page's rounds-by-sites grid live: polls the JSON API and redraws the badges that changed.
"use strict";
(function () {
  const grid = document.getElementById("grid");
  if (!grid) return;
  const state = document.getElementById("study-state");
  let final = grid.dataset.final === "true";

  function badge(job) {
    const span = document.createElement("span");
    span.className = "badge g-" + job.group;
    span.title = job.kind + (job.detail ? ": " + job.detail : "");
    span.textContent = (job.kind !== "evaluate" ? job.kind + " " : "") + job.state;
    return span;
  }

  function draw(data) {
    for (const cell of data.cells) {
      const td = grid.querySelector('td[data-cell="' + cell.round + "|" + CSS.escape(cell.site) + '"]');
      if (!td) { window.location.reload(); return; }  // a new round or site: the page lays the grid out again
      const badges = cell.jobs.length ? cell.jobs.map(badge) : [badge({kind: "evaluate", state: "not started", group: "none"})];
      const text = badges.map((b) => b.textContent + b.title).join("|");
      if (td.dataset.drawn !== text) { td.replaceChildren(...badges); td.dataset.drawn = text; }
    }
    const note = document.getElementById("pending-note");
    if (note && data.state !== "pending") note.remove();
    if (state && state.textContent !== data.state) {
      state.textContent = data.state;
      state.className = "badge big state-" + data.state;
    }
    if (data.final && !final) { window.location.reload(); }  // results, plots and the download appear
    final = data.final;
  }

  async function poll() {
    try {
      const reply = await fetch(grid.dataset.url, {headers: {Accept: "application/json"}, credentials: "same-origin"});
      if (reply.ok) draw(await reply.json());
    } catch (err) {
      // the hub may restart; the next poll picks up again
    }
    window.setTimeout(poll, final ? 15000 : 2000);
  }
  window.setTimeout(poll, 2000);
})();
