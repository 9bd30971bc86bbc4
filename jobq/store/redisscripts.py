"""The Redis store's server-side scripts: each state change is one Lua script, atomic on the server.

Keys (``P`` is the prefix in braces, ``{jobq}`` by default, so every key of one jobq
deployment hashes to one slot and a Redis Cluster runs each script on one master):

- ``P:job:<id>``: a hash of the job's columns (those of :mod:`jobq.store.rows`, and
  ``ready_at``) as text; a field that is None is absent.
- ``P:ready:<queue>``: pending jobs, scored so that ZRANGE gives priority, then FIFO.
- ``P:due:<queue>``: scheduled and retrying jobs by due time; ``P:leased``: processing
  jobs by lease deadline; ``P:finished``: finished jobs by finish time (retention).
- ``P:order``: every job by seq (listing); ``P:seq``: the last seq given.
- ``P:queues``, ``P:paused``: queue names; ``P:counts``: jobs per "queue<TAB>status";
  ``P:waiting``: waiting jobs in all queues (for the enqueue limit).
- ``P:logs:<id>``: a job's log lines, each ``[at, message]`` as JSON.
- ``P:unique:<key>``: the ids of the jobs stored with this unique key (one at most holds it).
- ``P:leader``: which node runs once-only maintenance (``SET NX PX``, renewed by it).
- ``P:schedules``: each schedule's definition (JSON); ``P:fired``: the latest tick each fired.
- ``P:nodes``: each node's card, as ``seen_at<TAB>card JSON``; ``P:node_lapses``: the
  nodes by when their card lapses.

Every script reads the time from the server (``TIME``) unless a time is passed (an
injected clock), and publishes what it changed on ``P:events`` as one message:
``{"node": ..., "jobs": [[id, before, after], ...], "ready": [queue, ...]}``.
"""

from __future__ import annotations

from jobq.store.rows import COLUMNS

# Shared by every script: the keys' layout, indexing by status, counting and publishing.
PRELUDE = r"""
local P = ARGV[1]
local NODE = ARGV[2]
local changes, ready = {}, {}
local deltas, waiting_delta = {}, 0  -- count changes, written once when the script ends (publish)

local function now()
  if ARGV[3] ~= '' then return tonumber(ARGV[3]) end
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end

local function num(x) return string.format('%.17g', x) end

local FIELDS = {FIELDS}  -- a job's row: its fields in this order (jobq.store.redis.ROW)
local function row(key) return redis.call('HMGET', key, unpack(FIELDS)) end

local WAITING = {pending = true, scheduled = true, retrying = true}
local DEFERRED = {scheduled = true, retrying = true}

local function ready_score(priority, seq)
  return (1000 - tonumber(priority)) * 1099511627776 + tonumber(seq)
end

local function unindex(id, queue, status)
  if status == 'pending' then redis.call('ZREM', P .. ':ready:' .. queue, id)
  elseif DEFERRED[status] then redis.call('ZREM', P .. ':due:' .. queue, id)
  elseif status == 'processing' then redis.call('ZREM', P .. ':leased', id)
  else redis.call('ZREM', P .. ':finished', id) end
end

local function index(id, key)
  local f = redis.call('HMGET', key, 'queue', 'status', 'priority', 'seq', 'run_at', 'lease_expires_at', 'finished_at')
  local queue, status = f[1], f[2]
  if status == 'pending' then redis.call('ZADD', P .. ':ready:' .. queue, ready_score(f[3], f[4]), id)
  elseif DEFERRED[status] then redis.call('ZADD', P .. ':due:' .. queue, f[5] or 0, id)
  elseif status == 'processing' then redis.call('ZADD', P .. ':leased', f[6] or 0, id)
  else redis.call('ZADD', P .. ':finished', f[7] or 0, id) end
end

local function count(queue, status, delta)
  local field = queue .. '\t' .. status
  deltas[field] = (deltas[field] or 0) + delta
  if WAITING[status] then waiting_delta = waiting_delta + delta end
end

local function moved(id, queue, before, after)
  if before == after then return end
  count(queue, before, -1)
  count(queue, after, 1)
  changes[#changes + 1] = {id, before, after}
  if after == 'pending' then ready[queue] = true end
end

local function publish()  -- writes the counts; then the message, node first (a node knows its own by that)
  for field, delta in pairs(deltas) do
    if delta ~= 0 then redis.call('HINCRBY', P .. ':counts', field, delta) end
  end
  if waiting_delta ~= 0 then redis.call('INCRBY', P .. ':waiting', waiting_delta) end
  deltas, waiting_delta = {}, 0
  local queues = {}
  for queue in pairs(ready) do queues[#queues + 1] = queue end
  if #changes == 0 and #queues == 0 then return end
  local parts = {'{"node":' .. cjson.encode(NODE)}
  if #changes > 0 then parts[#parts + 1] = '"jobs":' .. cjson.encode(changes) end
  if #queues > 0 then parts[#parts + 1] = '"ready":' .. cjson.encode(queues) end
  redis.call('PUBLISH', P .. ':events', table.concat(parts, ',') .. '}')
end

local function forget(id, key, queue, status)
  local unique_key = redis.call('HGET', key, 'unique_key')
  if unique_key then redis.call('SREM', P .. ':unique:' .. unique_key, id) end
  unindex(id, queue, status)
  count(queue, status, -1)
  redis.call('ZREM', P .. ':order', id)
  redis.call('DEL', key, P .. ':logs:' .. id)
end

local function promote(queue, at, limit, promoted)
  local due = redis.call('ZRANGEBYSCORE', P .. ':due:' .. queue, '-inf', at, 'LIMIT', 0, limit)
  for _, id in ipairs(due) do
    local key = P .. ':job:' .. id
    local f = redis.call('HMGET', key, 'status', 'run_at')
    redis.call('ZREM', P .. ':due:' .. queue, id)
    redis.call('HSET', key, 'status', 'pending', 'ready_at', f[2] or num(at))
    index(id, key)
    moved(id, queue, f[1], 'pending')
    promoted[#promoted + 1] = {f[1], row(key)}
  end
end
"""

# ARGV: P, node, now, max_waiting, then one JSON job each: {"id", "queue", "status", "fields": {name: text}}.
# Answers per job: its seq (stored), 0 (the id exists), the id of the job that holds its unique key (text),
# -1 (the queue is full).
ADD = r"""
local max_waiting = tonumber(ARGV[4])
local waiting = tonumber(redis.call('GET', P .. ':waiting') or '0')
local HOLDING = {  -- jobq.job.UNIQUE_SCOPES
  waiting = WAITING,
  active = {pending = true, scheduled = true, retrying = true, processing = true},
  any = {pending = true, scheduled = true, retrying = true, processing = true, completed = true, failed = true,
         dead = true},
}
local at = nil  -- the time, read once, and only for a job with a unique key
local function holder_of(job)  -- the job that holds this one's unique key, if any
  local unique_key = job.fields.unique_key
  if not unique_key then return nil end
  at = at or now()
  for _, held in ipairs(redis.call('SMEMBERS', P .. ':unique:' .. unique_key)) do
    local f = redis.call('HMGET', P .. ':job:' .. held, 'status', 'unique_scope', 'unique_until')
    local scope = HOLDING[f[2] or 'active']
    if f[1] and scope and scope[f[1]] and not (f[3] and at >= tonumber(f[3])) then return held end
  end
  return nil
end
local answers = {}
for i = 5, #ARGV do
  local job = cjson.decode(ARGV[i])
  local key = P .. ':job:' .. job.id
  local exists = redis.call('EXISTS', key) == 1
  local holder = not exists and holder_of(job)
  if exists then
    answers[#answers + 1] = 0
  elseif holder then
    answers[#answers + 1] = holder
  elseif waiting >= max_waiting then
    answers[#answers + 1] = -1
  else
    local seq = redis.call('INCR', P .. ':seq')
    local fields = {'seq', seq}
    for name, value in pairs(job.fields) do
      fields[#fields + 1] = name
      fields[#fields + 1] = value
    end
    redis.call('HSET', key, unpack(fields))
    if job.fields.unique_key then redis.call('SADD', P .. ':unique:' .. job.fields.unique_key, job.id) end
    redis.call('ZADD', P .. ':order', seq, job.id)
    redis.call('SADD', P .. ':queues', job.queue)
    local status = job.status
    if status == 'pending' then
      redis.call('ZADD', P .. ':ready:' .. job.queue, ready_score(job.fields.priority, seq), job.id)
      ready[job.queue] = true
    else
      index(job.id, key)
    end
    count(job.queue, status, 1)
    if WAITING[status] then waiting = waiting + 1 end
    answers[#answers + 1] = seq
  end
end
publish()
return answers
"""

# ARGV: P, node, now, max_jobs, lease_seconds, worker, queues (JSON list, or ''), types (JSON list, or ''),
# lease ids (JSON list, one per job it may claim). One job from each queue in turn (round-robin: the queues
# in the order named, or by their next jobs), each queue's by priority, then FIFO; paused queues are skipped.
# (Due jobs are made pending by PROMOTE.)
# Answers: the claimed jobs, each as a row (see ROW).
CLAIM = r"""
local at = now()
local max_jobs, lease_seconds, worker = tonumber(ARGV[4]), tonumber(ARGV[5]), ARGV[6]
local queues = ARGV[7] ~= '' and cjson.decode(ARGV[7]) or redis.call('SMEMBERS', P .. ':queues')
local types = nil
if ARGV[8] ~= '' then
  types = {}
  for _, name in ipairs(cjson.decode(ARGV[8])) do types[name] = true end
end
local lease_ids = cjson.decode(ARGV[9])
local open = {}
for _, queue in ipairs(queues) do
  if redis.call('SISMEMBER', P .. ':paused', queue) == 0 then open[#open + 1] = queue end
end
local SCAN = 200  -- ready jobs looked at per queue and turn for one of the wanted types
local ordered = ARGV[7] ~= ''  -- queues named: each turn takes them in that order; else by their next job
local taken = {}
while #taken < max_jobs and #open > 0 do
  local candidates = {}
  for place, queue in ipairs(open) do
    local ids = redis.call('ZRANGE', P .. ':ready:' .. queue, 0, types and (SCAN - 1) or 0, 'WITHSCORES')
    for i = 1, #ids, 2 do
      if not types or types[redis.call('HGET', P .. ':job:' .. ids[i], 'type')] then
        candidates[#candidates + 1] = {queue, ids[i], ordered and place or tonumber(ids[i + 1])}
        break
      end
    end
  end
  table.sort(candidates, function(a, b) return a[3] < b[3] end)
  local still = {}
  for _, candidate in ipairs(candidates) do
    if #taken >= max_jobs then break end
    local queue, id = candidate[1], candidate[2]
    local key = P .. ':job:' .. id
    redis.call('ZREM', P .. ':ready:' .. queue, id)
    local lease = lease_ids[#taken + 1]
    redis.call('HINCRBY', key, 'attempts', 1)
    if worker ~= '' then
      redis.call('HSET', key, 'status', 'processing', 'started_at', num(at), 'lease_id', lease,
        'lease_expires_at', num(at + lease_seconds), 'worker', worker)
      redis.call('HDEL', key, 'run_at', 'progress', 'progress_note')
    else
      redis.call('HSET', key, 'status', 'processing', 'started_at', num(at), 'lease_id', lease,
        'lease_expires_at', num(at + lease_seconds))
      redis.call('HDEL', key, 'run_at', 'progress', 'progress_note', 'worker')
    end
    redis.call('ZADD', P .. ':leased', at + lease_seconds, id)
    moved(id, queue, 'pending', 'processing')
    taken[#taken + 1] = row(key)
    still[#still + 1] = queue
  end
  open = still
end
publish()
return taken
"""

# ARGV: P, node, now, then one JSON change each: {"id", "was", "lease", "set": {name: text}, "del": [name]}.
# Each is applied only if the job is still in status "was" under lease "lease" (JSON null: none).
# Answers: the ids written.
WRITE = r"""
local written = {}
for i = 4, #ARGV do
  local change = cjson.decode(ARGV[i])
  local key = P .. ':job:' .. change.id
  local f = redis.call('HMGET', key, 'status', 'lease_id', 'queue')
  local lease = change.lease
  if lease == cjson.null then lease = false end
  if f[1] == change.was and f[2] == lease then
    unindex(change.id, f[3], f[1])
    local fields = {}
    for name, value in pairs(change.set) do
      fields[#fields + 1] = name
      fields[#fields + 1] = value
    end
    if #fields > 0 then redis.call('HSET', key, unpack(fields)) end
    if #change.del > 0 then redis.call('HDEL', key, unpack(change.del)) end
    index(change.id, key)
    moved(change.id, f[3], f[1], redis.call('HGET', key, 'status'))
    written[#written + 1] = change.id
  end
end
publish()
return written
"""

# ARGV: P, node, now, then job id, lease id, result (JSON text, or '' for none) and '1' (answer the job's
# fields) or '0' (answer its finish time only: the caller holds the job as leased) for each job. Completes
# each job its lease still holds, as Job.complete does (the ended attempt joins the history, written as JSON
# text here so that its times keep every digit). Answers: per completed job, its id and the fields or time.
COMPLETE = r"""
local at = now()
local done = {}
for i = 4, #ARGV, 4 do
  local id, lease, result, full = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3] == '1'
  local key = P .. ':job:' .. id
  local f = redis.call('HMGET', key, 'status', 'lease_id', 'queue', 'history', 'started_at', 'created_at', 'worker')
  if f[1] == 'processing' and f[2] == lease then
    local history = f[4] or '[]'
    local ended = select(2, string.gsub(history, '"number":', ''))  -- (inside a JSON string it is \"number\":)
    local attempt = '{"number":' .. (ended + 1) .. ',"started_at":' .. (f[5] or f[6])
      .. ',"worker":' .. (f[7] and cjson.encode(f[7]) or 'null') .. ',"finished_at":' .. num(at)
      .. ',"outcome":"completed","error":null,"traceback":null}'
    if history == '[]' then
      history = '[' .. attempt .. ']'
    else
      history = string.sub(history, 1, -2) .. ',' .. attempt .. ']'
    end
    redis.call('ZREM', P .. ':leased', id)
    redis.call('HSET', key, 'status', 'completed', 'finished_at', num(at), 'history', history)
    redis.call('HDEL', key, 'error', 'lease_expires_at', 'worker')
    if result ~= '' then redis.call('HSET', key, 'result', result) else redis.call('HDEL', key, 'result') end
    redis.call('ZADD', P .. ':finished', at, id)
    moved(id, f[3], 'processing', 'completed')
    done[#done + 1] = {id, full and row(key) or num(at)}
  end
end
publish()
return done
"""

# ARGV: P, node, now, lease_seconds, then job id and lease id pairs. Answers: the ids extended.
HEARTBEAT = r"""
local deadline = now() + tonumber(ARGV[4])
local extended = {}
for i = 5, #ARGV, 2 do
  local id, lease = ARGV[i], ARGV[i + 1]
  local key = P .. ':job:' .. id
  local f = redis.call('HMGET', key, 'status', 'lease_id')
  if f[1] == 'processing' and f[2] == lease then
    redis.call('HSET', key, 'lease_expires_at', num(deadline))
    redis.call('ZADD', P .. ':leased', deadline, id)
    extended[#extended + 1] = id
  end
end
return extended
"""

# ARGV: P, node, now, job id, lease id, progress, note (or ''). Answers 1, or 0 if that lease does not hold it.
PROGRESS = r"""
local key = P .. ':job:' .. ARGV[4]
local f = redis.call('HMGET', key, 'status', 'lease_id')
if f[1] ~= 'processing' or f[2] ~= ARGV[5] then return 0 end
redis.call('HSET', key, 'progress', ARGV[6])
if ARGV[7] ~= '' then
  redis.call('HSET', key, 'progress_note', ARGV[7])
else
  redis.call('HDEL', key, 'progress_note')
end
return 1
"""

# ARGV: P, node, now, job id, lease id (or ''), message, max lines.
# Answers the line's time, or 'missing', 'stale', 'full'.
LOG = r"""
local id = ARGV[4]
local key = P .. ':job:' .. id
local f = redis.call('HMGET', key, 'status', 'lease_id')
if not f[1] then return 'missing' end
if ARGV[5] ~= '' and (f[1] ~= 'processing' or f[2] ~= ARGV[5]) then return 'stale' end
local logs = P .. ':logs:' .. id
if redis.call('LLEN', logs) >= tonumber(ARGV[7]) then return 'full' end
local at = num(now())
redis.call('RPUSH', logs, cjson.encode({at, ARGV[6]}))
local line = cjson.encode({id, at, ARGV[6]})
redis.call('PUBLISH', P .. ':events', '{"node":' .. cjson.encode(NODE) .. ',"log":' .. line .. '}')
return at
"""

# ARGV: P, node, now, job id. Answers the job's fields before it was deleted, 'processing' (refused), or nil.
DELETE = r"""
local id = ARGV[4]
local key = P .. ':job:' .. id
if redis.call('EXISTS', key) == 0 then return nil end
local job = row(key)
local f = redis.call('HMGET', key, 'queue', 'status')
if f[2] == 'processing' then return 'processing' end
forget(id, key, f[1], f[2])
publish()
return job
"""

# ARGV: P, node, now, queue. Deletes the queue's waiting jobs; answers how many.
CLEAR = r"""
local queue = ARGV[4]
local deleted = 0
for _, name in ipairs({':ready:', ':due:'}) do
  for _, id in ipairs(redis.call('ZRANGE', P .. name .. queue, 0, -1)) do
    local key = P .. ':job:' .. id
    forget(id, key, queue, redis.call('HGET', key, 'status'))
    deleted = deleted + 1
  end
end
publish()
return deleted
"""

# ARGV: P, node, now, limit. Makes due jobs of every queue pending; answers them (each its status before and
# its fields) and when the next job falls due (or false).
PROMOTE = r"""
local at = now()
local promoted = {}
for _, queue in ipairs(redis.call('SMEMBERS', P .. ':queues')) do
  promote(queue, at, tonumber(ARGV[4]), promoted)
end
publish()
local next_due = nil
for _, queue in ipairs(redis.call('SMEMBERS', P .. ':queues')) do
  local first = redis.call('ZRANGE', P .. ':due:' .. queue, 0, 0, 'WITHSCORES')
  if first[2] and (not next_due or tonumber(first[2]) < next_due) then next_due = tonumber(first[2]) end
end
return {promoted, next_due and num(next_due) or false}
"""

# ARGV: P, node, now, limit. Answers the time now and the jobs whose lease ran out (rows (see ROW)).
EXPIRING = r"""
local at = now()
local jobs = {}
for _, id in ipairs(redis.call('ZRANGEBYSCORE', P .. ':leased', '-inf', at, 'LIMIT', 0, tonumber(ARGV[4]))) do
  jobs[#jobs + 1] = row(P .. ':job:' .. id)
end
return {num(at), jobs}
"""

# ARGV: P, node, now, max_age, max_count, limit. Deletes finished jobs past retention; answers how many.
PURGE = r"""
local at = now()
local limit = tonumber(ARGV[6])
local cutoff = '(' .. num(at - tonumber(ARGV[4]))
local doomed = redis.call('ZRANGEBYSCORE', P .. ':finished', '-inf', cutoff, 'LIMIT', 0, limit)
local excess = redis.call('ZCARD', P .. ':finished') - #doomed - tonumber(ARGV[5])
if excess > 0 then
  for _, id in ipairs(redis.call('ZRANGE', P .. ':finished', #doomed, #doomed + math.min(excess, limit) - 1)) do
    doomed[#doomed + 1] = id
  end
end
for _, id in ipairs(doomed) do
  local key = P .. ':job:' .. id
  local f = redis.call('HMGET', key, 'queue', 'status')
  forget(id, key, f[1], f[2])
end
publish()
return #doomed
"""

# ARGV: P, node, now, before (a seq: only older jobs), max scanned, limit, status, queue, type, owner ('': any).
# Answers the matching jobs (rows (see ROW), newest first, at most limit + 1) and the seq of the first job
# past the scanned stretch (or false when the scan reached the oldest job).
LIST = r"""
local before, scan, limit = ARGV[4], tonumber(ARGV[5]), tonumber(ARGV[6])
local want = {status = ARGV[7], queue = ARGV[8], type = ARGV[9], owner = ARGV[10]}
local ids = redis.call('ZREVRANGEBYSCORE', P .. ':order', '(' .. before, '-inf', 'WITHSCORES', 'LIMIT', 0, scan + 1)
local jobs, bound = {}, false
for i = 1, #ids, 2 do
  if (i + 1) / 2 > scan then bound = ids[i + 1] break end
  local key = P .. ':job:' .. ids[i]
  local f = redis.call('HMGET', key, 'status', 'queue', 'type', 'owner')
  if (want.status == '' or f[1] == want.status) and (want.queue == '' or f[2] == want.queue)
      and (want.type == '' or f[3] == want.type) and (want.owner == '' or f[4] == want.owner) then
    jobs[#jobs + 1] = row(key)
    if #jobs > limit then break end
  end
end
return {jobs, bound}
"""

# ARGV: P, node, now. Answers the counts hash (flat), the paused queues, and per queue with a ready job:
# the queue and since when its next job could run.
STATS = r"""
local heads = {}
for _, queue in ipairs(redis.call('SMEMBERS', P .. ':queues')) do
  local first = redis.call('ZRANGE', P .. ':ready:' .. queue, 0, 0)
  if first[1] then
    local f = redis.call('HMGET', P .. ':job:' .. first[1], 'ready_at', 'run_at', 'created_at')
    heads[#heads + 1] = queue
    heads[#heads + 1] = f[1] or f[2] or f[3]
  end
end
return {redis.call('HGETALL', P .. ':counts'), redis.call('SMEMBERS', P .. ':paused'), heads}
"""

# ARGV: P, node, now, queue, '1' to pause or '0' to resume.
SET_PAUSED = r"""
local queue = ARGV[4]
redis.call('SADD', P .. ':queues', queue)
if ARGV[5] == '1' then
  redis.call('SADD', P .. ':paused', queue)
else
  redis.call('SREM', P .. ':paused', queue)
  ready[queue] = true
  publish()
end
return 1
"""

# ARGV: P, node, now, ttl in ms. Takes or keeps the maintenance lock; answers 1 if this node holds it.
LEAD = r"""
local key = P .. ':leader'
if redis.call('SET', key, NODE, 'NX', 'PX', ARGV[4]) then return 1 end
if redis.call('GET', key) == NODE then
  redis.call('PEXPIRE', key, ARGV[4])
  return 1
end
return 0
"""

# ARGV: P, node, now, card JSON, ttl in seconds. Keeps this node's card; drops the cards that lapsed.
ANNOUNCE = r"""
local at = now()
for _, gone in ipairs(redis.call('ZRANGEBYSCORE', P .. ':node_lapses', '-inf', at)) do
  redis.call('HDEL', P .. ':nodes', gone)
end
redis.call('ZREMRANGEBYSCORE', P .. ':node_lapses', '-inf', at)
redis.call('HSET', P .. ':nodes', NODE, num(at) .. '\t' .. ARGV[4])
redis.call('ZADD', P .. ':node_lapses', at + tonumber(ARGV[5]), NODE)
return 1
"""

# ARGV: P, node, now, schedule name, definition JSON, '1' for a new one only. Keeps the definition; the
# fired tick stays. Answers 1 if kept (0: new only, and one of that name exists).
PUT_SCHEDULE = r"""
if ARGV[6] == '1' then return redis.call('HSETNX', P .. ':schedules', ARGV[4], ARGV[5]) end
redis.call('HSET', P .. ':schedules', ARGV[4], ARGV[5])
return 1
"""

# ARGV: P, node, now, schedule name. Answers 1 if there was one.
DELETE_SCHEDULE = r"""
redis.call('HDEL', P .. ':fired', ARGV[4])
return redis.call('HDEL', P .. ':schedules', ARGV[4])
"""

# ARGV: P, node, now. Answers {definitions, fired ticks}, each flat name, value pairs.
SCHEDULES = r"""
return {redis.call('HGETALL', P .. ':schedules'), redis.call('HGETALL', P .. ':fired')}
"""

# ARGV: P, node, now, schedule name, tick. Moves the schedule's latest fired tick forward (only forward).
FIRED = r"""
if redis.call('HEXISTS', P .. ':schedules', ARGV[4]) == 0 then return 0 end
local known = redis.call('HGET', P .. ':fired', ARGV[4])
if known and tonumber(known) >= tonumber(ARGV[5]) then return 0 end
redis.call('HSET', P .. ':fired', ARGV[4], ARGV[5])
return 1
"""

# ARGV: P, node, now. Takes this node's card away.
WITHDRAW = r"""
redis.call('HDEL', P .. ':nodes', NODE)
redis.call('ZREM', P .. ':node_lapses', NODE)
return 1
"""

# ARGV: P, node, now. Answers the cards that have not lapsed, each ``seen_at<TAB>card JSON``.
NODES = r"""
local live = redis.call('ZRANGEBYSCORE', P .. ':node_lapses', '(' .. num(now()), '+inf')
if #live == 0 then return {} end
return redis.call('HMGET', P .. ':nodes', unpack(live))
"""

ROW = (*COLUMNS, "ready_at")  # a job's fields in the order the scripts answer them (HMGET)

# ARGV: P, node, now. Gives the maintenance lock up if this node holds it (another takes it at once).
RESIGN = r"""
if redis.call('GET', P .. ':leader') == NODE then redis.call('DEL', P .. ':leader') end
return 1
"""

SCRIPTS = {
    name: PRELUDE.replace("{FIELDS}", "{" + ", ".join(f"'{name}'" for name in ROW) + "}") + body
    for name, body in {
        "add": ADD,
        "claim": CLAIM,
        "write": WRITE,
        "complete": COMPLETE,
        "heartbeat": HEARTBEAT,
        "progress": PROGRESS,
        "log": LOG,
        "delete": DELETE,
        "clear": CLEAR,
        "promote": PROMOTE,
        "expiring": EXPIRING,
        "purge": PURGE,
        "list": LIST,
        "stats": STATS,
        "set_paused": SET_PAUSED,
        "lead": LEAD,
        "resign": RESIGN,
        "announce": ANNOUNCE,
        "withdraw": WITHDRAW,
        "nodes": NODES,
        "fired": FIRED,
        "put_schedule": PUT_SCHEDULE,
        "delete_schedule": DELETE_SCHEDULE,
        "schedules": SCHEDULES,
    }.items()
}
