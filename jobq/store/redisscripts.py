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
- ``P:blocked:<queue>``: waiting jobs (their parents have not all finished), by seq.
- ``P:unique:<key>``: the ids of the jobs stored with this unique key (one at most holds it).
- ``P:leader``: which node runs once-only maintenance (``SET NX PX``, renewed by it).
- ``P:schedules``: each schedule's definition (JSON); ``P:fired``: the latest tick each fired.
- ``P:nodes``: each node's card, as ``seen_at<TAB>card JSON``; ``P:node_lapses``: the
  nodes by when their card lapses.

Flow control (:mod:`jobq.flow`):

- ``P:flows``: each queue's flow (JSON). ``P:turns``: the queues whose ready jobs take turns
  by key (a flow was set on it, or it held a keyed job); the plain claim never takes theirs.
- ``P:ready:<queue><TAB><key>``: a turn-taking queue's pending jobs of one concurrency key
  (``""``: the unkeyed ones), scored as in ``P:ready:<queue>``, which still holds them all.
- ``P:keys:<queue>``: its keys with pending jobs that may start, by turn (the lowest goes
  next; a key served goes last). ``P:held:<queue>``: the keys held back, parked so that no
  claim looks at them: scored -1 (at its concurrency limit: back when a job of it stops or a
  new first job comes) or by when its rate lets it start (back from then).
- ``P:running:<queue>``: a turn-taking queue's keyed jobs running, by key (kept by every status change).
- ``P:tats``: each queue's rate tat (GCRA); ``P:tats:<queue>``: its keys' tats (past ones
  are dropped when flows are read: a past tat is the same as none).

Workflows (:mod:`jobq.workflow`):

- ``P:edges:<parent>``: the children still waiting that have yet to count this parent off. Whatever
  script ends the parent (complete, a fenced write: fail, cancel, expiry, give-up; delete or clear of an
  unfinished job: ``deleted``) takes the set whole and resolves each child in the same script
  (``resolve``, from ``publish``), cascading down by a worklist; taking the set is what makes each
  count-off happen once, whichever node ends the parent.
- ``P:children:<parent>``: every job that lists the parent in ``depends_on``, by seq (listing by parent);
  ``P:workflow:<name>``: a workflow's jobs, by seq. A job leaves both when it is deleted or purged.
- A job's hash keeps ``depends_on`` (JSON), ``on_parent_failure`` (absent: cancel), ``parents_left``
  (kept by the scripts alone) and ``workflow``; a job without parents has none of them.

Every script reads the time from the server (``TIME``) unless a time is passed (an
injected clock), and publishes what it changed on ``P:events`` as one message:
``{"node": ..., "jobs": [[id, before, after], ...], "ready": [queue, ...]}``; a run that ends
in a turn-taking queue with pending jobs lists it as ready (a held job may start now).
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

local WAITING = {waiting = true, pending = true, scheduled = true, retrying = true}
local DEFERRED = {scheduled = true, retrying = true}
local TERMINAL = {completed = true, failed = true, dead = true, cancelled = true}

local function ready_score(priority, seq)
  return (1000 - tonumber(priority)) * 1099511627776 + tonumber(seq)
end

local FULL = -1  -- the P:held score of a key at its concurrency limit
local turning = {}  -- queue -> whether its ready jobs take turns by key (P:turns), read once a script

local function takes_turns(queue)
  local known = turning[queue]
  if known == nil then
    known = redis.call('SISMEMBER', P .. ':turns', queue) == 1
    turning[queue] = known
  end
  return known
end

local function to_back(queue, key)  -- the key's next turn comes after every other key's
  local keys = P .. ':keys:' .. queue
  local last = redis.call('ZRANGE', keys, -1, -1, 'WITHSCORES')
  redis.call('ZADD', keys, (tonumber(last[2]) or 0) + 1, key)
end

local function turn_add(queue, key, id, score)  -- a pending job of a turn-taking queue
  local set = P .. ':ready:' .. queue .. '\t' .. key
  redis.call('ZADD', set, score, id)
  if redis.call('ZSCORE', P .. ':keys:' .. queue, key) then return end
  local held = redis.call('ZSCORE', P .. ':held:' .. queue, key)
  if held then  -- a key at its limit looks again if the job comes first: it may bring a limit of its own
    if tonumber(held) ~= FULL or redis.call('ZRANGE', set, 0, 0)[1] ~= id then return end
    redis.call('ZREM', P .. ':held:' .. queue, key)
  end
  to_back(queue, key)
end

local function turn_remove(queue, key, id)
  local set = P .. ':ready:' .. queue .. '\t' .. key
  redis.call('ZREM', set, id)
  if redis.call('EXISTS', set) == 0 then
    redis.call('ZREM', P .. ':keys:' .. queue, key)
    redis.call('ZREM', P .. ':held:' .. queue, key)
  end
end

local function start_turns(queue)  -- from now on the queue's ready jobs take turns by key
  redis.call('SADD', P .. ':turns', queue)
  turning[queue] = true
  local ids = redis.call('ZRANGE', P .. ':ready:' .. queue, 0, -1, 'WITHSCORES')
  for i = 1, #ids, 2 do
    turn_add(queue, redis.call('HGET', P .. ':job:' .. ids[i], 'concurrency_key') or '', ids[i], ids[i + 1])
  end
end

local function unindex(id, queue, status)
  if status == 'pending' then
    redis.call('ZREM', P .. ':ready:' .. queue, id)
    if takes_turns(queue) then
      turn_remove(queue, redis.call('HGET', P .. ':job:' .. id, 'concurrency_key') or '', id)
    end
  elseif DEFERRED[status] then redis.call('ZREM', P .. ':due:' .. queue, id)
  elseif status == 'processing' then redis.call('ZREM', P .. ':leased', id)
  elseif status == 'waiting' then redis.call('ZREM', P .. ':blocked:' .. queue, id)
  else redis.call('ZREM', P .. ':finished', id) end
end

local function index(id, key)
  local f = redis.call('HMGET', key, 'queue', 'status', 'priority', 'seq', 'run_at', 'lease_expires_at', 'finished_at',
    'concurrency_key')
  local queue, status = f[1], f[2]
  if status == 'pending' then
    local score = ready_score(f[3], f[4])
    redis.call('ZADD', P .. ':ready:' .. queue, score, id)
    if takes_turns(queue) then turn_add(queue, f[8] or '', id, score) end
  elseif DEFERRED[status] then redis.call('ZADD', P .. ':due:' .. queue, f[5] or 0, id)
  elseif status == 'processing' then redis.call('ZADD', P .. ':leased', f[6] or 0, id)
  elseif status == 'waiting' then redis.call('ZADD', P .. ':blocked:' .. queue, f[4], id)
  else redis.call('ZADD', P .. ':finished', f[7] or 0, id) end
end

local function count(queue, status, delta)
  local field = queue .. '\t' .. status
  deltas[field] = (deltas[field] or 0) + delta
  if WAITING[status] then waiting_delta = waiting_delta + delta end
end

local function ran(id, queue, started)  -- a job started or stopped running
  if not takes_turns(queue) then return end  -- (a keyed job's queue takes turns from its add on)
  local key = redis.call('HGET', P .. ':job:' .. id, 'concurrency_key')
  if key and key ~= '' then
    local running = P .. ':running:' .. queue
    if redis.call('HINCRBY', running, key, started and 1 or -1) <= 0 then redis.call('HDEL', running, key) end
    if not started and tonumber(redis.call('ZSCORE', P .. ':held:' .. queue, key)) == FULL then
      redis.call('ZREM', P .. ':held:' .. queue, key)
      to_back(queue, key)
    end
  end
  if not started and redis.call('EXISTS', P .. ':ready:' .. queue) == 1 then
    ready[queue] = true  -- a held job may start now
  end
end

local ended = {}  -- jobs that ended here, {id, outcome}: their waiting children are resolved before publish

local function moved(id, queue, before, after)
  if before == after then return end
  count(queue, before, -1)
  count(queue, after, 1)
  changes[#changes + 1] = {id, before, after}
  if after == 'pending' then ready[queue] = true end
  if before == 'processing' or after == 'processing' then ran(id, queue, after == 'processing') end
  if TERMINAL[after] and not TERMINAL[before] then ended[#ended + 1] = {id, after} end
end

-- Workflows (jobq.workflow). P:edges:<parent> holds the children still to count the parent off; the script
-- that ends the parent takes the set whole (DEL), so each parent counts off each child exactly once.
local stamp = nil
local function moment()  -- the time, read once a script, for the children a parent's end moves
  stamp = stamp or now()
  return stamp
end

local cascaded = {}  -- the children moved here, {before, row}: answered, so this node can report them

local function count_off(id, parent, outcome)  -- jobq.workflow.count_off, for a child that may still wait
  local key = P .. ':job:' .. id
  local f = redis.call('HMGET', key, 'status', 'on_parent_failure', 'queue')
  if f[1] ~= 'waiting' then return end  -- cancelled meanwhile, or deleted
  local after = 'cancelled'
  if outcome == 'completed' or f[2] == 'run' then
    if redis.call('HINCRBY', key, 'parents_left', -1) > 0 then return end
    after = 'pending'
    redis.call('HSET', key, 'status', 'pending', 'parents_left', 0, 'ready_at', num(moment()))
  else
    redis.call('HSET', key, 'status', 'cancelled', 'finished_at', num(moment()),
      'error', 'parent ' .. parent .. ' ' .. outcome)
  end
  redis.call('ZREM', P .. ':blocked:' .. f[3], id)
  index(id, key)
  moved(id, f[3], 'waiting', after)  -- a cancelled child has ended too: its own children follow (the worklist)
  cascaded[#cascaded + 1] = {'waiting', row(key)}
end

local function resolve()  -- the children of every job that ended here, cascading down: a worklist, not recursion
  local i = 1
  while ended[i] do
    local parent, outcome = ended[i][1], ended[i][2]
    local edges = P .. ':edges:' .. parent
    local children = redis.call('SMEMBERS', edges)  -- the one look a job without children costs
    if #children > 0 then
      redis.call('DEL', edges)
      for _, child in ipairs(children) do count_off(child, parent, outcome) end
    end
    i = i + 1
  end
  ended = {}
end

-- Resolves the children of the jobs that ended, writes the counts; then the message, node first (a node knows
-- its own by that).
local function publish()
  resolve()
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

local function forget(id, key, queue, status)  -- delete a job; one that had not finished ends 'deleted'
  local f = redis.call('HMGET', key, 'unique_key', 'depends_on', 'workflow')
  if f[1] then redis.call('SREM', P .. ':unique:' .. f[1], id) end
  if f[2] then
    for _, parent in ipairs(cjson.decode(f[2])) do
      redis.call('SREM', P .. ':edges:' .. parent, id)
      redis.call('ZREM', P .. ':children:' .. parent, id)
    end
  end
  if f[3] then redis.call('ZREM', P .. ':workflow:' .. f[3], id) end
  unindex(id, queue, status)
  count(queue, status, -1)
  redis.call('ZREM', P .. ':order', id)
  redis.call('DEL', key, P .. ':logs:' .. id)
  if not TERMINAL[status] then ended[#ended + 1] = {id, 'deleted'} end
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

# ARGV: P, node, now, max_waiting, together ('1': every new job of the call or none), then one JSON job each:
# {"id", "queue", "status", "fields": {name: text}}. Answers per job: its seq (stored), 0 (the id exists), the id
# of the job that holds its unique key (text), -1 (the queue is full; together: every new job); a stored job with
# parents (depends_on) is answered {seq, status, parents_left, error, finished_at, ready_at} as stored.
# A job with parents is stored waiting; the parents that finished already (or are missing: deleted) count at
# once, by the rules of count_off, once every job of the call is stored (a parent in the call is a new job).
ADD = r"""
local max_waiting, together = tonumber(ARGV[4]), ARGV[5] == '1'
local waiting = tonumber(redis.call('GET', P .. ':waiting') or '0')
local HOLDING = {  -- jobq.job.UNIQUE_SCOPES
  waiting = WAITING,
  active = {waiting = true, pending = true, scheduled = true, retrying = true, processing = true},
  any = {waiting = true, pending = true, scheduled = true, retrying = true, processing = true, completed = true,
         failed = true, dead = true},
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
local jobs = {}
for i = 6, #ARGV do jobs[#jobs + 1] = cjson.decode(ARGV[i]) end
if together then  -- all or nothing: if the new jobs would not all fit, none is stored
  local new, keys = 0, {}
  for _, job in ipairs(jobs) do
    local unique_key = job.fields.unique_key
    if redis.call('EXISTS', P .. ':job:' .. job.id) == 0
        and not (unique_key and (keys[unique_key] or holder_of(job))) then
      new = new + 1
      if unique_key then keys[unique_key] = true end
    end
  end
  if new > 0 and waiting + new > max_waiting then
    local answers = {}
    for i, job in ipairs(jobs) do answers[i] = redis.call('EXISTS', P .. ':job:' .. job.id) == 1 and 0 or -1 end
    return answers
  end
end
local answers, blocked = {}, {}  -- blocked: the stored jobs with parents, {answer's place, job, key, seq, parents}
for _, job in ipairs(jobs) do
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
    local status = job.status
    local parents = job.fields.depends_on and cjson.decode(job.fields.depends_on)
    if parents then
      status = 'waiting'  -- for now: settled below, when every job of the call is stored
      job.fields.status = status
    end
    local fields = {'seq', seq}
    for name, value in pairs(job.fields) do
      fields[#fields + 1] = name
      fields[#fields + 1] = value
    end
    redis.call('HSET', key, unpack(fields))
    if job.fields.unique_key then redis.call('SADD', P .. ':unique:' .. job.fields.unique_key, job.id) end
    if job.fields.workflow then redis.call('ZADD', P .. ':workflow:' .. job.fields.workflow, seq, job.id) end
    redis.call('ZADD', P .. ':order', seq, job.id)
    redis.call('SADD', P .. ':queues', job.queue)
    local concurrency_key = job.fields.concurrency_key or ''
    if concurrency_key ~= '' and not takes_turns(job.queue) then start_turns(job.queue) end
    if parents then
      blocked[#blocked + 1] = {#answers + 1, job, key, seq, parents}
    elseif status == 'pending' then
      local score = ready_score(job.fields.priority, seq)
      redis.call('ZADD', P .. ':ready:' .. job.queue, score, job.id)
      if takes_turns(job.queue) then turn_add(job.queue, concurrency_key, job.id, score) end
      ready[job.queue] = true
    else
      index(job.id, key)
    end
    count(job.queue, status, 1)
    if WAITING[status] then waiting = waiting + 1 end
    answers[#answers + 1] = seq
  end
end
for _, entry in ipairs(blocked) do  -- count off the parents that have finished (or never were), by the rules
  local job, key, seq, parents = entry[2], entry[3], entry[4], entry[5]
  local left, failed, open, seen = 0, nil, {}, {}
  for _, parent in ipairs(parents) do
    if not seen[parent] then
      seen[parent] = true
      left = left + 1
      redis.call('ZADD', P .. ':children:' .. parent, seq, job.id)
      if not failed then
        local outcome = redis.call('HGET', P .. ':job:' .. parent, 'status') or 'deleted'
        if not (TERMINAL[outcome] or outcome == 'deleted') then
          open[#open + 1] = parent
        elseif outcome == 'completed' or job.fields.on_parent_failure == 'run' then
          left = left - 1
        else
          failed = 'parent ' .. parent .. ' ' .. outcome
        end
      end
    end
  end
  local status = 'waiting'
  if failed then
    status = 'cancelled'
    redis.call('HSET', key, 'status', status, 'parents_left', left, 'finished_at', num(moment()), 'error', failed)
    ended[#ended + 1] = {job.id, status}  -- a child added with it in this call may wait on it already
  elseif left == 0 then
    status = 'pending'
    redis.call('HSET', key, 'status', status, 'parents_left', 0, 'ready_at', num(moment()))
    ready[job.queue] = true
  else
    redis.call('HSET', key, 'parents_left', left)
    for _, parent in ipairs(open) do redis.call('SADD', P .. ':edges:' .. parent, job.id) end
  end
  index(job.id, key)
  if status ~= 'waiting' then
    count(job.queue, 'waiting', -1)
    count(job.queue, status, 1)
  end
end
publish()
for _, entry in ipairs(blocked) do  -- as stored, a cascade within the call included
  local f = redis.call('HMGET', entry[3], 'status', 'parents_left', 'error', 'finished_at', 'ready_at')
  answers[entry[1]] = {entry[4], f[1], f[2], f[3], f[4], f[5]}
end
return answers
"""

# ARGV: P, node, now, max_jobs, lease_seconds, worker, queues (JSON list, or ''), types (JSON list, or ''),
# lease ids (JSON list, one per job it may claim). One job from each queue in turn (round-robin: the queues
# in the order named, or by their next jobs), each queue's by priority, then FIFO; paused queues are skipped.
# A turn-taking queue's job is its next key's in turn whose limits and rates let it start (jobq.flow).
# (Due jobs are made pending by PROMOTE.)
# Answers: the claimed jobs, each as a row (see ROW), the earliest a rate lets a held job start (or false), and
# the turn-taking queues.
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
local turns = redis.call('SMEMBERS', P .. ':turns')
for _, queue in ipairs(turns) do turning[queue] = true end
local open = {}
for _, queue in ipairs(queues) do
  turning[queue] = turning[queue] or false
  if redis.call('SISMEMBER', P .. ':paused', queue) == 0 then open[#open + 1] = queue end
end
local SCAN = 200  -- jobs of other types passed over per queue and turn (per turn-taking queue and claim)

local function first_ready(set, scan)  -- the set's first job of a wanted type within scan: id, score, jobs passed
  local ids = redis.call('ZRANGE', set, 0, types and (scan - 1) or 0, 'WITHSCORES')
  for i = 1, #ids, 2 do
    if not types or types[redis.call('HGET', P .. ':job:' .. ids[i], 'type')] then
      return ids[i], ids[i + 1], (i - 1) / 2
    end
  end
  return nil, nil, #ids / 2
end

local wake_at = false  -- the earliest a rate lets a held job start
local function hold_until(t) if not wake_at or t < wake_at then wake_at = t end end
local function next_start(rate, tat)  -- jobq.flow.Rate's, and start below
  if not tat then return at end
  return tat - rate.period + rate.period / rate.limit
end
local function start(rate, tat) return math.max(tat or at, at) + rate.period / rate.limit end

local flows = {}  -- queue -> its flow and state, read once a claim
local function flow_of(queue)
  if flows[queue] then return flows[queue] end
  local text = redis.call('HGET', P .. ':flows', queue)
  local flow = text and cjson.decode(text) or {}
  for name, value in pairs(flow) do if value == cjson.null then flow[name] = nil end end
  local held = P .. ':held:' .. queue
  for _, key in ipairs(redis.call('ZRANGEBYSCORE', held, 0, at)) do  -- their rate lets them start now
    redis.call('ZREM', held, key)
    to_back(queue, key)
  end
  local later = redis.call('ZRANGEBYSCORE', held, 0, '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
  if later[2] then hold_until(tonumber(later[2])) end
  local state = {queue = queue, flow = flow, keys = P .. ':keys:' .. queue, held = held, scan = SCAN,
    running = tonumber(redis.call('HGET', P .. ':counts', queue .. '\tprocessing') or '0'),
    tat = tonumber(redis.call('HGET', P .. ':tats', queue))}
  flows[queue] = state
  return state
end

local function admitted(state, key, id)  -- whether the key's first job may start now; if not, the key is held
  if key == '' then return true end  -- unkeyed jobs have no key limit or rate
  local flow, held_at = state.flow, nil
  local limit = tonumber(redis.call('HGET', P .. ':job:' .. id, 'concurrency_limit'))  -- only lowers the queue's
  if not limit or (flow.key_concurrency and flow.key_concurrency < limit) then limit = flow.key_concurrency end
  if limit and tonumber(redis.call('HGET', P .. ':running:' .. state.queue, key) or '0') >= limit then
    held_at = FULL
  elseif flow.key_rate then
    local start_at = next_start(flow.key_rate, tonumber(redis.call('HGET', P .. ':tats:' .. state.queue, key)))
    if start_at > at then
      held_at = start_at
      hold_until(start_at)
    end
  end
  if not held_at then return true end
  redis.call('ZREM', state.keys, key)
  redis.call('ZADD', state.held, held_at, key)
  return false
end

local function flow_next(state)  -- the first job of the next key in turn that may start now: key, id, score
  local flow = state.flow
  local running = state.running + (deltas[state.queue .. '\tprocessing'] or 0)
  if flow.concurrency and running >= flow.concurrency then return nil end
  if flow.rate then
    local start_at = next_start(flow.rate, state.tat)
    if start_at > at then
      hold_until(start_at)
      return nil
    end
  end
  while state.scan > 0 do
    local key = redis.call('ZRANGE', state.keys, 0, 0)[1]
    if not key then return nil end
    local id, score, passed = first_ready(P .. ':ready:' .. state.queue .. '\t' .. key, state.scan)
    if not id then  -- none of the wanted types: the turn passes (a key passed over costs one at least)
      state.scan = state.scan - math.max(passed, 1)
      to_back(state.queue, key)
    else
      state.scan = state.scan - passed
      if admitted(state, key, id) then return key, id, score end
    end
  end
end

local function flow_started(state, key, id)  -- the key's turn passes; the rates count the start
  turn_remove(state.queue, key, id)
  if redis.call('ZSCORE', state.keys, key) then to_back(state.queue, key) end
  local flow = state.flow
  if flow.rate then
    state.tat = start(flow.rate, state.tat)
    redis.call('HSET', P .. ':tats', state.queue, num(state.tat))
  end
  if key ~= '' and flow.key_rate then
    local tats = P .. ':tats:' .. state.queue
    redis.call('HSET', tats, key, num(start(flow.key_rate, tonumber(redis.call('HGET', tats, key)))))
  end
end

local ordered = ARGV[7] ~= ''  -- queues named: each turn takes them in that order; else by their next job
local taken = {}
while #taken < max_jobs and #open > 0 do
  local candidates = {}
  for place, queue in ipairs(open) do
    local key, id, score = nil, nil, nil
    if turning[queue] then
      key, id, score = flow_next(flow_of(queue))
    else
      id, score = first_ready(P .. ':ready:' .. queue, SCAN)
    end
    if id then candidates[#candidates + 1] = {queue, id, ordered and place or tonumber(score), key} end
  end
  table.sort(candidates, function(a, b) return a[3] < b[3] end)
  local still = {}
  for _, candidate in ipairs(candidates) do
    if #taken >= max_jobs then break end
    local queue, id, key = candidate[1], candidate[2], candidate[4]
    local job = P .. ':job:' .. id
    redis.call('ZREM', P .. ':ready:' .. queue, id)
    if key then flow_started(flows[queue], key, id) end
    local lease = lease_ids[#taken + 1]
    redis.call('HINCRBY', job, 'attempts', 1)
    if worker ~= '' then
      redis.call('HSET', job, 'status', 'processing', 'started_at', num(at), 'lease_id', lease,
        'lease_expires_at', num(at + lease_seconds), 'worker', worker)
      redis.call('HDEL', job, 'run_at', 'progress', 'progress_note')
    else
      redis.call('HSET', job, 'status', 'processing', 'started_at', num(at), 'lease_id', lease,
        'lease_expires_at', num(at + lease_seconds))
      redis.call('HDEL', job, 'run_at', 'progress', 'progress_note', 'worker')
    end
    redis.call('ZADD', P .. ':leased', at + lease_seconds, id)
    moved(id, queue, 'pending', 'processing')
    taken[#taken + 1] = row(job)
    still[#still + 1] = queue
  end
  open = still
end
publish()
return {taken, wake_at and num(wake_at) or false, turns}
"""

# ARGV: P, node, now, then one JSON change each: {"id", "was", "lease", "set": {name: text}, "del": [name]}.
# Each is applied only if the job is still in status "was" under lease "lease" (JSON null: none).
# Answers: the ids written, and the children moved as their parents ended ({before, row} each).
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
return {written, cascaded}
"""

# ARGV: P, node, now, then job id, lease id, result (JSON text, or '' for none) and '1' (answer the job's
# fields) or '0' (answer its finish time only: the caller holds the job as leased) for each job. Completes
# each job its lease still holds, as Job.complete does (the ended attempt joins the history, written as JSON
# text here so that its times keep every digit). Answers: per completed job, its id and the fields or time; and
# the children moved as their parents ended ({before, row} each).
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
return {done, cascaded}
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

# ARGV: P, node, now, job id. Answers the job's fields before it was deleted and the children moved as it ended
# unfinished ('deleted'), or 'processing' (refused), or nil.
DELETE = r"""
local id = ARGV[4]
local key = P .. ':job:' .. id
if redis.call('EXISTS', key) == 0 then return nil end
local job = row(key)
local f = redis.call('HMGET', key, 'queue', 'status')
if f[2] == 'processing' then return 'processing' end
forget(id, key, f[1], f[2])
publish()
return {job, cascaded}
"""

# ARGV: P, node, now, queue. Deletes the queue's waiting jobs; answers how many, and the children (in other
# queues) moved as their parents ended unfinished ('deleted').
CLEAR = r"""
local queue = ARGV[4]
local deleted = 0
for _, name in ipairs({':ready:', ':due:', ':blocked:'}) do
  for _, id in ipairs(redis.call('ZRANGE', P .. name .. queue, 0, -1)) do
    local key = P .. ':job:' .. id
    forget(id, key, queue, redis.call('HGET', key, 'status'))
    deleted = deleted + 1
  end
end
publish()
return {deleted, cascaded}
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

# ARGV: P, node, now, before (a seq: only older jobs), max scanned, limit, status, queue, type, owner, workflow,
# parent ('': any). Answers the matching jobs (rows (see ROW), newest first, at most limit + 1) and the seq of the
# first job past the scanned stretch (or false when the scan reached the oldest job). A parent's children, or a
# workflow's jobs, are scanned in their own index (by seq too), not among every job.
LIST = r"""
local before, scan, limit = ARGV[4], tonumber(ARGV[5]), tonumber(ARGV[6])
local want = {status = ARGV[7], queue = ARGV[8], type = ARGV[9], owner = ARGV[10], workflow = ARGV[11]}
local scanned = P .. ':order'
if ARGV[12] ~= '' then
  scanned = P .. ':children:' .. ARGV[12]
elseif want.workflow ~= '' then
  scanned = P .. ':workflow:' .. want.workflow
end
local ids = redis.call('ZREVRANGEBYSCORE', scanned, '(' .. before, '-inf', 'WITHSCORES', 'LIMIT', 0, scan + 1)
local jobs, bound = {}, false
for i = 1, #ids, 2 do
  if (i + 1) / 2 > scan then bound = ids[i + 1] break end
  local key = P .. ':job:' .. ids[i]
  local f = redis.call('HMGET', key, 'status', 'queue', 'type', 'owner', 'workflow')
  if (want.status == '' or f[1] == want.status) and (want.queue == '' or f[2] == want.queue)
      and (want.type == '' or f[3] == want.type) and (want.owner == '' or f[4] == want.owner)
      and (want.workflow == '' or f[5] == want.workflow) then
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

# ARGV: P, node, now, queue, its flow (JSON, or '' to remove it). A flow makes the queue's ready jobs take turns
# by key; the limits changed, so every held key looks again, and idle leases everywhere are woken.
SET_FLOW = r"""
local queue = ARGV[4]
local flow = {}
if ARGV[5] == '' then
  redis.call('HDEL', P .. ':flows', queue)
else
  redis.call('HSET', P .. ':flows', queue, ARGV[5])
  if not takes_turns(queue) then start_turns(queue) end
  flow = cjson.decode(ARGV[5])
end
-- the rates start afresh: a tat kept from another rate would be read with this one's period
redis.call('HDEL', P .. ':tats', queue)
redis.call('DEL', P .. ':tats:' .. queue)
local held = P .. ':held:' .. queue
for _, key in ipairs(redis.call('ZRANGE', held, 0, -1)) do to_back(queue, key) end
redis.call('DEL', held)
ready[queue] = true
publish()
return 1
"""

# ARGV: P, node, now. Answers the time now and, per queue with a flow: the queue, its flow (JSON), its jobs
# running, its keys' running (flat key, count pairs), its rate's tat (or false) and its keys' tats (flat pairs).
FLOWS = r"""
local at = now()
local found = {}
local flows = redis.call('HGETALL', P .. ':flows')
for i = 1, #flows, 2 do
  local queue = flows[i]
  local tats = P .. ':tats:' .. queue
  local kept = {}
  local key_tats = redis.call('HGETALL', tats)
  for j = 1, #key_tats, 2 do
    if tonumber(key_tats[j + 1]) <= at then  -- a past tat is the same as none
      redis.call('HDEL', tats, key_tats[j])
    else
      kept[#kept + 1] = key_tats[j]
      kept[#kept + 1] = key_tats[j + 1]
    end
  end
  found[#found + 1] = {queue, flows[i + 1], redis.call('HGET', P .. ':counts', queue .. '\tprocessing') or '0',
    redis.call('HGETALL', P .. ':running:' .. queue), redis.call('HGET', P .. ':tats', queue), kept}
end
return {num(at), found}
"""

# ARGV: P, node, now, queue. Answers the id of the job a lease of the queue would take next, limits aside (the
# first of its next key in turn, in a turn-taking queue), or false.
PEEK = r"""
local queue = ARGV[4]
local key = redis.call('ZRANGE', P .. ':keys:' .. queue, 0, 0)[1]
local set = P .. ':ready:' .. queue
return redis.call('ZRANGE', key and set .. '\t' .. key or set, 0, 0)[1] or false
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
        "set_flow": SET_FLOW,
        "flows": FLOWS,
        "peek": PEEK,
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
