// drive.js: drives jobq's Faktory (FWP) listener with the real Node client
// `faktory-worker` (version pinned in package.json), so the Python test suite can
// check that a stock third-party client works against jobq end to end.
//
//   FAKTORY_URL=tcp://:password@127.0.0.1:7419 node drive.js <scenario>
//
// Prints ONE JSON line on stdout and exits 0; on any error, prints it on stderr
// and exits non-zero (2 if the whole run took longer than WATCHDOG_MS).
//
// Scenarios:
//   push-and-work  push 20 "add" jobs (args [i, i]) and one "boom" job to queue
//                  "node", work them with a Worker (concurrency 4, queues ["node"]);
//                  "boom" (retry -1: one attempt) throws Error("kaboom"), so the worker sends FAIL with a
//                  backtrace. Prints {"sums": [sorted], "pushed_jids": [21 jids,
//                  the adds in push order then boom], "boom_jid": jid}.
//   info           prints the parsed INFO object.
//   mutate         env JIDS (comma-separated): kill those jids in "retries"; then
//                  requeue everything in "dead" with jobtype env JOBTYPE. Prints {"ok": true}.
//   push-one       pushes one job: env JOBTYPE, ARGS (JSON array), optional CUSTOM
//                  (JSON object), JID and QUEUE. Prints {"jid": jid}.
"use strict";

const { Client, Worker } = require("faktory-worker");

const WATCHDOG_MS = 40000;
const url = process.env.FAKTORY_URL;

function env(name) {
  const value = process.env[name];
  if (!value) throw new Error(`env ${name} is required`);
  return value;
}

async function until(check, what, deadlineMs) {
  const deadline = Date.now() + deadlineMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

async function withClient(fn) {
  const client = new Client({ url });
  try {
    return await fn(client);
  } finally {
    await client.close();
  }
}

async function pushAndWork() {
  const pushed = await withClient(async (client) => {
    const jids = [];
    for (let i = 0; i < 20; i++) {
      const job = client.job("add", i, i);
      job.queue = "node";
      jids.push(await job.push());
    }
    const boom = client.job("boom");
    boom.queue = "node";
    boom.retry = -1; // one attempt: it is not fetched again while the worker stops
    jids.push(await boom.push());
    return jids;
  });

  const sums = [];
  const failed = [];
  const errors = [];
  const worker = new Worker({ url, concurrency: 4, queues: ["node"] });
  worker.register("add", (a, b) => {
    sums.push(a + b);
  });
  worker.register("boom", () => {
    throw new Error("kaboom");
  });
  worker.on("fail", ({ job }) => failed.push(job.jid)); // emitted once the server said OK to FAIL
  worker.on("error", (err) => errors.push(err));
  await worker.work();
  try {
    await until(() => (sums.length >= 20 && failed.length >= 1) || errors.length > 0,
      "20 adds and 1 failed boom", 20000);
  } finally {
    await worker.stop(); // quiets, waits for running jobs (and their ACK/FAIL), closes the pool
  }
  if (errors.length) throw errors[0];
  sums.sort((a, b) => a - b);
  return { sums, pushed_jids: pushed, boom_jid: pushed[pushed.length - 1] };
}

async function mutate() {
  const jids = env("JIDS").split(",").filter(Boolean);
  const jobtype = env("JOBTYPE");
  await withClient(async (client) => {
    await client.retries.withJids(jids).kill();
    await client.dead.ofType(jobtype).requeue();
  });
  return { ok: true };
}

async function pushOne() {
  return withClient(async (client) => {
    const args = JSON.parse(env("ARGS"));
    if (!Array.isArray(args)) throw new Error("ARGS must be a JSON array");
    const job = client.job(env("JOBTYPE"), ...args);
    if (process.env.CUSTOM) job.custom = JSON.parse(process.env.CUSTOM);
    if (process.env.JID) job.jid = process.env.JID;
    if (process.env.QUEUE) job.queue = process.env.QUEUE;
    return { jid: await job.push() };
  });
}

const scenarios = {
  "push-and-work": pushAndWork,
  info: () => withClient((client) => client.info()),
  mutate,
  "push-one": pushOne,
};

async function main() {
  if (!url) throw new Error("env FAKTORY_URL is required");
  const scenario = scenarios[process.argv[2]];
  if (!scenario) throw new Error(`usage: node drive.js ${Object.keys(scenarios).join("|")}`);
  const result = await scenario();
  process.stdout.write(JSON.stringify(result) + "\n");
}

setTimeout(() => {
  process.stderr.write(`drive.js: no result after ${WATCHDOG_MS} ms\n`);
  process.exit(2);
}, WATCHDOG_MS).unref();

main().then(
  () => process.exit(0),
  (err) => {
    process.stderr.write(`drive.js: ${(err && err.stack) || err}\n`);
    process.exit(1);
  },
);
