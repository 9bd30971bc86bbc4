// drive.js: the Faktory client side of bench/faktory.py. It drives jobq's FWP listener with
// the real Node client `faktory-worker` (version pinned in package.json), and, for the
// baseline pushes, jobq's HTTP API with Node's own http module (keep-alive connections), so both sides of a push ratio
// are the same language and runtime.
//
//   FAKTORY_URL=tcp://127.0.0.1:PORT JOBQ_URL=http://127.0.0.1:PORT JOBS=20000 node drive.js <mode>
//
// Every mode first connects and prints "ready" on stdout, then waits for a line on stdin
// ("go"), so that process start-up and connecting stay out of what the caller times.
//
//   pushb        JOBS no-op jobs {"jobtype": "noop", "args": []} with client.pushBulk,
//                BATCH (default 1000) per PUSHB, one PUSHB in flight
//   push         the same with single PUSH commands, CONNECTIONS (default 16) in flight, each
//                on a connection of its own (the client's pool holds CONNECTIONS connections)
//   http-batch   JOBS {"type": "noop"} jobs with POST /enqueue/batch, BATCH per request, one in flight
//   http-single  the same with POST /enqueue, CONNECTIONS requests in flight
//   work         WORKERS (default 1) Worker objects in this process, each at CONCURRENCY
//                (default 64), running the no-op jobtype "noop" from queue "default"; after "go"
//                they work until a second line ("stop") comes, then stop (each waits for its
//                running jobs and their ACKs). A Worker has one FETCH in flight whatever its
//                concurrency (its tick() awaits each FETCH before the next), so WORKERS is
//                how many FETCHes are in flight
//
// After the run it prints ONE JSON line: the push modes {"jobs", "seconds", "rejected"}, where
// seconds run from "go" to the last answer; work {"processed", "errors"}. Errors go to stderr
// with a non-zero exit.
"use strict";

const http = require("node:http");
const readline = require("node:readline");
const { Client, Worker } = require("faktory-worker");

const JOBTYPE = "noop";

function env(name, fallback) {
  const value = process.env[name] ?? fallback;
  if (value === undefined) throw new Error(`env ${name} is required`);
  return value;
}

const lines = readline.createInterface({ input: process.stdin })[Symbol.asyncIterator]();

async function nextLine(what) {
  const { value, done } = await lines.next();
  if (done) throw new Error(`stdin closed while waiting for ${what}`);
  return value.trim();
}

function say(text) {
  process.stdout.write(text + "\n");
}

function sizes(jobs, batch) {
  const out = [];
  for (let offset = 0; offset < jobs; offset += batch) out.push(Math.min(batch, jobs - offset));
  return out;
}

// Run `count` calls of `one`, `lanes` at a time.
async function lanes(count, width, one) {
  let next = 0;
  const lane = async () => {
    while (next < count) {
      next += 1;
      await one();
    }
  };
  await Promise.all(Array.from({ length: Math.min(width, count) }, lane));
}

async function timed(run) {
  say("ready");
  await nextLine("go");
  const started = process.hrtime.bigint();
  const rejected = await run();
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  return { jobs: Number(env("JOBS")), seconds, rejected };
}

async function pushFaktory(bulk) {
  const jobs = Number(env("JOBS"));
  const width = Number(env("CONNECTIONS", "16"));
  const client = new Client({ url: env("FAKTORY_URL"), poolSize: bulk ? 1 : width });
  try {
    // open the pool's connections before the clock starts
    await lanes(bulk ? 1 : width, width, () => client.info());
    return await timed(async () => {
      let rejected = 0;
      if (bulk) {
        for (const size of sizes(jobs, Number(env("BATCH", "1000")))) {
          const batch = Array.from({ length: size }, () => client.job(JOBTYPE));
          rejected += Object.keys(await client.pushBulk(batch)).length;
        }
      } else {
        await lanes(jobs, width, () => client.job(JOBTYPE).push());
      }
      return rejected;
    });
  } finally {
    await client.close();
  }
}

// One request on a keep-alive connection of `agent` (a POST when there is a body); its parsed JSON answer.
function call(agent, base, path, body) {
  const data = body === undefined ? Buffer.alloc(0) : Buffer.from(JSON.stringify(body));
  const method = body === undefined ? "GET" : "POST";
  return new Promise((resolve, reject) => {
    const request = http.request(
      new URL(path, base),
      { method, agent, headers: { "content-type": "application/json", "content-length": data.length } },
      (answer) => {
        const chunks = [];
        answer.on("data", (chunk) => chunks.push(chunk));
        answer.on("end", () => {
          const text = Buffer.concat(chunks).toString();
          if (answer.statusCode >= 300) reject(new Error(`${path}: ${answer.statusCode} ${text.slice(0, 500)}`));
          else resolve(JSON.parse(text));
        });
        answer.on("error", reject);
      },
    );
    request.on("error", reject);
    request.end(data);
  });
}

async function pushHttp(bulk) {
  const base = env("JOBQ_URL");
  const jobs = Number(env("JOBS"));
  const width = bulk ? 1 : Number(env("CONNECTIONS", "16"));
  const agent = new http.Agent({ keepAlive: true, maxSockets: width, noDelay: true });
  // open the connections before the clock starts
  await lanes(width, width, () => call(agent, base, "/health"));
  try {
    return await timed(async () => {
      let rejected = 0;
      if (bulk) {
        for (const size of sizes(jobs, Number(env("BATCH", "1000")))) {
          const answer = await call(agent, base, "/enqueue/batch", { jobs: Array(size).fill({ type: JOBTYPE }) });
          rejected += answer.rejected;
        }
      } else {
        await lanes(jobs, width, () => call(agent, base, "/enqueue", { type: JOBTYPE }));
      }
      return rejected;
    });
  } finally {
    agent.destroy();
  }
}

async function work() {
  const count = Number(env("WORKERS", "1"));
  const concurrency = Number(env("CONCURRENCY", "64"));
  let processed = 0;
  const errors = [];
  const workers = Array.from({ length: count }, () => {
    const worker = new Worker({ url: env("FAKTORY_URL"), concurrency, queues: ["default"] });
    worker.register(JOBTYPE, () => {
      processed += 1;
    });
    worker.on("error", (err) => errors.push(String((err && err.message) || err)));
    return worker;
  });
  await Promise.all(workers.map((worker) => worker.work()));
  say("ready");
  await nextLine("go");
  await nextLine("stop");
  await Promise.all(workers.map((worker) => worker.stop()));
  return { processed, errors: errors.slice(0, 5), error_count: errors.length };
}

const modes = {
  pushb: () => pushFaktory(true),
  push: () => pushFaktory(false),
  "http-batch": () => pushHttp(true),
  "http-single": () => pushHttp(false),
  work,
};

async function main() {
  const mode = modes[process.argv[2]];
  if (!mode) throw new Error(`usage: node drive.js ${Object.keys(modes).join("|")}`);
  say(JSON.stringify(await mode()));
}

main().then(
  () => process.exit(0),
  (err) => {
    process.stderr.write(`drive.js: ${(err && err.stack) || err}\n`);
    process.exit(1);
  },
);
