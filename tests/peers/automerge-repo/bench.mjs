// Venue workload (WORKLOAD.md, v2 with --agenda-json, else v1) against the automerge-repo 2.x
// sync server (server.mjs, a separate process), for side-by-side comparison
// with Lanyard's `lanyard-venue`.
//
// node bench.mjs --attendees N [--agenda-json FILE | --sessions 300] [--changes 10] [--seed 1]
//                [--json FILE] [--deadline-s 600] [--change-interval-ms 1000]
//                [--agenda per-item|single] [--storm-settle-ms 0] [--quiet]
//
// --agenda-json FILE: the agenda and schedule changes as Lanyard's importer
// read them, written by `lanyard-venue --write-agenda-json FILE` (workload v2:
// the real FOSDEM 2025 agenda by default). Without it, the seeded v1 agenda.
//
// Devices: N attendee Repos plus one organizer Repo in this process, each with
// its own WebSocketClientAdapter (its own WebSocket) and no storage adapter
// (in-memory). Progress on stderr, a summary on stdout, figures in --json.

import fs from "node:fs"
import os from "node:os"
import path from "node:path"
import http from "node:http"
import { spawn, execFileSync } from "node:child_process"
import { fileURLToPath } from "node:url"
import { performance } from "node:perf_hooks"
import * as A from "@automerge/automerge"
import { Repo } from "@automerge/automerge-repo"
import { WebSocketClientAdapter } from "@automerge/automerge-repo-network-websocket"

const HERE = path.dirname(fileURLToPath(import.meta.url))

// ---- command line -----------------------------------------------------------
function parseArgs(argv) {
  const o = {
    attendees: null,
    sessions: 300,
    agendaJson: null,
    changes: 10,
    seed: 1,
    json: null,
    deadlineS: 600,
    changeIntervalMs: 1000,
    agenda: "per-item",
    stormSettleMs: 0,
    quiet: false,
  }
  const num = (name, v) => {
    const n = Number(v)
    if (!Number.isFinite(n) || n < 0) usage(`${name} needs a non-negative number, got ${v}`)
    return n
  }
  for (let i = 2; i < argv.length; i++) {
    const a = argv[i]
    const v = () => {
      if (i + 1 >= argv.length) usage(`${a} needs a value`)
      return argv[++i]
    }
    switch (a) {
      case "--attendees": o.attendees = Math.floor(num(a, v())); break
      case "--sessions": o.sessions = Math.floor(num(a, v())); break
      case "--changes": o.changes = Math.floor(num(a, v())); break
      case "--seed": o.seed = Math.floor(num(a, v())); break
      case "--json": o.json = v(); break
      case "--deadline-s": o.deadlineS = num(a, v()); break
      case "--change-interval-ms": o.changeIntervalMs = num(a, v()); break
      case "--agenda": o.agenda = v(); break
      case "--agenda-json": o.agendaJson = v(); break
      case "--storm-settle-ms": o.stormSettleMs = num(a, v()); break
      case "--quiet": o.quiet = true; break
      case "-h": case "--help": usage(null); break
      default: usage(`unknown argument ${a}`)
    }
  }
  if (o.attendees === null) usage("--attendees N is required")
  if (o.agendaJson === null && (o.sessions < 2 || o.sessions < o.changes + 1)) usage("--sessions must be at least 2 and at least --changes + 1")
  if (!["per-item", "single"].includes(o.agenda)) usage("--agenda is per-item or single")
  return o
}

function usage(msg) {
  if (msg) process.stderr.write(`bench: ${msg}\n`)
  process.stderr.write(
    "usage: node bench.mjs --attendees N [--agenda-json FILE | --sessions 300] [--changes 10] [--seed 1]\n" +
      "                      [--json FILE] [--deadline-s 600] [--change-interval-ms 1000]\n" +
      "                      [--agenda per-item|single] [--storm-settle-ms 0] [--quiet]\n",
  )
  process.exit(msg ? 2 : 0)
}

const opts = parseArgs(process.argv)
const now = () => performance.now()
const sleep = ms => new Promise(r => setTimeout(r, Math.max(0, ms)))
const say = msg => {
  if (!opts.quiet) process.stderr.write(`automerge-repo-venue: ${msg}\n`)
}

// ---- errors: collected, deduplicated, never fatal -----------------------------
const errorCounts = new Map()
function recordError(msg) {
  msg = String(msg).split("\n")[0].slice(0, 300)
  errorCounts.set(msg, (errorCounts.get(msg) ?? 0) + 1)
}
process.on("uncaughtException", e => recordError(`uncaught exception: ${e?.message ?? e}`))
process.on("unhandledRejection", e => recordError(`unhandled rejection: ${e?.message ?? e}`))

// ---- seeded workload (mulberry32) ---------------------------------------------
function mulberry32(seed) {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) | 0
    let t = Math.imul(a ^ (a >>> 15), 1 | a)
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}
const rint = (rng, lo, hi) => lo + Math.floor(rng() * (hi - lo + 1)) // inclusive

// Same vocabulary and shape as tests/src/venue.rs (generate_agenda).
const WORDS = ["async", "rust", "systems", "offline", "sync", "crdt", "quic", "latency", "venue", "wifi",
  "storage", "schedule", "mobile", "design", "memory", "safety", "network", "protocol",
  "testing", "tracing", "scaling", "edge", "cloud", "kernel", "compiler", "types", "data"]
const NAMES = ["Ada", "Grace", "Linus", "Barbara", "Ken", "Margaret", "Dennis", "Radia", "Guido", "Frances"]
const TRACKS = ["Systems", "Web", "Mobile", "Data", "Security", "Community"]
const DAY0 = 1_781_096_400 // 2026-06-10 09:00 America/New_York (13:00 UTC)

function words(rng, len) {
  let s = ""
  while (s.length < len) s += (s ? " " : "") + WORDS[rint(rng, 0, WORDS.length - 1)]
  return s
}

function generateAgenda(seed, n) {
  const rng = mulberry32(seed)
  const rooms = []
  for (let i = 1; i <= 20; i++) rooms.push({ name: `Room ${String(i).padStart(2, "0")}`, capacity: rint(rng, 50, 500) })
  const perDay = Math.max(1, Math.ceil(n / 3))
  const sessions = []
  for (let i = 0; i < n; i++) {
    const day = Math.floor(i / perDay)
    const slot = Math.floor((i % perDay) / rooms.length)
    const start = DAY0 + day * 86_400 + slot * 3600
    const title = words(rng, 60)
    const abstract = words(rng, 400)
    const track = TRACKS[rint(rng, 0, TRACKS.length - 1)]
    const speakers = []
    for (let k = rint(rng, 1, 3); k > 0; k--) speakers.push(NAMES[rint(rng, 0, NAMES.length - 1)])
    sessions.push({
      id: `s${String(i).padStart(4, "0")}`,
      title, abstract,
      room: rooms[i % rooms.length].name,
      start, end: start + 50 * 60,
      track, speakers,
      status: "scheduled",
    })
  }
  return { rooms, sessions }
}

function otherRoom(rng, rooms, current) {
  const cur = rooms.findIndex(r => r.name === current)
  let j = rint(rng, 0, rooms.length - 2)
  if (cur >= 0 && j >= cur) j++
  return rooms[j].name
}

// M changes on M distinct sessions (never the storm's), so that a device's copy
// showing change k cannot be confused with a later change to the same session.
function planChanges(seed, agenda, m) {
  const rng = mulberry32((seed ^ 0x5eed) >>> 0)
  const { sessions, rooms } = agenda
  const stormIdx = Math.floor(sessions.length / 2)
  const used = new Set([stormIdx])
  const plan = []
  for (let k = 0; k < m; k++) {
    let i
    do i = rint(rng, 0, sessions.length - 1)
    while (used.has(i))
    used.add(i)
    const s = sessions[i]
    plan.push({
      k,
      session: s.id,
      room: otherRoom(rng, rooms, s.room),
      times: k % 2 === 1 ? [s.start + 1800, s.end + 1800] : null,
    })
  }
  return plan
}

function planStorm(seed, agenda, n) {
  const rng = mulberry32((seed ^ 0x5707) >>> 0)
  const s = agenda.sessions[Math.floor(agenda.sessions.length / 2)]
  const change = { k: "storm", session: s.id, room: otherRoom(rng, agenda.rooms, s.room), times: null }
  const offsets = []
  for (let i = 0; i < n; i++) offsets.push(rint(rng, 0, 999))
  return { change, offsets }
}

// Workload v2: the agenda (and the changes) exactly as Lanyard's importer read
// them, from `lanyard-venue --write-agenda-json FILE`. Every problem names the file.
function readAgendaJson(file, seed, m, n) {
  const fail = msg => { throw new Error(`--agenda-json ${file}: ${msg}`) }
  let j
  try { j = JSON.parse(fs.readFileSync(file, "utf8")) } catch (e) { fail(e.message) }
  if (!j || !Array.isArray(j.sessions) || j.sessions.length < 2) fail("needs a \"sessions\" array of at least 2 sessions")
  if (!Array.isArray(j.rooms) || j.rooms.length < 2) fail("needs a \"rooms\" array of at least 2 room names")
  const str = (s, k, i) => { if (typeof s[k] !== "string") fail(`sessions[${i}].${k}: expected a string`); return s[k] }
  const int = (s, k, i) => { if (!Number.isInteger(s[k])) fail(`sessions[${i}].${k}: expected an integer (unix seconds)`); return s[k] }
  const sessions = j.sessions.map((s, i) => ({
    id: str(s, "id", i), title: str(s, "title", i), abstract: str(s, "abstract", i), room: str(s, "room", i),
    start: int(s, "start", i), end: int(s, "end", i), track: str(s, "track", i),
    speakers: Array.isArray(s.speakers) ? s.speakers.map(String) : fail(`sessions[${i}].speakers: expected a list`),
    status: str(s, "status", i),
  }))
  const agenda = {
    event: { name: String(j.event?.name ?? "Venue Conference"), timeZone: String(j.event?.time_zone ?? "UTC") },
    rooms: j.rooms.map(name => ({ name: String(name), capacity: 0 })),
    sessions,
    source: String(j.source ?? file),
  }
  const ids = new Set(sessions.map(s => s.id))
  const change = (c, k) => {
    if (!c || !ids.has(c.session) || typeof c.room !== "string") fail(`change ${k}: needs a known session and a room`)
    return { k, session: c.session, room: c.room, times: Array.isArray(c.times) ? c.times : null }
  }
  // The same changes as Lanyard when the file was written for this seed and M;
  // otherwise planned here (mulberry32) over the file's sessions and rooms.
  const same = j.seed === seed && Array.isArray(j.changes) && j.changes.length === m && j.storm
  const plan = same ? j.changes.map(change) : planChanges(seed, agenda, m)
  const storm = planStorm(seed, agenda, n)
  if (same) storm.change = change(j.storm, "storm")
  return { agenda, plan, storm, sameChanges: !!same }
}

// Agenda fields are scalars, not collaborative text: Automerge 3 turns plain JS
// strings into text objects, so every string goes in as A.ImmutableString.
const S = x => new A.ImmutableString(x)
const docSession = s => ({
  id: S(s.id), title: S(s.title), abstract: S(s.abstract), room: S(s.room),
  start: s.start, end: s.end, track: S(s.track), speakers: s.speakers.map(S), status: S(s.status),
})
const docEvent = ev => (ev
  ? { name: S(ev.name), timeZone: S(ev.timeZone) }
  : { name: S("Venue Conference"), timeZone: S("America/New_York"), days: 3, firstDay: S("2026-06-10") })

function applyChange(d, ch) {
  const s = d.sessions[ch.session]
  s.room = S(ch.room)
  if (ch.times) {
    s.start = ch.times[0]
    s.end = ch.times[1]
  }
}
const shows = (doc, ch) => {
  const s = doc?.sessions?.[ch.session]
  return !!s && String(s.room) === ch.room && (!ch.times || s.start === ch.times[0])
}

// ---- figures -----------------------------------------------------------------
function percentiles(samples) {
  if (samples.length === 0) return { p50: null, p95: null, p99: null, max: null, count: 0 }
  const ms = [...samples].sort((a, b) => a - b)
  const rank = p => ms[Math.min(Math.max(Math.ceil((p / 100) * ms.length), 1), ms.length) - 1]
  const r = x => Math.round(x * 10) / 10
  return { p50: r(rank(50)), p95: r(rank(95)), p99: r(rank(99)), max: r(ms[ms.length - 1]), count: ms.length }
}

// ---- the server process, seen from outside -------------------------------------
let CLK_TCK = 100
try { CLK_TCK = parseInt(execFileSync("getconf", ["CLK_TCK"]).toString(), 10) || 100 } catch { /* default */ }

function procCpuS(pid) {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8")
    const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ")
    return (parseInt(f[11], 10) + parseInt(f[12], 10)) / CLK_TCK // utime + stime
  } catch { return null }
}
function procMem(pid) {
  try {
    const txt = fs.readFileSync(`/proc/${pid}/status`, "utf8")
    const kb = k => { const m = txt.match(new RegExp(`^${k}:\\s+(\\d+) kB`, "m")); return m ? parseInt(m[1], 10) * 1024 : null }
    return { rss: kb("VmRSS"), hwm: kb("VmHWM") }
  } catch { return { rss: null, hwm: null } }
}
// Resets VmHWM so that each phase's peak can be read (Linux clear_refs "5").
function resetPeak(pid) {
  try { fs.writeFileSync(`/proc/${pid}/clear_refs`, "5"); return true } catch { return false }
}

function httpJson(port, p, timeoutMs = 120_000) {
  return new Promise((resolve, reject) => {
    // agent: false: a fresh connection per request, so that a kept-alive socket
    // the server has just closed is never reused ("socket hang up").
    const req = http.get({ host: "127.0.0.1", port, path: p, timeout: timeoutMs, agent: false }, res => {
      let body = ""
      res.setEncoding("utf8")
      res.on("data", c => (body += c))
      res.on("end", () => { try { resolve(JSON.parse(body)) } catch (e) { reject(e) } })
    })
    req.on("timeout", () => req.destroy(new Error(`GET ${p}: timed out after ${timeoutMs} ms`)))
    req.on("error", reject)
  })
}

async function startServer() {
  const child = spawn(process.execPath, [path.join(HERE, "server.mjs")], {
    stdio: ["ignore", "pipe", "inherit", "ipc"],
  })
  const info = await new Promise((resolve, reject) => {
    let buf = ""
    const onData = c => {
      buf += c
      const nl = buf.indexOf("\n")
      if (nl >= 0) {
        child.stdout.off("data", onData)
        try { resolve(JSON.parse(buf.slice(0, nl))) } catch (e) { reject(e) }
      }
    }
    child.stdout.setEncoding("utf8")
    child.stdout.on("data", onData)
    child.once("exit", code => reject(new Error(`server exited (${code}) before listening`)))
  })
  child.stdout.on("data", c => process.stderr.write(`[server] ${c}`))
  child.on("exit", (code, sig) => { if (!stopping) recordError(`server exited unexpectedly (code ${code}, signal ${sig})`) })
  serverChild = child
  return { child, ...info }
}
let stopping = false
let serverChild = null

// ---- client WebSocket adapter with connection accounting ------------------------
// The stock WebSocketClientAdapter with counters around its handlers. One
// behavioural difference: a socket error other than ECONNREFUSED is recorded
// here; the stock handler rethrows it (an uncaught exception in a real app).
function newConnStats() {
  return { attempts: 0, opened: 0, failed: 0, superseded: 0, dropped: 0, bytes_received: 0, messages_received: 0 }
}
class CountingClientAdapter extends WebSocketClientAdapter {
  constructor(url, stats) {
    super(url) // default retryInterval (5000 ms), as an app would use it
    this.stats = stats
    this.opened = new WeakSet()
    this.failedSockets = new WeakSet()
    const { onOpen, onClose, onError, onMessage } = this
    const failed = s => {
      if (s && !this.opened.has(s) && !this.failedSockets.has(s)) {
        this.failedSockets.add(s)
        this.stats.failed++
      }
    }
    this.onOpen = ev => {
      const s = ev?.target ?? this.socket
      this.opened.add(s)
      this.stats.opened++
      onOpen()
    }
    this.onClose = ev => {
      const s = ev?.target ?? this.socket
      if (this.opened.has(s)) this.stats.dropped++ // disconnect() removes listeners first: this is unexpected
      else failed(s)
      onClose()
    }
    this.onError = ev => {
      failed(ev?.target ?? this.socket)
      try { onError(ev) } catch (e) { recordError(`device socket error: ${e?.code ?? ""} ${e?.message ?? e}`) }
    }
    this.messagesReceived = 0
    this.onMessage = ev => {
      this.stats.bytes_received += ev.data?.byteLength ?? 0
      this.stats.messages_received++
      this.messagesReceived++
      onMessage(ev)
    }
  }
  connect(peerId, peerMetadata) {
    this.stats.attempts++
    // The stock retry timer opens a new socket while the previous one is still
    // connecting, and abandons the old one: count that attempt as failed.
    const prev = this.socket
    if (prev && !this.opened.has(prev) && !this.failedSockets.has(prev)) {
      this.failedSockets.add(prev)
      this.stats.failed++
      this.stats.superseded++
    }
    super.connect(peerId, peerMetadata)
  }
  reconnect() {
    this.connect(this.peerId, this.peerMetadata)
  }
}

// ---- the run ---------------------------------------------------------------------
async function waitUntil(pred, deadlineAt, progress) {
  let last = now()
  for (;;) {
    if (pred()) return true
    if (now() > deadlineAt) return false
    if (progress && now() - last > 2000) {
      progress()
      last = now()
    }
    await sleep(20)
  }
}

function readVersions() {
  const v = { node: process.version }
  for (const p of ["@automerge/automerge-repo", "@automerge/automerge-repo-network-websocket",
    "@automerge/automerge-repo-storage-nodefs", "@automerge/automerge", "ws", "cbor-x"]) {
    try { v[p] = JSON.parse(fs.readFileSync(path.join(HERE, "node_modules", p, "package.json"), "utf8")).version } catch { v[p] = null }
  }
  return v
}

// Figures, filled in as phases end, so that an interrupted or timed-out run
// still reports what it measured.
const R = {
  system: "automerge-repo",
  workload: opts.agendaJson ? "venue v2" : "venue v1",
  agenda: opts.agendaJson ? null : `synthetic-${opts.sessions}`,
  versions: readVersions(),
  machine: { cpus: os.cpus().length, kernel: os.release(), platform: `${os.platform()}-${os.arch()}` },
  profile: "loopback",
  transport: "WebSocket (ws) over TCP loopback",
  seed: opts.seed,
  attendees: opts.attendees,
  sessions: opts.sessions,
  changes: opts.changes,
  change_interval_ms: opts.changeIntervalMs,
  agenda_mode: opts.agenda,
  deadline_s: opts.deadlineS,
  storm_settle_ms: opts.stormSettleMs,
  converged: 0,
  timed_out: [],
  publish_ms: null,
  join_ms: null,
  join_server_bytes: null,
  fanout_ms: null,
  bytes_per_device_per_change: null,
  storm_ms: null,
  storm_failed_connections: null,
  server_peak_rss_bytes: null,
  server_cpu_s: {},
  errors: [],
}
const r1 = x => (x === null || x === undefined ? null : Math.round(x * 10) / 10)
const errorList = () => [...errorCounts].map(([m, n]) => (n > 1 ? `${m} (x${n})` : m))

async function main() {
  const wall0 = now()
  const N = opts.attendees
  const deadlineMs = opts.deadlineS * 1000
  const timedOut = R.timed_out
  let agenda, plan, storm
  if (opts.agendaJson) {
    const a = readAgendaJson(opts.agendaJson, opts.seed, opts.changes, N)
    ;({ agenda, plan, storm } = a)
    opts.sessions = R.sessions = agenda.sessions.length
    R.agenda = agenda.source
    R.rooms = agenda.rooms.length
    R.same_changes_as_lanyard = a.sameChanges
    say(`agenda ${agenda.source}: ${agenda.sessions.length} sessions in ${agenda.rooms.length} rooms, ${agenda.event.timeZone}; changes ${a.sameChanges ? "as Lanyard's" : "planned here"}`)
  } else {
    agenda = generateAgenda(opts.seed, opts.sessions)
    plan = planChanges(opts.seed, agenda, opts.changes)
    storm = planStorm(opts.seed, agenda, N)
  }
  const server = await startServer()
  const port = server.port
  const wsUrl = `ws://127.0.0.1:${port}`
  say(`server pid ${server.pid} on ${wsUrl} (data in ${server.data_dir}); ${N} attendees, ${R.agenda}, ${opts.sessions} sessions, ${opts.changes} changes, seed ${opts.seed}`)

  const serverCpu = R.server_cpu_s
  const benchCpu = (R.bench_cpu_s = {})
  const peakByPhase = (R.server_peak_rss_bytes_by_phase = {})
  let peakResetOk = true
  const phase = name => {
    peakResetOk = resetPeak(server.pid) && peakResetOk
    const c0 = procCpuS(server.pid)
    const b0 = process.cpuUsage()
    return {
      end() {
        const c1 = procCpuS(server.pid)
        serverCpu[name] = c0 === null || c1 === null ? null : Math.round((c1 - c0) * 100) / 100
        const b = process.cpuUsage(b0)
        benchCpu[name] = Math.round((b.user + b.system) / 1e4) / 100
        const { hwm } = procMem(server.pid)
        peakByPhase[name] = hwm
        R.server_peak_rss_bytes = Math.max(R.server_peak_rss_bytes ?? 0, hwm ?? 0) || null
        if (!peakResetOk) R.server_peak_rss_bytes_by_phase = null
        R.wall_s = r1((now() - wall0) / 1000)
      },
    }
  }
  const serverLine = () => {
    const m = procMem(server.pid)
    return `server cpu ${procCpuS(server.pid)?.toFixed(1)} s, rss ${((m.rss ?? 0) / 2 ** 20).toFixed(0)} MiB`
  }
  // Server counters; a failed request is retried, then recorded and given as null.
  const stats = async () => {
    for (let attempt = 1; ; attempt++) {
      try {
        return await httpJson(port, "/stats")
      } catch (e) {
        if (attempt >= 3) {
          recordError(`server /stats: ${e?.message ?? e}`)
          return null
        }
        await sleep(200)
      }
    }
  }
  const delta = (a, b, key) => (a && b ? b[key] - a[key] : null)

  // ---- publish ----
  const orgStats = newConnStats()
  const orgAdapter = new CountingClientAdapter(wsUrl, orgStats)
  const organizer = new Repo({ network: [orgAdapter], peerId: "organizer" })
  if (!(await waitUntil(() => organizer.peers.length > 0, now() + 30_000))) throw new Error("organizer could not connect to the server")

  const pPublish = phase("publish")
  // The organizer writes the agenda locally (like Lanyard's organizer: one
  // change for the event, one per room, one per session), then the clock starts.
  let handle
  if (opts.agenda === "single") {
    handle = organizer.create({
      event: docEvent(agenda.event),
      rooms: Object.fromEntries(agenda.rooms.map(r => [r.name, { name: S(r.name), capacity: r.capacity }])),
      sessions: Object.fromEntries(agenda.sessions.map(s => [s.id, docSession(s)])),
    })
  } else {
    handle = organizer.create()
    handle.change(d => { d.event = docEvent(agenda.event); d.rooms = {}; d.sessions = {} })
    for (const r of agenda.rooms) handle.change(d => { d.rooms[r.name] = { name: S(r.name), capacity: r.capacity } })
    for (const s of agenda.sessions) handle.change(d => { d.sessions[s.id] = docSession(s) })
  }
  const docUrl = handle.url
  const docId = handle.documentId
  const tPublish = now()
  const orgHeads = () => JSON.stringify(handle.heads())
  let serverHas = false
  const publishDeadline = tPublish + deadlineMs
  while (!serverHas && now() < publishDeadline) {
    try {
      const r = await httpJson(port, `/doc/${encodeURIComponent(docId)}`)
      serverHas = r.ready && JSON.stringify(r.heads) === orgHeads()
    } catch (e) { recordError(`publish check: ${e.message}`) }
    if (!serverHas) await sleep(20)
  }
  if (!serverHas) timedOut.push("publish")
  R.publish_ms = serverHas ? r1(now() - tPublish) : null
  pPublish.end()
  const doc0 = handle.doc()
  R.agenda_doc = {
    changes: A.getAllChanges(doc0).length,
    saved_bytes: A.save(doc0).byteLength,
    sessions: Object.keys(doc0.sessions).length,
  }
  say(`publish: the server holds the agenda after ${R.publish_ms} ms (${R.agenda_doc.changes} changes, ${R.agenda_doc.saved_bytes} bytes saved)`)

  // ---- join ----
  const devStats = (R.device_connections = newConnStats())
  const devices = []
  let tJoin = 0
  const onDoc = (dev, doc) => {
    const t = now()
    if (dev.joinedAt === null && doc?.sessions && Object.keys(doc.sessions).length === opts.sessions) dev.joinedAt = t - tJoin
    for (const [k, w] of dev.pending) {
      if (shows(doc, w.ch)) {
        dev.pending.delete(k)
        w.done(t)
      }
    }
  }
  const joinedCount = () => devices.reduce((n, d) => n + (d.joinedAt !== null ? 1 : 0), 0)
  const seenAll = d => d.seen.size === plan.length
  const stormDone = d => d.stormMs !== null
  // Device verdicts, recomputed whenever figures are written.
  const verdicts = () => {
    const finalHeads = orgHeads()
    let converged = 0
    const nc = { join: 0, changes: 0, storm: 0, heads: 0 }
    for (const dev of devices) {
      const j = dev.joinedAt !== null
      const c = seenAll(dev)
      const s = stormDone(dev)
      let h = false
      try { h = dev.handle.isReady() && JSON.stringify(dev.handle.heads()) === finalHeads } catch { h = false }
      if (!j) nc.join++
      if (!c) nc.changes++
      if (!s) nc.storm++
      if (!h) nc.heads++
      if (j && c && s && h) converged++
    }
    nc.join += N - devices.length
    R.converged = converged
    R.not_converged = nc
  }
  current = { devices, verdicts, refreshers: [] }

  const pJoin = phase("join")
  R.bench_rss_bytes_before_devices = process.memoryUsage().rss
  const join0 = await stats()
  tJoin = now()
  for (let i = 0; i < N; i++) {
    const adapter = new CountingClientAdapter(wsUrl, devStats)
    const repo = new Repo({ network: [adapter], peerId: `device-${String(i).padStart(5, "0")}` })
    const dev = { i, repo, adapter, handle: null, joinedAt: null, pending: new Map(), seen: new Map(), stormMs: null, stormMsgs0: 0 }
    repo.find(docUrl).catch(e => recordError(`device find: ${e?.message ?? e}`.replace(docUrl, "<agenda>")))
    dev.handle = repo.handles[docId]
    dev.handle.on("change", ev => onDoc(dev, ev.doc))
    devices.push(dev)
    if (i % 25 === 24) await new Promise(r => setImmediate(r)) // let earlier devices progress, like N tasks would
  }
  const joinFigures = () => {
    const times = devices.filter(d => d.joinedAt !== null).map(d => d.joinedAt)
    R.join_ms = { ...percentiles(times), total: R.join_ms?.total ?? null }
  }
  current.refreshers.push(joinFigures)
  const joinOk = await waitUntil(() => joinedCount() === N, tJoin + deadlineMs, () => {
    joinFigures()
    say(`join: ${joinedCount()}/${N} devices; ${devStats.opened} sockets opened, ${devStats.failed} failed; ${serverLine()}; bench rss ${(process.memoryUsage().rss / 2 ** 20).toFixed(0)} MiB`)
  })
  if (!joinOk) timedOut.push("join")
  joinFigures()
  R.join_ms.total = joinOk ? r1(now() - tJoin) : null
  const join1 = await stats()
  R.join_server_bytes = delta(join0, join1, "wire_bytes")
  R.join_server_payload_bytes = delta(join0, join1, "payload_bytes")
  pJoin.end()
  // What the simulated devices cost this process (JS heap and Automerge's wasm memory).
  const mem = process.memoryUsage()
  R.bench_rss_bytes_after_join = mem.rss
  // Automerge's documents live in its WebAssembly memory (counted in external/arrayBuffers).
  R.bench_memory_after_join = { rss: mem.rss, heap_used: mem.heapUsed, external: mem.external, array_buffers: mem.arrayBuffers }
  R.bench_rss_per_device_bytes = Math.round((R.bench_rss_bytes_after_join - R.bench_rss_bytes_before_devices) / Math.max(1, N))
  say(`join: ${joinedCount()}/${N} devices hold the agenda after ${(now() - tJoin).toFixed(0)} ms`)

  // ---- changes ----
  const pChanges = phase("changes")
  const ch0 = await stats()
  const tChanges = now()
  const fanout = []
  const nChanges = Math.max(1, plan.length)
  R.fanout_expected_samples = N * plan.length
  const changeFigures = () => { R.fanout_ms = percentiles(fanout) }
  current.refreshers.push(changeFigures)
  for (const ch of plan) {
    await sleep(tChanges + ch.k * opts.changeIntervalMs - now())
    const t = now()
    for (const dev of devices) {
      dev.pending.set(ch.k, { ch, done: t1 => { fanout.push(t1 - t); dev.seen.set(ch.k, t1 - t) } })
    }
    handle.change(d => applyChange(d, ch))
    say(`changes: ${ch.k + 1}/${plan.length}: ${ch.session} -> ${ch.room}${ch.times ? " and start +30 min" : ""}`)
  }
  await sleep(tChanges + plan.length * opts.changeIntervalMs - now())
  const changesOk = await waitUntil(() => devices.every(seenAll), tChanges + deadlineMs, () => {
    changeFigures()
    say(`changes: ${devices.filter(seenAll).length}/${N} devices saw every change; ${serverLine()}`)
  })
  if (!changesOk) timedOut.push("changes")
  changeFigures()
  const ch1 = await stats()
  const perDeviceChange = x => (x === null ? null : r1(x / Math.max(1, N) / nChanges))
  R.bytes_per_device_per_change = perDeviceChange(delta(ch0, ch1, "wire_bytes"))
  R.payload_bytes_per_device_per_change = perDeviceChange(delta(ch0, ch1, "payload_bytes"))
  R.changes_server_messages = delta(ch0, ch1, "messages")
  pChanges.end()
  R.server_cpu_ms_per_device_per_change = serverCpu.changes == null ? null
    : Math.round((serverCpu.changes / Math.max(1, N) / nChanges) * 1e6) / 1e3
  R.bench_cpu_ms_per_device_per_change = Math.round((benchCpu.changes / Math.max(1, N) / nChanges) * 1e6) / 1e3
  for (const dev of devices) for (const ch of plan) dev.pending.delete(ch.k)
  say(`changes: ${devices.filter(seenAll).length}/${N} devices saw all ${plan.length} changes`)

  // ---- storm ----
  const pStorm = phase("storm")
  const st0 = await stats()
  const conn0 = { ...devStats }
  for (const dev of devices) {
    try { dev.adapter.disconnect() } catch (e) { recordError(`disconnect: ${e?.message ?? e}`) }
  }
  await new Promise(r => setImmediate(r))
  // Diagnostic only (default 0): give the server time to notice the closes.
  if (opts.stormSettleMs > 0) await sleep(opts.stormSettleMs)
  for (const dev of devices) dev.stormMsgs0 = dev.adapter.messagesReceived
  const tStorm = now()
  for (const dev of devices) {
    dev.pending.set("storm", { ch: storm.change, done: t1 => (dev.stormMs = t1 - tStorm) })
  }
  handle.change(d => applyChange(d, storm.change))
  say(`storm: every device disconnected; ${storm.change.session} -> ${storm.change.room}; reconnecting within 1 s`)
  devices.forEach((dev, i) => setTimeout(() => dev.adapter.reconnect(), storm.offsets[i]))
  const stormFigures = () => {
    R.storm_device_ms = percentiles(devices.filter(stormDone).map(d => d.stormMs))
    R.storm_failed_connections = devStats.failed - conn0.failed
    R.storm_superseded_connections = devStats.superseded - conn0.superseded
    R.storm_connection_attempts = devStats.attempts - conn0.attempts
  }
  current.refreshers.push(stormFigures)
  const stormOk = await waitUntil(() => devices.every(stormDone), tStorm + deadlineMs, () => {
    stormFigures()
    say(`storm: ${devices.filter(stormDone).length}/${N} devices hold the change; ${devStats.opened - conn0.opened} sockets opened, ${devStats.failed - conn0.failed} failed; ${serverLine()}`)
  })
  if (!stormOk) timedOut.push("storm")
  R.storm_ms = stormOk ? r1(now() - tStorm) : null
  stormFigures()
  const st1 = await stats()
  R.storm_server_bytes = delta(st0, st1, "wire_bytes")
  R.storm_server_messages = delta(st0, st1, "messages")
  pStorm.end()
  // Devices still without the change that keep receiving messages: the sync
  // loop of a stale server-side sync state (see README).
  R.storm_sync_loop_devices = devices.filter(d => !stormDone(d) && d.adapter.messagesReceived - d.stormMsgs0 > 20).length
  if (R.storm_sync_loop_devices > 0) recordError(`storm: ${R.storm_sync_loop_devices} devices without the change kept exchanging sync messages with the server (sync loop)`)
  say(`storm: ${devices.filter(stormDone).length}/${N} devices hold the change after ${(now() - tStorm).toFixed(0)} ms`)

  // ---- verdicts ----
  verdicts()
  const end = await stats()
  R.server_totals = end && {
    wire_bytes: end.wire_bytes, payload_bytes: end.payload_bytes, messages: end.messages,
    connections_total: end.connections_total, connections_open: end.connections_open,
    terminations: end.terminations,
  }
  R.wall_s = r1((now() - wall0) / 1000)
  return { devices, organizer }
}

function summary(r) {
  const p = x => (x ? `p50 ${x.p50}  p95 ${x.p95}  p99 ${x.p99}  max ${x.max}` : "-")
  const mib = b => (b == null ? "?" : `${(b / 2 ** 20).toFixed(0)} MiB`)
  const cpu = r.server_cpu_s ?? {}
  const lines = [
    `automerge-repo-venue: ${r.attendees} attendees, agenda ${r.agenda} (${r.sessions} sessions), loopback, seed ${r.seed} (automerge-repo ${r.versions["@automerge/automerge-repo"]}, automerge ${r.versions["@automerge/automerge"]}, node ${r.versions.node})`,
    `  converged            ${r.converged}/${r.attendees}${r.timed_out.length ? `  TIMED OUT: ${r.timed_out.join(", ")}` : ""}`,
    `  publish              ${r.publish_ms} ms (${r.sessions} sessions, ${r.agenda_doc?.changes} changes, ${r.agenda_doc?.saved_bytes} bytes saved)`,
    `  join (ms)            ${p(r.join_ms)}  total ${r.join_ms?.total ?? "-"}  (${r.join_ms?.count ?? 0} devices)`,
    `  join server bytes    ${r.join_server_bytes} (${Math.round((r.join_server_bytes ?? 0) / Math.max(1, r.attendees))} per device)`,
    `  change fan-out (ms)  ${p(r.fanout_ms)}  (${r.fanout_ms?.count ?? 0}/${r.fanout_expected_samples ?? "-"} samples)`,
    `  bytes/device/change  ${r.bytes_per_device_per_change}`,
    `  storm                ${r.storm_ms === null ? "not every device got the change" : `all hold the change after ${r.storm_ms} ms`} (${p(r.storm_device_ms)}), ${r.storm_failed_connections} failed connections`,
    `  server peak rss      ${mib(r.server_peak_rss_bytes)}${r.server_peak_rss_bytes_by_phase?.storm ? ` (storm ${mib(r.server_peak_rss_bytes_by_phase.storm)})` : ""}`,
    `  server cpu (s)       publish ${cpu.publish}  join ${cpu.join}  changes ${cpu.changes}  storm ${cpu.storm}  (${r.server_cpu_ms_per_device_per_change} ms per device per change)`,
    `  bench cpu (s)        ${Object.entries(r.bench_cpu_s ?? {}).map(([k, v]) => `${k} ${v}`).join("  ")}  (${r.bench_cpu_ms_per_device_per_change} ms per device per change)`,
    `  bench memory         ${mib(r.bench_rss_bytes_before_devices)} before devices, ${mib(r.bench_rss_bytes_after_join)} after join: ${((r.bench_rss_per_device_bytes ?? 0) / 2 ** 20).toFixed(2)} MiB per device`,
    `  errors               ${r.errors.length ? r.errors.join("; ") : "none"}`,
    `  wall time            ${r.wall_s} s`,
  ]
  return lines.join("\n") + "\n"
}

let current = null // { devices, verdicts } once devices exist

function writeJson() {
  R.errors = errorList()
  if (opts.json) fs.writeFileSync(opts.json, JSON.stringify(R, null, 2) + "\n")
}

async function stopServer() {
  stopping = true
  const child = serverChild
  if (child && child.exitCode === null && child.signalCode === null) {
    child.kill("SIGTERM")
    await Promise.race([new Promise(r => child.once("exit", r)), sleep(3000)])
  }
}

// Interrupted (Ctrl-C, timeout): write what was measured, stop the server.
for (const sig of ["SIGINT", "SIGTERM"]) {
  process.once(sig, async () => {
    R.interrupted = sig
    if (!R.timed_out.includes("interrupted")) R.timed_out.push("interrupted")
    try { current?.refreshers.forEach(f => f()); current?.verdicts() } catch { /* best effort */ }
    writeJson()
    process.stderr.write(`automerge-repo-venue: ${sig}: partial figures ${opts.json ? `written to ${opts.json}` : "not written (no --json)"}\n`)
    await stopServer()
    process.exit(130)
  })
}

let result
try {
  result = await main()
} catch (e) {
  recordError(`fatal: ${e?.stack ?? e}`)
  if (!R.timed_out.includes("fatal")) R.timed_out.push("fatal")
  try { current?.refreshers.forEach(f => f()); current?.verdicts() } catch { /* best effort */ }
  process.stderr.write(`automerge-repo-venue: fatal: ${e?.stack ?? e}\n`)
}
writeJson()
if (result) process.stdout.write(summary(R))

// Tear down: devices, organizer, then the server process.
if (result) {
  for (const d of result.devices) { try { d.adapter.disconnect() } catch { /* already closed */ } }
  try { result.organizer.networkSubsystem.adapters.forEach(a => a.disconnect()) } catch { /* ignore */ }
}
await stopServer()
process.exit(result ? 0 : 1)
