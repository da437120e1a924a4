//! The admin HTTP listener of a real server: probes, a `/metrics` scrape
//! read by a Prometheus text parser while devices sync over QUIC, and the
//! admin API's bearer token.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::net::SocketAddr;

use lanyard_client_core::{BackgroundOptions, NewSession};
use lanyard_protocol::{DocId, EventId, Role};
use lanyard_tests::{unix_now, wait_for, RawClient, TestServer};

/// The status and body of `GET url`, with an optional bearer token.
async fn get(url: String, token: Option<String>) -> (u16, String) {
    tokio::task::spawn_blocking(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let mut req = agent.get(&url);
        if let Some(t) = token {
            req = req.header("Authorization", &format!("Bearer {t}"));
        }
        let mut resp = req.call().unwrap();
        let status = resp.status().as_u16();
        (status, resp.body_mut().read_to_string().unwrap())
    })
    .await
    .unwrap()
}

fn url(addr: SocketAddr, path: &str) -> String {
    format!("http://{addr}{path}")
}

async fn start(max_connections: usize) -> (TestServer, SocketAddr) {
    let srv = TestServer::start_with(|o| {
        o.admin = Some("127.0.0.1:0".parse().unwrap());
        o.admission.max_connections = max_connections;
    })
    .await
    .unwrap();
    let admin = srv.server().admin_addr().expect("the admin listener runs");
    (srv, admin)
}

fn session(id: &str) -> NewSession {
    let start = i64::try_from(unix_now()).unwrap() + 86_400;
    NewSession {
        id: id.into(),
        title: format!("Talk {id}"),
        room: "Room 1".into(),
        start_unix: start,
        end_unix: start + 1800,
        ..NewSession::default()
    }
}

/// Every sample's value by name and sorted labels.
fn values(scrape: &prometheus_parse::Scrape) -> HashMap<String, f64> {
    let mut out = HashMap::new();
    for s in &scrape.samples {
        let mut labels: Vec<String> = s.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        labels.sort();
        let key = if labels.is_empty() {
            s.metric.clone()
        } else {
            format!("{}{{{}}}", s.metric, labels.join(","))
        };
        let v = match &s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => *v,
            prometheus_parse::Value::Histogram(b) => b.iter().map(|c| c.count).fold(0.0, f64::max),
            prometheus_parse::Value::Summary(_) => continue,
        };
        out.insert(key, v);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_scraped_while_devices_sync_are_read_by_a_prometheus_parser() {
    let (srv, admin) = start(1000).await;
    let org = srv.device(Role::Organizer, "org", "laptop").unwrap();
    org.client.set_event("Conf", "Europe/Brussels").unwrap();
    org.client.add_session(session("t1")).unwrap();
    org.sync().await.unwrap();
    // An attendee stays connected: the next agenda change is fanned out.
    let ann = srv.device(Role::Attendee, "ann", "phone").unwrap();
    let bg = ann.client.start_background(BackgroundOptions::default());
    // Only once ann holds t1 is she subscribed: t2 then reaches her by
    // fan-out, not in her catch-up (which the histogram does not count).
    let client = &ann.client;
    let holds = |id: &'static str| {
        move || {
            client
                .sessions()
                .map(|a| a.iter().any(|s| s.id == id))
                .unwrap_or(false)
        }
    };
    wait_for("ann gets t1", holds("t1")).await.unwrap();
    org.client.add_session(session("t2")).unwrap();
    org.sync().await.unwrap();
    wait_for("ann gets t2", holds("t2")).await.unwrap();
    ann.client.set_note("t2", "bring a laptop").unwrap();
    wait_for("ann's note reaches the server", || {
        srv.server().with_doc(
            &DocId::Attendee(EventId::new("conf").unwrap(), "ann".parse().unwrap()),
            |d| d.is_some(),
        )
    })
    .await
    .unwrap();

    let (status, text) = get(url(admin, "/metrics"), None).await;
    assert_eq!(status, 200, "{text}");
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).unwrap();
    let v = values(&scrape);
    for name in [
        "lanyard_connections",
        "lanyard_sessions",
        "lanyard_bytes_sent_total",
        "lanyard_bytes_received_total",
        "lanyard_documents",
        "lanyard_store_bytes",
        "lanyard_fanout_seconds",
        "lanyard_fanout_seconds_count",
        "lanyard_flush_seconds",
        "lanyard_flush_seconds_count",
        "process_resident_memory_bytes",
        "process_cpu_seconds_total",
        "lanyard_handshakes_total{outcome=accepted}",
        "lanyard_handshakes_total{outcome=refused_rate}",
        "lanyard_changes_total{doc_kind=agenda,outcome=accepted}",
        "lanyard_changes_total{doc_kind=agenda,outcome=refused}",
    ] {
        assert!(
            v.contains_key(name),
            "{name} missing from the scrape:\n{text}"
        );
    }
    assert!(v["lanyard_sessions"] >= 1.0, "ann is connected:\n{text}");
    assert!(v["lanyard_connections"] >= 1.0);
    assert!(
        v["lanyard_changes_total{doc_kind=agenda,outcome=accepted}"] >= 2.0,
        "{text}"
    );
    assert!(
        v["lanyard_handshakes_total{outcome=accepted}"] >= 3.0,
        "{text}"
    );
    assert!(
        v["lanyard_fanout_seconds_count"] >= 1.0,
        "t2 was fanned out to ann:\n{text}"
    );
    assert!(v["lanyard_flush_seconds_count"] >= 1.0, "{text}");
    assert!(v["lanyard_documents"] >= 2.0, "{text}");
    assert!(v["lanyard_store_bytes"] > 0.0, "{text}");
    assert!(v["lanyard_bytes_sent_total"] > 0.0 && v["lanyard_bytes_received_total"] > 0.0);
    assert!(v["process_resident_memory_bytes"] > 0.0 && v["process_cpu_seconds_total"] > 0.0);
    // The histogram's +Inf bucket holds every observation.
    assert_eq!(
        v["lanyard_fanout_seconds"], v["lanyard_fanout_seconds_count"],
        "{text}"
    );
    assert!(
        text.contains("# TYPE lanyard_fanout_seconds histogram"),
        "{text}"
    );
    bg.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_answer_and_the_admin_api_wants_the_data_directorys_token() {
    let (srv, admin) = start(1).await;
    assert_eq!(get(url(admin, "/healthz"), None).await.0, 200);
    let (status, body) = get(url(admin, "/readyz"), None).await;
    assert_eq!(status, 200, "{body}");
    let recorded = std::fs::read_to_string(srv.dir().join("admin.addr")).unwrap();
    assert_eq!(recorded.trim(), admin.to_string());

    // One connection is all admission lets in: not ready, and why.
    let raw = RawClient::connect(&srv).await.unwrap();
    let mut status = (0, String::new());
    wait_for_async_ready(admin, &mut status).await;
    assert_eq!(status.0, 503, "{}", status.1);
    assert!(
        status.1.contains("admission") && status.1.contains("connections"),
        "{}",
        status.1
    );
    drop(raw);

    let token = std::fs::read_to_string(srv.dir().join("admin-token")).unwrap();
    assert!(token.trim().len() >= 32);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(srv.dir().join("admin-token"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "the token is readable by its owner only");
    }
    let (status, body) = get(url(admin, "/admin/ping"), None).await;
    assert_eq!(status, 401, "{body}");
    assert!(
        body.contains("admin-token"),
        "the refusal says where the token is: {body}"
    );
    let (status, _) = get(url(admin, "/admin/ping"), Some("not-the-token".into())).await;
    assert_eq!(status, 403);
    let (status, body) = get(url(admin, "/admin/ping"), Some(token.trim().into())).await;
    assert_eq!(status, 200, "{body}");
}

/// Polls `/readyz` until it refuses (the connection counted as open).
async fn wait_for_async_ready(admin: SocketAddr, out: &mut (u16, String)) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        *out = get(url(admin, "/readyz"), None).await;
        if out.0 != 200 || std::time::Instant::now() > deadline {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Reads a child's lines into a shared list.
fn collect_lines(
    from: impl std::io::Read + Send + 'static,
) -> std::sync::Arc<std::sync::Mutex<Vec<String>>> {
    use std::io::BufRead as _;
    let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = lines.clone();
    std::thread::spawn(move || {
        for l in std::io::BufReader::new(from).lines().map_while(Result::ok) {
            sink.lock().unwrap().push(l);
        }
    });
    lines
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_connection_is_logged_as_json_with_who_and_why_and_never_a_token() {
    use std::process::{Command, Stdio};
    let bin = lanyard_tests::server_bin_for_tests();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("server");
    let mut child = Command::new(&bin)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--log-format",
            "json",
            "--data",
        ])
        .arg(&data)
        .env("RUST_LOG", "lanyard_server=info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = collect_lines(child.stdout.take().unwrap());
    let err = collect_lines(child.stderr.take().unwrap());
    let listening = |o: &[String]| {
        o.iter()
            .find_map(|l| l.strip_prefix("lanyard-server listening on "))
            .and_then(|rest| rest.split_whitespace().next())
            .map(str::to_string)
    };
    wait_for("the server listens", || {
        listening(&out.lock().unwrap()).is_some()
    })
    .await
    .unwrap();
    let addr = listening(&out.lock().unwrap()).unwrap();
    let invite = Command::new(&bin)
        .args([
            "invite", "--event", "conf", "--role", "attendee", "--user", "ann",
        ])
        .args(["--device", "phone", "--server", &addr, "--data"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(invite.status.success(), "{invite:?}");
    let link = String::from_utf8(invite.stdout).unwrap().trim().to_string();
    let good = lanyard_protocol::JoinLink::parse(&link).unwrap();

    let ann = lanyard_client_core::Client::in_memory().unwrap();
    ann.join(&link).unwrap();
    ann.sync(lanyard_tests::DEADLINE).await.unwrap();

    // A token signed by another server's key: refused, and logged so.
    let other = lanyard_server::Identity::load_or_create(&dir.path().join("other")).unwrap();
    let forged_token = other.sign(&TestServer::claims(Role::Attendee, "bob", "phone"));
    let forged = lanyard_protocol::JoinLink {
        token: forged_token.clone(),
        ..good.clone()
    };
    let bob = lanyard_client_core::Client::in_memory().unwrap();
    bob.join(&forged.to_string()).unwrap();
    assert!(bob.sync(lanyard_tests::DEADLINE).await.is_err());

    let parsed = |lines: &[String]| -> Vec<serde_json::Value> {
        lines
            .iter()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .collect()
    };
    let has = |lines: &[String], msg: &str, user: Option<&str>| {
        parsed(lines).iter().any(|v| {
            v["message"] == msg
                && user.is_none_or(|u| {
                    v["user"] == u && v["device"] == "phone" && v["event"] == "conf"
                })
                && v["peer"]
                    .as_str()
                    .is_some_and(|p| p.starts_with("127.0.0.1:"))
        })
    };
    wait_for("connected, closed and refused are logged", || {
        let lines = err.lock().unwrap();
        has(&lines, "connected", Some("ann"))
            && has(&lines, "closed", Some("ann"))
            && has(&lines, "refused", None)
    })
    .await
    .unwrap_or_else(|e| panic!("{e}: {:#?}", err.lock().unwrap()));
    let _ = child.kill();
    let _ = child.wait();
    let lines = err.lock().unwrap().clone();
    for l in &lines {
        assert!(
            serde_json::from_str::<serde_json::Value>(l).is_ok(),
            "every log line is one JSON object: {l}"
        );
        assert!(
            !l.contains(&good.token) && !l.contains(&forged_token),
            "a token in the log: {l}"
        );
    }
    let closed = parsed(&lines)
        .into_iter()
        .find(|v| v["message"] == "closed")
        .unwrap();
    assert!(
        closed["reason"].as_str().is_some_and(|r| !r.is_empty()),
        "{closed}"
    );
    let refused = parsed(&lines)
        .into_iter()
        .find(|v| v["message"] == "refused")
        .unwrap();
    let why = refused["reason"]
        .as_str()
        .unwrap_or_default()
        .to_lowercase();
    assert!(
        why.contains("token") || why.contains("unauthorized"),
        "{refused}"
    );
}

/// Runs `lanyard-server ARGS…`; its status and stdout.
fn server_cli(args: &[&str], data: &std::path::Path) -> (bool, String, String) {
    let out = std::process::Command::new(lanyard_tests::server_bin_for_tests())
        .args(args)
        .arg("--data")
        .arg(data)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_device_is_cut_off_within_seconds_stops_retrying_and_comes_back_when_lifted() {
    let mut srv = start(1000).await;
    let srv_dir = srv.0.dir().to_path_buf();
    let org = srv.0.device(Role::Organizer, "org", "laptop").unwrap();
    org.client.set_event("Conf", "Europe/Brussels").unwrap();
    org.client.add_session(session("t1")).unwrap();
    org.sync().await.unwrap();
    let phone = srv.0.device(Role::Attendee, "ann", "phone").unwrap();
    let tablet = srv.0.device(Role::Attendee, "ann", "tablet").unwrap();
    let phone_bg = phone.client.start_background(BackgroundOptions::default());
    let tablet_bg = tablet.client.start_background(BackgroundOptions::default());
    let both_connected = || {
        srv.0
            .server()
            .devices(&EventId::new("conf").unwrap())
            .iter()
            .filter(|d| d.user.as_str() == "ann" && d.connected_since.is_some())
            .count()
            == 2
    };
    wait_for("both of ann's devices are connected", both_connected)
        .await
        .unwrap();

    // The device list, through the admin API.
    let admin =
        lanyard_server::admin::AdminClient::find(&srv_dir).expect("the running server is found");
    let list: serde_json::Value =
        serde_json::from_str(&admin.get_text("/admin/events/conf/devices").unwrap()).unwrap();
    let phone_row = list
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["user"] == "ann" && d["device"] == "phone")
        .unwrap_or_else(|| panic!("{list}"));
    assert_eq!(phone_row["role"], "Attendee", "{list}");
    assert!(phone_row["connected_since"].as_u64().is_some(), "{list}");
    assert!(phone_row["last_seen"].as_u64().is_some(), "{list}");
    assert!(
        phone_row["address"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:"),
        "{list}"
    );

    // `lanyard-server revoke` finds the running server and asks it (the
    // binary built first, so the figure is the revocation's).
    let _ = lanyard_tests::server_bin_for_tests();
    let t0 = std::time::Instant::now();
    let (ok, out, err) = tokio::task::spawn_blocking({
        let d = srv_dir.clone();
        move || {
            server_cli(
                &[
                    "revoke", "--event", "conf", "--user", "ann", "--device", "phone",
                ],
                &d,
            )
        }
    })
    .await
    .unwrap();
    assert!(ok, "{out}{err}");
    assert!(out.contains("1 open connection(s) closed"), "{out}");
    wait_for("the phone says it was revoked", || {
        phone
            .client
            .status()
            .last_error
            .is_some_and(|e| e.contains("revoked"))
    })
    .await
    .unwrap();
    let took = t0.elapsed();
    eprintln!(
        "revoke -> the device knows it is revoked: {} ms",
        took.as_millis()
    );
    // The phone does not retry: a sync now is refused the same way, and is
    // not worth retrying.
    let e = phone.sync().await.unwrap_err();
    let e = e.downcast::<lanyard_client_core::SyncError>().unwrap();
    assert!(
        matches!(e, lanyard_client_core::SyncError::Revoked(_)) && !e.is_retryable(),
        "{e}"
    );
    let retries = phone.client.status().retries;
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    assert_eq!(
        phone.client.status().retries,
        retries,
        "a revoked device stops retrying"
    );
    // The tablet was not revoked.
    tablet.sync().await.unwrap();
    phone_bg.stop().await;
    tablet_bg.stop().await;

    // With no server running, revoke and lift work on the store, and the
    // server starts with them.
    srv.0.stop().await;
    let lifted = lanyard_tests::wait_for("lift with the server stopped", || {
        let (ok, out, _) = server_cli(
            &[
                "revoke", "--lift", "--event", "conf", "--user", "ann", "--device", "phone",
            ],
            &srv_dir,
        );
        ok && out.starts_with("lifted")
    })
    .await;
    lifted.unwrap();
    let (ok, out, err) = server_cli(&["revoke", "--event", "conf", "--user", "ann"], &srv_dir);
    assert!(ok && out.contains("in force when it starts"), "{out}{err}");
    srv.0.restart().await.unwrap();
    let e = tablet
        .sync()
        .await
        .unwrap_err()
        .downcast::<lanyard_client_core::SyncError>()
        .unwrap();
    assert!(
        matches!(e, lanyard_client_core::SyncError::Revoked(_)),
        "the user's revocation holds after a restart: {e}"
    );
    let stored = srv.0.server().lift(&lanyard_protocol::Revocation {
        event: EventId::new("conf").unwrap(),
        user: "ann".parse().unwrap(),
        device: None,
    });
    assert!(stored.unwrap());
    phone.sync().await.unwrap();
    tablet.sync().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_taken_under_write_load_restores_every_acknowledged_change_and_serves_them() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    let (mut srv, _admin) = start(1000).await;
    let bin = lanyard_tests::server_bin_for_tests();
    const WRITERS: usize = 4;
    let stop = Arc::new(AtomicBool::new(false));
    // (writer, note key, acknowledged at)
    let acked: Arc<Mutex<Vec<(usize, String, std::time::Instant)>>> = Arc::default();
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let d = srv
            .device(Role::Attendee, &format!("w{w}"), "phone")
            .unwrap();
        let (stop, acked) = (stop.clone(), acked.clone());
        tasks.push(tokio::spawn(async move {
            let mut k = 0;
            while !stop.load(Ordering::Relaxed) {
                let key = format!("s{k}");
                d.client
                    .set_note(&key, &format!("note {k} of w{w}"))
                    .unwrap();
                // Acknowledged once the sync returns with nothing pending.
                if d.sync().await.is_ok() && d.client.status().pending_changes == 0 {
                    acked
                        .lock()
                        .unwrap()
                        .push((w, key, std::time::Instant::now()));
                }
                k += 1;
            }
            d
        }));
    }
    wait_for("writes are acknowledged", || {
        acked.lock().unwrap().len() >= 20
    })
    .await
    .unwrap();

    // The backup starts while the writers go on.
    let out_dir = tempfile::tempdir().unwrap();
    let file = out_dir.path().join("lanyard.backup");
    let started = std::time::Instant::now();
    let before: Vec<(usize, String)> = acked
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, _, at)| *at <= started)
        .map(|(w, k, _)| (*w, k.clone()))
        .collect();
    let (status, stdout) = tokio::task::spawn_blocking({
        let (bin, data, file) = (bin.clone(), srv.dir().to_path_buf(), file.clone());
        move || {
            let o = std::process::Command::new(bin)
                .args(["backup", "--data"])
                .arg(data)
                .arg("--output")
                .arg(file)
                .output()
                .unwrap();
            (
                o.status,
                format!(
                    "{}{}",
                    String::from_utf8_lossy(&o.stdout),
                    String::from_utf8_lossy(&o.stderr)
                ),
            )
        }
    })
    .await
    .unwrap();
    let took = started.elapsed();
    assert!(status.success(), "{stdout}");
    assert!(
        stdout.contains("online"),
        "the running server took it: {stdout}"
    );
    let during = acked.lock().unwrap().len() - before.len();
    stop.store(true, Ordering::Relaxed);
    let mut writers = Vec::new();
    for t in tasks {
        writers.push(t.await.unwrap());
    }
    eprintln!(
        "backup under load: {} writes acknowledged before it started, {during} more while it ran ({} ms), {} bytes",
        before.len(),
        took.as_millis(),
        std::fs::metadata(&file).unwrap().len()
    );

    // Restore: refused over data, done into an empty directory.
    let target = tempfile::tempdir().unwrap();
    let restore = |force: bool| {
        let mut c = std::process::Command::new(&bin);
        c.args(["restore", "--input"])
            .arg(&file)
            .arg("--data")
            .arg(target.path());
        if force {
            c.arg("--force");
        }
        c.output().unwrap()
    };
    std::fs::write(target.path().join("something"), b"x").unwrap();
    let o = restore(false);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("not empty"),
        "{o:?}"
    );
    let o = restore(true);
    assert!(o.status.success(), "{o:?}");
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("restored"),
        "{o:?}"
    );

    // The restored server serves them, with the same keys: the original
    // join links work against it.
    let restored = lanyard_server::Server::start(lanyard_server::ServerOptions::new(
        target.path(),
        "127.0.0.1:0".parse().unwrap(),
    ))
    .await
    .unwrap();
    assert_eq!(restored.pin(), srv.server().pin());
    let addr = restored.local_addr().unwrap();
    for w in 0..WRITERS {
        let d = srv
            .device_via(Role::Attendee, &format!("w{w}"), "tablet", addr)
            .unwrap();
        d.sync().await.unwrap();
        let notes: std::collections::HashSet<String> = d
            .client
            .notes()
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        for (_, key) in before.iter().filter(|(x, _)| *x == w) {
            assert!(
                notes.contains(key),
                "w{w}'s acknowledged note {key} is in the backup"
            );
        }
    }
    restored.shutdown().await;

    // Export for migration, from the running server: every document of the
    // event as an Automerge binary, listed in export.json.
    let exported = out_dir.path().join("export");
    let o = std::process::Command::new(&bin)
        .args(["export", "--event", "conf", "--data"])
        .arg(srv.dir())
        .arg("--output")
        .arg(&exported)
        .output()
        .unwrap();
    assert!(o.status.success(), "{o:?}");
    let list: serde_json::Value =
        serde_json::from_slice(&std::fs::read(exported.join("export.json")).unwrap()).unwrap();
    let ids: Vec<&str> = list["documents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap())
        .collect();
    for w in 0..WRITERS {
        let id = format!("attendee/conf/w{w}");
        assert!(ids.contains(&id.as_str()), "{ids:?}");
        let bytes = std::fs::read(exported.join(format!("{id}.automerge"))).unwrap();
        let doc = automerge::Automerge::load(&bytes).unwrap();
        let notes: std::collections::HashSet<String> =
            lanyard_client_core::docs::NotesDoc::notes(&doc)
                .into_iter()
                .map(|(k, _)| k)
                .collect();
        for (_, key) in before.iter().filter(|(x, _)| *x == w) {
            assert!(notes.contains(key), "w{w}'s note {key} is in the export");
        }
    }

    // A damaged backup is refused with a clear error, and nothing written.
    let bad = out_dir.path().join("cut.backup");
    let bytes = std::fs::read(&file).unwrap();
    std::fs::write(&bad, &bytes[..bytes.len() / 2]).unwrap();
    let empty = tempfile::tempdir().unwrap();
    let o = std::process::Command::new(&bin)
        .args(["restore", "--input"])
        .arg(&bad)
        .arg("--data")
        .arg(empty.path().join("data"))
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("not a usable Lanyard backup"),
        "{o:?}"
    );
    assert!(!empty.path().join("data").exists());
    drop(writers);

    // With no server running, the backup reads the store: the same documents.
    srv.stop().await;
    let offline = out_dir.path().join("offline.backup");
    let mut said = String::new();
    wait_for("an offline backup (once the store is free)", || {
        let o = std::process::Command::new(&bin)
            .args(["backup", "--data"])
            .arg(srv.dir())
            .arg("--output")
            .arg(&offline)
            .output()
            .unwrap();
        said = String::from_utf8_lossy(&o.stdout).into_owned();
        o.status.success()
    })
    .await
    .unwrap();
    assert!(said.contains("no server running"), "{said}");
    let again = tempfile::tempdir().unwrap();
    let o = std::process::Command::new(&bin)
        .args(["restore", "--input"])
        .arg(&offline)
        .arg("--data")
        .arg(again.path().join("data"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{o:?}");
    let docs = |dir: &std::path::Path| {
        let store = lanyard_store::SledStore::open(dir.join("db")).unwrap();
        let mut ids = lanyard_store::Store::doc_ids(&store).unwrap();
        ids.sort();
        ids
    };
    assert_eq!(docs(&again.path().join("data")), docs(srv.dir()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_grafana_dashboard_queries_only_metrics_the_server_exports() {
    let (srv, admin) = start(1000).await;
    let org = srv.device(Role::Organizer, "org", "laptop").unwrap();
    org.client.set_event("Conf", "Europe/Brussels").unwrap();
    org.sync().await.unwrap();
    let (status, text) = get(url(admin, "/metrics"), None).await;
    assert_eq!(status, 200);
    let exported: std::collections::HashSet<&str> = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .collect();
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/grafana-dashboard.json");
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut queries = Vec::new();
    for p in dashboard["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().unwrap() {
            queries.push(t["expr"].as_str().unwrap().to_string());
        }
    }
    for v in dashboard["templating"]["list"].as_array().unwrap() {
        if v["type"] == "query" {
            queries.push(v["query"].as_str().unwrap().to_string());
        }
    }
    assert!(queries.len() >= 8, "{queries:?}");
    let mut used = 0;
    for q in &queries {
        let names = q
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
            .filter(|w| w.starts_with("lanyard_") || w.starts_with("process_"));
        for name in names {
            used += 1;
            assert!(
                exported.contains(name),
                "the dashboard queries {name}, which the server does not export ({q})"
            );
        }
    }
    assert!(used >= 12, "{queries:?}");
}
