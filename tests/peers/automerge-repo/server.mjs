// The automerge-repo sync server under test, set up like
// automerge/automerge-repo-sync-server (src/server.js): one Repo with a
// NodeWSServerAdapter on a `ws` WebSocketServer({ noServer: true }) behind an
// HTTP server, a NodeFSStorageAdapter, and `sharePolicy: async () => false`.
//
// Two additions for the benchmark, neither on the sync path:
// - it counts what it sends to clients: WebSocket payload bytes (every
//   `socket.send` of the adapter) and wire bytes (`bytesWritten` of each
//   client's TCP socket: payload + WebSocket framing + the HTTP 101 response);
// - `GET /stats` and `GET /doc/<documentId>` on the same loopback port report
//   those counters, CPU time, memory, and whether the server holds a document.
//
// Usage: node server.mjs [--port 0] [--host 127.0.0.1] [--data DIR]
// Prints one JSON line on stdout once listening: {"port", "pid", "data_dir"}.
// SIGTERM/SIGINT: closes, removes the data directory if it created it, exits.

import fs from "node:fs"
import os from "node:os"
import path from "node:path"
import http from "node:http"
import { WebSocketServer } from "ws"
import { Repo } from "@automerge/automerge-repo"
import { NodeWSServerAdapter } from "@automerge/automerge-repo-network-websocket"
import { NodeFSStorageAdapter } from "@automerge/automerge-repo-storage-nodefs"

function arg(name, dflt) {
  const i = process.argv.indexOf(name)
  return i >= 0 && i + 1 < process.argv.length ? process.argv[i + 1] : dflt
}

const host = arg("--host", "127.0.0.1")
const port = parseInt(arg("--port", "0"), 10)
let dataDir = arg("--data", null)
const ownDir = dataDir === null
if (ownDir) dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "lanyard-amr-server-"))
else fs.mkdirSync(dataDir, { recursive: true })

// ---- counters -------------------------------------------------------------
const counters = {
  payload_bytes: 0, // bytes handed to ws socket.send (CBOR-encoded repo messages)
  messages: 0, // ws messages sent
  closed_wire_bytes: 0, // bytesWritten of client TCP sockets already closed
  connections_total: 0,
  connections_closed: 0,
  terminations: 0, // socket.terminate() calls (keep-alive failures, shutdown)
}
const liveTcp = new Set()

function wireBytes() {
  let live = 0
  for (const s of liveTcp) live += s.bytesWritten
  return counters.closed_wire_bytes + live
}

function vmStatus() {
  const out = {}
  try {
    const txt = fs.readFileSync("/proc/self/status", "utf8")
    for (const key of ["VmRSS", "VmHWM"]) {
      const m = txt.match(new RegExp(`^${key}:\\s+(\\d+) kB`, "m"))
      if (m) out[key] = parseInt(m[1], 10) * 1024
    }
  } catch {
    // not Linux: fall back to what Node knows
  }
  return out
}

// ---- the sync server ------------------------------------------------------
const wss = new WebSocketServer({ noServer: true })

// Registered before the Repo's adapter registers its own listener; only wraps
// `send` and `terminate` and watches the TCP socket, nothing else.
wss.on("connection", (socket, request) => {
  counters.connections_total++
  const tcp = request.socket
  liveTcp.add(tcp)
  tcp.once("close", () => {
    liveTcp.delete(tcp)
    counters.closed_wire_bytes += tcp.bytesWritten
    counters.connections_closed++
  })
  const send = socket.send.bind(socket)
  socket.send = (data, ...rest) => {
    counters.payload_bytes += data.byteLength ?? data.length ?? 0
    counters.messages++
    return send(data, ...rest)
  }
  const terminate = socket.terminate.bind(socket)
  socket.terminate = () => {
    counters.terminations++
    return terminate()
  }
})

const repo = new Repo({
  network: [new NodeWSServerAdapter(wss)],
  storage: new NodeFSStorageAdapter(dataDir),
  peerId: `storage-server-${os.hostname()}`,
  // As the sync server: only sync documents a peer asks for by id.
  sharePolicy: async () => false,
})

function json(res, code, body) {
  const b = JSON.stringify(body)
  res.writeHead(code, { "content-type": "application/json", "content-length": Buffer.byteLength(b) })
  res.end(b)
}

const server = http.createServer(async (req, res) => {
  try {
    if (req.url === "/stats") {
      const cpu = process.cpuUsage()
      const vm = vmStatus()
      json(res, 200, {
        ...counters,
        wire_bytes: wireBytes(),
        connections_open: wss.clients.size,
        peers: repo.peers.length,
        cpu_user_s: cpu.user / 1e6,
        cpu_system_s: cpu.system / 1e6,
        rss_bytes: vm.VmRSS ?? process.memoryUsage().rss,
        peak_rss_bytes: vm.VmHWM ?? null,
        uptime_s: process.uptime(),
      })
    } else if (req.url.startsWith("/doc/")) {
      // Does the server hold this document? Its heads once it is flushed to storage.
      const id = decodeURIComponent(req.url.slice("/doc/".length))
      const handle = repo.handles[id]
      if (!handle || !handle.isReady()) return json(res, 200, { ready: false, state: handle?.state ?? null })
      await repo.flush([id])
      json(res, 200, { ready: true, heads: handle.heads() })
    } else if (req.url === "/") {
      res.end("automerge-repo sync server (lanyard benchmark peer)\n")
    } else {
      json(res, 404, { error: "not found" })
    }
  } catch (e) {
    json(res, 500, { error: String(e?.stack ?? e) })
  }
})
server.on("upgrade", (request, socket, head) => {
  wss.handleUpgrade(request, socket, head, ws => wss.emit("connection", ws, request))
})

let closing = false
function shutdown() {
  if (closing) return
  closing = true
  try {
    wss.close()
    server.close()
  } catch {
    // exiting anyway
  }
  if (ownDir) fs.rmSync(dataDir, { recursive: true, force: true })
  process.exit(0)
}
process.on("SIGTERM", shutdown)
process.on("SIGINT", shutdown)
process.on("disconnect", shutdown) // the bench died

server.listen(port, host, () => {
  const addr = server.address()
  process.stdout.write(JSON.stringify({ port: addr.port, pid: process.pid, data_dir: dataDir }) + "\n")
})
