// Schedules: every schedule with when it ticks, its job, its last and next run, and (for an admin)
// pause, resume, run now and delete. Refreshed every 5 s while shown.

import { del, get, poll, post } from "./api.js";
import { button, h, relTime, route } from "./dom.js";

const REFRESH_MS = 5000;
const schedulePath = (name) => `/schedules/${encodeURIComponent(name)}`;

export function renderSchedules(ctx) {
  const table = h("div", { class: "table-wrap" }, h("p", { class: "muted" }, "Loading…"));
  ctx.root.append(h("div", { class: "view-head" }, h("h1", {}, "Schedules")), table);
  const load = async () => {
    try {
      const answer = await get("/schedules");
      table.replaceChildren(schedulesTable(ctx, answer.schedules || [], load));
    } catch (error) {
      ctx.flashError(error);
    }
  };
  const poller = poll(load, REFRESH_MS);
  ctx.onCleanup(() => poller.stop());
}

/** "0 3 * * * (Europe/Paris)" or "every 30s". */
function when(s) {
  return s.cron ? `${s.cron} (${s.timezone})` : `every ${s.every}s`;
}

function schedulesTable(ctx, schedules, reload) {
  if (!schedules.length) {
    return h("p", { class: "muted", "data-testid": "no-schedules" }, "No schedules: POST /schedules, or --schedules FILE at start.");
  }
  const head = ["Schedule", "When", "Job", "Missed ticks", "State", "Last run", "Next run"];
  const rows = schedules.map((s) => {
    const job = s.job || {};
    const row = h("tr", { "data-testid": "schedule-row" },
      h("th", { scope: "row" }, s.name),
      h("td", { "data-testid": "schedule-when" }, when(s)),
      h("td", {}, job.type, " on ", h("a", { href: route("#/jobs", { queue: job.queue }) }, job.queue)),
      h("td", {}, s.missed === "once" ? "run once" : "skipped"),
      h("td", {}, s.paused
        ? h("span", { class: "badge badge-paused", "data-testid": "schedule-paused" }, "paused")
        : h("span", { class: "muted" }, "active")),
      h("td", { "data-testid": "schedule-last" }, s.last_run_at ? relTime(s.last_run_at) : h("span", { class: "muted" }, "never")),
      h("td", { "data-testid": "schedule-next" }, s.next_run_at ? relTime(s.next_run_at) : h("span", { class: "muted" }, "—")),
      ctx.canManageSchedules ? h("td", {}, h("div", { class: "actions" }, scheduleActions(ctx, s, reload))) : null,
    );
    row.setAttribute("data-schedule", s.name);
    return row;
  });
  return h("table", { "data-testid": "schedules-table" },
    h("thead", {}, h("tr", {}, head.map((t) => h("th", {}, t)), ctx.canManageSchedules ? h("th", {}, "Actions") : null)),
    h("tbody", {}, rows));
}

function scheduleActions(ctx, s, reload) {
  const act = (btn, fn) => async () => {
    btn.disabled = true;
    try {
      await fn();
    } catch (error) {
      ctx.flashError(error);
    }
    btn.disabled = false;
    reload();
  };
  const toggle = s.paused
    ? button("Resume", "resume-schedule", () => act(toggle, async () => {
      await post(`${schedulePath(s.name)}/resume`);
      ctx.flash(`Schedule ${s.name} resumed: its next tick runs.`);
    })())
    : button("Pause", "pause-schedule", () => act(toggle, async () => {
      await post(`${schedulePath(s.name)}/pause`);
      ctx.flash(`Schedule ${s.name} paused: no tick fires until it is resumed.`);
    })());
  const run = button("Run now", "run-schedule", () => act(run, async () => {
    const receipt = await post(`${schedulePath(s.name)}/run`);
    ctx.flash(`Schedule ${s.name} enqueued job ${receipt.id}.`);
  })());
  const remove = button("Delete", "delete-schedule", () => {
    // confirm() shows plain text, so the name cannot inject anything here.
    if (!confirm(`Delete schedule "${s.name}"? The jobs it enqueued stay.`)) return;
    act(remove, async () => {
      await del(schedulePath(s.name));
      ctx.flash(`Schedule ${s.name} deleted.`);
    })();
  }, { class: "danger" });
  for (const b of [toggle, run, remove]) b.setAttribute("data-schedule", s.name);
  return [toggle, run, remove];
}
