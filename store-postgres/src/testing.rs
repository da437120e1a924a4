//! A throwaway PostgreSQL server for tests: `initdb` in a temporary
//! directory, `postgres` on a free loopback port, a database per test.
//! Run as root, the server runs as the `postgres` user (PostgreSQL refuses
//! root). The server stops when the [`TempCluster`] is dropped, and a
//! watchdog stops it if the test process dies first.
//!
//! Binaries are looked up in `LANYARD_PG_BIN`, then `PATH`, then
//! `/usr/lib/postgresql/<version>/bin` (Debian's packages).

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// A running throwaway PostgreSQL server.
#[derive(Debug)]
pub struct TempCluster {
    dir: PathBuf,
    bin: PathBuf,
    port: u16,
    /// The uid and gid the server runs as (when the tests run as root).
    run_as: Option<(u32, u32)>,
    databases: AtomicU32,
    fsync: bool,
}

/// The directory holding `initdb`, `postgres` and `psql`.
pub fn pg_bin_dir() -> Result<PathBuf, String> {
    if let Some(dir) = std::env::var_os("LANYARD_PG_BIN") {
        return Ok(PathBuf::from(dir));
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            if dir.join("initdb").is_file() && dir.join("postgres").is_file() {
                // Debian links a few of them into /usr/local/bin: the
                // directory the link leads to has them all.
                let real = std::fs::canonicalize(dir.join("postgres")).unwrap_or_default();
                return Ok(real.parent().map_or(dir, Path::to_path_buf));
            }
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((v, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, b)| b).ok_or_else(|| {
        "PostgreSQL's server binaries (initdb, postgres) were not found: install the \
         distribution's postgresql package (Debian: apt-get install postgresql) or set \
         LANYARD_PG_BIN to their directory"
            .to_string()
    })
}

fn id_of(flag: &str, user: &str) -> Option<u32> {
    let out = Command::new("id").args([flag, user]).output().ok()?;
    String::from_utf8(out.stdout).ok()?.trim().parse().ok()
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .is_some_and(|s| s.trim() == "0")
}

fn free_port() -> Result<u16, String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    Ok(l.local_addr().map_err(|e| e.to_string())?.port())
}

/// Runs SQL with psql on the database at `url`; its output (unaligned,
/// tuples only).
pub fn psql_url(url: &str, sql: &str) -> Result<String, String> {
    let out = Command::new(pg_bin_dir()?.join("psql"))
        .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d"])
        .arg(url)
        .args(["-c", sql])
        .output()
        .map_err(|e| format!("cannot run psql: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "psql failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

impl TempCluster {
    /// Creates and starts a server without fsync (tests: a crash of the
    /// database itself is not what they test); waits (up to 60 s) until it
    /// answers.
    pub fn start() -> Result<TempCluster, String> {
        Self::start_with_fsync(false)
    }

    /// Like [`TempCluster::start`], with fsync on as a production server
    /// has it when `fsync` (benchmarks).
    pub fn start_with_fsync(fsync: bool) -> Result<TempCluster, String> {
        let bin = pg_bin_dir()?;
        let run_as = if is_root() {
            let uid = id_of("-u", "postgres");
            let gid = id_of("-g", "postgres");
            match (uid, gid) {
                (Some(u), Some(g)) => Some((u, g)),
                _ => {
                    return Err(
                        "tests run as root start PostgreSQL as the 'postgres' user, \
                                which does not exist: install the postgresql package"
                            .into(),
                    )
                }
            }
        } else {
            None
        };
        let dir = tempfile::Builder::new()
            .prefix("lanyard-pg-")
            .tempdir()
            .map_err(|e| format!("cannot make a temporary directory: {e}"))?
            .keep();
        if let Some((uid, gid)) = run_as {
            std::os::unix::fs::chown(&dir, Some(uid), Some(gid))
                .map_err(|e| format!("cannot hand {} to postgres: {e}", dir.display()))?;
        }
        let mut cluster = TempCluster {
            dir,
            bin,
            port: 0,
            run_as,
            databases: AtomicU32::new(0),
            fsync,
        };
        let data = cluster.data_dir();
        let out = cluster
            .command("initdb")
            .args(["-D"])
            .arg(&data)
            .args(["-U", "lanyard", "--auth=trust", "-E", "UTF8", "--no-sync"])
            .output()
            .map_err(|e| format!("cannot run initdb: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "initdb failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        cluster.launch()?;
        Ok(cluster)
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn command(&self, program: &str) -> Command {
        let mut c = Command::new(self.bin.join(program));
        if let Some((uid, gid)) = self.run_as {
            c.uid(uid).gid(gid);
        }
        c.current_dir(&self.dir);
        c
    }

    /// Starts `postgres` under a watchdog shell that stops it (and removes
    /// the directory) once this process is gone.
    fn launch(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            self.port = free_port()?;
            let script = format!(
                "'{postgres}' -D '{data}' -p {port} -k '{dir}' -c listen_addresses=127.0.0.1 \
                 -c fsync={fsync} -c max_connections=200 >'{dir}/log' 2>&1 & pg=$!; \
                 while [ -d /proc/{parent} ] && kill -0 $pg 2>/dev/null; do sleep 1; done; \
                 kill -INT $pg 2>/dev/null; wait $pg; \
                 [ -d /proc/{parent} ] || rm -rf '{dir}'",
                postgres = self.bin.join("postgres").display(),
                data = self.data_dir().display(),
                port = self.port,
                dir = self.dir.display(),
                parent = std::process::id(),
                fsync = if self.fsync { "on" } else { "off" },
            );
            let mut sh = Command::new("sh");
            sh.args(["-c", &script])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .current_dir(&self.dir);
            if let Some((uid, gid)) = self.run_as {
                sh.uid(uid).gid(gid);
            }
            sh.spawn()
                .map_err(|e| format!("cannot start postgres: {e}"))?;
            match self.wait_ready(deadline) {
                Ok(()) => return Ok(()),
                Err(e) if Instant::now() >= deadline => return Err(e),
                // Another process took the port first: try another.
                Err(_) => continue,
            }
        }
    }

    fn wait_ready(&self, deadline: Instant) -> Result<(), String> {
        loop {
            let ok = Command::new(self.bin.join("pg_isready"))
                .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-q"])
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                return Ok(());
            }
            let log = std::fs::read_to_string(self.dir.join("log")).unwrap_or_default();
            if log.contains("could not bind") || log.contains("could not create listen socket") {
                return Err(format!("postgres could not listen: {log}"));
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "postgres did not answer within 60 s; its log:\n{log}"
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The server's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The URL of database `db`.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://lanyard@127.0.0.1:{}/{db}", self.port)
    }

    /// Runs SQL with psql on database `db`; its output.
    pub fn psql(&self, db: &str, sql: &str) -> Result<String, String> {
        psql_url(&self.url(db), sql)
    }

    /// A new empty database; its URL.
    pub fn create_database(&self) -> Result<String, String> {
        let n = self.databases.fetch_add(1, Ordering::Relaxed);
        let name = format!("lanyard_{n}");
        self.psql("postgres", &format!("CREATE DATABASE {name}"))?;
        Ok(self.url(&name))
    }

    /// Drops every client connection to the server (as a network failure or
    /// a restarted database would); the server goes on.
    pub fn drop_connections(&self) -> Result<usize, String> {
        let n = self.psql(
            "postgres",
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE pid <> pg_backend_pid() AND backend_type = 'client backend'",
        )?;
        n.parse().map_err(|e| format!("{e}: {n}"))
    }

    /// The server's log so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("log")).unwrap_or_default()
    }

    /// The temporary directory (data, socket, log).
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for TempCluster {
    fn drop(&mut self) {
        let _ = self
            .command("pg_ctl")
            .args(["-D"])
            .arg(self.data_dir())
            .args(["stop", "-m", "immediate", "-s"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
