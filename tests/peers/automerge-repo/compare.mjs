// Prints one table comparing a lanyard-venue JSON report with a bench.mjs
// JSON report of the same workload at the same N, with the ratio
// automerge-repo / Lanyard for every figure where lower is better.
//
//   node compare.mjs LANYARD.json AUTOMERGE_REPO.json [--markdown]

import fs from "node:fs"

const [lanyardPath, amPath] = process.argv.slice(2).filter(a => !a.startsWith("--"))
if (!lanyardPath || !amPath) {
  process.stderr.write("usage: node compare.mjs LANYARD.json AUTOMERGE_REPO.json\n")
  process.exit(2)
}
const read = p => {
  try { return JSON.parse(fs.readFileSync(p, "utf8")) } catch (e) {
    process.stderr.write(`compare: cannot read ${p}: ${e.message}\n`)
    process.exit(1)
  }
}
const L = read(lanyardPath)
// A runner that crashed (e.g. out of memory) writes no figures: the table
// still shows Lanyard's, and says so.
const A = fs.existsSync(amPath)
  ? read(amPath)
  : { attendees: L.attendees, agenda: L.agenda, sessions: L.sessions, versions: {}, converged: null, timed_out: ["join", "changes", "storm"], errors: [`no figures: ${amPath} was not written (did the runner crash? see its output)`] }
const n = L.attendees
if (A.attendees !== n) process.stderr.write(`compare: warning: N differs (${n} vs ${A.attendees})\n`)

const lcpu = phase => (L.phases || []).find(p => p.phase === phase)?.server_cpu_s
const acpu = phase => A.server_cpu_s?.[phase]
const lok = L.converged === L.attendees
// automerge-repo figures of a phase count only when every device got there.
const amDone = phase => !(A.timed_out || []).includes(phase) && (A.not_converged?.[phase] ?? 0) === 0

const mib = b => (b == null ? null : b / 1048576)
const rows = [
  ["devices converged", L.converged, A.converged, "count"],
  ["join p50 (ms)", L.join_ms?.p50, amDone("join") ? A.join_ms?.p50 : null],
  ["join p95 (ms)", L.join_ms?.p95, amDone("join") ? A.join_ms?.p95 : null],
  ["join max (ms)", L.join_ms?.max, amDone("join") ? A.join_ms?.max : null],
  ["join total (ms)", L.join_total_ms, amDone("join") ? A.join_ms?.total : null],
  ["join bytes per device", L.join_bytes / n, amDone("join") ? A.join_server_bytes / A.attendees : null],
  ["fan-out p50 (ms)", L.fanout_ms?.p50, amDone("changes") ? A.fanout_ms?.p50 : null],
  ["fan-out p95 (ms)", L.fanout_ms?.p95, amDone("changes") ? A.fanout_ms?.p95 : null],
  ["fan-out p99 (ms)", L.fanout_ms?.p99, amDone("changes") ? A.fanout_ms?.p99 : null],
  ["fan-out max (ms)", L.fanout_ms?.max, amDone("changes") ? A.fanout_ms?.max : null],
  ["bytes per device per change", L.bytes_per_device_per_change, amDone("changes") ? A.bytes_per_device_per_change : null],
  ["storm: all hold the change (ms)", L.storm_ms, amDone("storm") ? A.storm_ms : null],
  ["server CPU, join (s)", lcpu("join"), acpu("join")],
  ["server CPU, changes (s)", lcpu("changes"), acpu("changes")],
  ["server CPU, storm (s)", lcpu("storm"), acpu("storm")],
  ["server peak memory (MiB)", L.server_peak_rss_bytes / 1048576, A.server_peak_rss_bytes / 1048576],
  // The simulator process (organizer and devices; the server is its own process in both).
  ["simulator memory per device (MiB)", mib(L.sim_rss_per_device_bytes), amDone("join") ? mib(A.bench_rss_per_device_bytes) : null],
  ["simulator memory after join (MiB)", mib(L.sim_rss_after_join_bytes), mib(A.bench_rss_bytes_after_join)],
]

const fmt = v => v == null || Number.isNaN(v) ? "—" : (Math.abs(v) >= 100 ? v.toFixed(0) : Math.abs(v) >= 1 ? v.toFixed(1) : v.toFixed(2))
const ratio = (l, a, kind) => {
  if (kind === "count") return ""
  if (l == null || a == null) return a == null ? "automerge-repo did not finish" : "—"
  if (l === 0) return a === 0 ? "1×" : "∞"
  return `${(a / l).toFixed(1)}×`
}
const head = ["figure", "Lanyard", "automerge-repo", "automerge-repo / Lanyard"]
const show = (v, kind) => (kind === "count" && v != null ? String(v) : fmt(v))
const body = rows.map(([name, l, a, kind]) => [name, show(l, kind), show(a, kind), ratio(l, a, kind)])
const widths = head.map((h, i) => Math.max(h.length, ...body.map(r => String(r[i]).length)))
const line = r => "| " + r.map((c, i) => String(c).padEnd(widths[i])).join(" | ") + " |"
const out = [
  `Venue workload ${L.agenda?.startsWith("synthetic") ? "v1" : "v2"}, agenda ${L.agenda} (${L.sessions} sessions; automerge-repo: ${A.agenda ?? "?"}, ${A.sessions} sessions${A.same_changes_as_lanyard ? ", the same changes" : ""}), N = ${n}, ${L.profile}, seed ${L.seed}; Lanyard ${L.versions?.lanyard} (automerge ${L.versions?.automerge}, quinn ${L.versions?.quinn}), ` +
    `automerge-repo ${A.versions?.["@automerge/automerge-repo"] ?? "?"} (automerge ${A.versions?.["@automerge/automerge"] ?? "?"}, node ${A.versions?.node ?? "?"})`,
  "",
  line(head),
  "|" + widths.map(w => "-".repeat(w + 2)).join("|") + "|",
  ...body.map(line),
]
if (L.agenda !== A.agenda || L.sessions !== A.sessions) out.push("", `warning: the agendas differ (Lanyard ${L.agenda}, ${L.sessions} sessions; automerge-repo ${A.agenda}, ${A.sessions})`)
if (!lok) out.push("", `Lanyard: ${L.attendees - L.converged} devices did not converge`)
if ((A.timed_out || []).length) out.push("", `automerge-repo timed out in: ${A.timed_out.join(", ")}`)
if ((A.errors || []).length) out.push(`automerge-repo errors: ${A.errors.join("; ")}`)
process.stdout.write(out.join("\n") + "\n")
