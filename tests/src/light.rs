//! A light simulated device for the venue benchmark at 10,000 devices.
//!
//! It speaks the real protocol over real QUIC with the shipped
//! [`ClientSession`] for its own document (it types a note and pushes it),
//! but it does not keep a copy of the agenda: every agenda change that
//! arrives is decoded and its hash computed (what "arrived" means in the
//! benchmark's `fanout_arrival_ms`), and the heads the server announces are
//! kept so a reconnect asks only for what is new. A full device applies
//! every change to its copy; ten thousand of those in one process measure
//! the simulator, not the server (issue 14). A sample of full devices runs
//! beside the light ones and must converge. The seat counts (`seats/EVENT`),
//! shared by every device like the agenda, are not applied either; its own
//! documents (its notes and requests, its seat outcomes) are.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use automerge::{ActorId, Automerge, Change};
use lanyard_client_core::docs::NotesDoc;
use lanyard_protocol::seats::Outcome;
use lanyard_protocol::wire::{self, Hash};
use lanyard_protocol::{
    Backoff, BackoffPolicy, ClientMsg, ClientSession, DocDigest, DocId, DocSyncState, EventId,
    Millis, Replica, RequestId, ServerMsg,
};
use tokio::io::AsyncWriteExt as _;
use tokio::sync::{mpsc, watch};

/// Called with the hashes of agenda changes that just arrived.
pub type Probe = Box<dyn Fn(&[Hash]) + Send + Sync>;

/// What a light device knows, shared with the benchmark.
pub struct Light {
    agenda: DocId,
    own: DocId,
    /// Agenda changes that arrived, by hash, and the heads of every
    /// snapshot or update whose content arrived.
    held: Mutex<HashSet<Hash>>,
    /// The agenda heads of the last update with content.
    heads: Mutex<Vec<Hash>>,
    /// Bumped on every agenda update.
    updates: watch::Sender<u64>,
    connected: AtomicBool,
    retries: AtomicU64,
    last_error: Mutex<Option<String>>,
    /// Its own document (the note), as the shipped client session keeps it.
    replica: Mutex<Replica>,
    probe: Mutex<Option<Probe>>,
    /// Wakes the connection to push a local edit (a seat request).
    kick: tokio::sync::Notify,
    /// The TLS configuration, kept across reconnects so sessions resume.
    tls: Mutex<Option<Arc<quinn::crypto::rustls::QuicClientConfig>>>,
}

/// Where and as whom a light device connects.
#[derive(Clone)]
pub struct LightLink {
    /// The server (or the impairment proxy).
    pub addr: SocketAddr,
    /// The certificate pin.
    pub pin: String,
    /// The event.
    pub event: EventId,
    /// The signed token.
    pub token: String,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Light {
    /// A device of `own` that typed `note` on `session` while offline.
    pub fn new(
        event: &EventId,
        own: DocId,
        actor: [u8; 16],
        session: &str,
        note: &str,
    ) -> anyhow::Result<Arc<Light>> {
        let mut doc = Automerge::new().with_actor(ActorId::from(&actor[..]));
        NotesDoc::set(&mut doc, &own.to_string(), session, note, 4096, 0)?;
        let mut replica = Replica::new(ActorId::from(&actor[..]));
        replica.set_installation(actor);
        replica.insert(own.clone(), doc, DocSyncState::default());
        let (updates, _) = watch::channel(0);
        Ok(Arc::new(Light {
            agenda: DocId::Agenda(event.clone()),
            own,
            held: Mutex::new(HashSet::new()),
            heads: Mutex::new(Vec::new()),
            updates,
            connected: AtomicBool::new(false),
            retries: AtomicU64::new(0),
            last_error: Mutex::new(None),
            replica: Mutex::new(replica),
            probe: Mutex::new(None),
            kick: tokio::sync::Notify::new(),
            tls: Mutex::new(None),
        }))
    }

    /// Whether the agenda change `hash` arrived (or a snapshot holding it).
    pub fn holds(&self, hash: &Hash) -> bool {
        lock(&self.held).contains(hash)
    }

    /// The agenda heads of the last update with content.
    pub fn heads(&self) -> Vec<Hash> {
        lock(&self.heads).clone()
    }

    /// Wakes on every agenda update.
    pub fn updates(&self) -> watch::Receiver<u64> {
        self.updates.subscribe()
    }

    /// Connected now.
    pub fn connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    /// Reconnections.
    pub fn retries(&self) -> u64 {
        self.retries.load(Ordering::Relaxed)
    }

    /// The last connection error.
    pub fn last_error(&self) -> Option<String> {
        lock(&self.last_error).clone()
    }

    /// Local changes of its own document the server has not acknowledged.
    pub fn pending(&self) -> usize {
        lock(&self.replica).pending_count()
    }

    /// Sets (or clears) the arrival probe.
    pub fn set_probe(&self, probe: Option<Probe>) {
        *lock(&self.probe) = probe;
    }

    /// An agenda update arrived: hash its changes, keep its heads.
    fn agenda_update(&self, changes: &[Vec<u8>], content: bool, heads: &[Hash]) {
        let hashes: Vec<Hash> = changes
            .iter()
            .filter_map(|b| Change::try_from(b.as_slice()).ok())
            .map(|c| c.hash().0)
            .collect();
        if let Some(p) = lock(&self.probe).as_ref() {
            if !hashes.is_empty() {
                p(&hashes);
            }
        }
        {
            let mut held = lock(&self.held);
            held.extend(hashes);
            if content {
                held.extend(heads.iter().copied());
            }
        }
        if content && !heads.is_empty() {
            *lock(&self.heads) = heads.to_vec();
        }
        self.updates.send_modify(|n| *n += 1);
    }

    /// Runs one connection until it fails or `stop` is set.
    async fn session(
        self: &Arc<Self>,
        endpoint: &quinn::Endpoint,
        config: quinn::ClientConfig,
        link: &LightLink,
        stop: &mut watch::Receiver<bool>,
    ) -> anyhow::Result<()> {
        // The app's handshake timeout: a handshake stuck behind a lost
        // flight is abandoned and tried afresh.
        let connecting = endpoint.connect_with(config, link.addr, "localhost")?;
        let conn = tokio::time::timeout(lanyard_client_core::HANDSHAKE_TIMEOUT, connecting)
            .await
            .map_err(|_| {
                anyhow::anyhow!(
                    "handshake: no answer within {:?}",
                    lanyard_client_core::HANDSHAKE_TIMEOUT
                )
            })?
            .context("handshake")?;
        let (mut send, recv) = conn.open_bi().await?;
        let (mut session, mut hello) = {
            let replica = lock(&self.replica);
            ClientSession::start(link.event.clone(), link.token.clone(), &replica)
        };
        // The agenda's heads go in the Hello: a reconnect gets what is new.
        if let Some(ClientMsg::Hello { docs, .. }) = hello.first_mut() {
            let heads = self.heads();
            docs.push(DocDigest {
                doc: self.agenda.clone(),
                heads: heads.clone(),
                base: heads,
            });
        }
        let mut out = Vec::new();
        for m in &hello {
            out.extend(wire::encode(m));
        }
        send.write_all(&out).await?;
        self.connected.store(true, Ordering::Relaxed);
        let (tx, mut rx) = mpsc::unbounded_channel::<Vec<u8>>();
        let readers = tokio::spawn({
            let conn = conn.clone();
            async move {
                crate::forward_frames(recv, tx.clone());
                while let Ok(uni) = conn.accept_uni().await {
                    crate::forward_frames(uni, tx.clone());
                }
            }
        });
        let result = loop {
            let body = tokio::select! {
                b = rx.recv() => b,
                _ = stop.changed() => break Ok(()),
                _ = self.kick.notified() => {
                    let pushes = {
                        let replica = lock(&self.replica);
                        session.local_change(&replica, &self.own)
                    };
                    let mut out = Vec::new();
                    for m in &pushes {
                        out.extend(wire::encode(m));
                    }
                    if !out.is_empty() {
                        send.write_all(&out).await?;
                    }
                    continue;
                }
            };
            let Some(body) = body else {
                break Err(anyhow::anyhow!(
                    "connection lost: {}",
                    conn.close_reason()
                        .map_or("streams ended".into(), |r| r.to_string())
                ));
            };
            let msg: ServerMsg = wire::decode(&body)?;
            let own_msg = match msg {
                ServerMsg::Welcome { docs, limits } => {
                    // The seat counts are shared by every device like the
                    // agenda: a light device lets them go by unapplied.
                    let docs = docs
                        .into_iter()
                        .filter(|u| !self.is_counts(&u.doc))
                        .collect::<Vec<_>>();
                    let (agenda, own): (Vec<_>, Vec<_>) =
                        docs.into_iter().partition(|u| u.doc == self.agenda);
                    for u in agenda {
                        let content = !u.is_empty();
                        self.agenda_update(&u.changes, content, &u.heads);
                    }
                    Some(ServerMsg::Welcome { docs: own, limits })
                }
                ServerMsg::Update(u) if u.doc == self.agenda => {
                    let content = !u.is_empty();
                    self.agenda_update(&u.changes, content, &u.heads);
                    None
                }
                ServerMsg::Heads { doc, .. } if doc == self.agenda => None,
                ServerMsg::Update(u) if self.is_counts(&u.doc) => None,
                ServerMsg::Heads { doc, .. } if self.is_counts(&doc) => None,
                other => Some(other),
            };
            if let Some(m) = own_msg {
                let reply = {
                    let mut replica = lock(&self.replica);
                    session.handle(&mut replica, m)
                };
                let reply = match reply {
                    Ok(r) => r,
                    Err(e) => break Err(e.into()),
                };
                let mut out = Vec::new();
                for m in &reply.send {
                    out.extend(wire::encode(m));
                }
                if !out.is_empty() {
                    send.write_all(&out).await?;
                }
                // Its own documents changed (a seat outcome, an Ack).
                self.updates.send_modify(|n| *n += 1);
            }
        };
        readers.abort();
        self.connected.store(false, Ordering::Relaxed);
        let _ = send.shutdown().await;
        conn.close(0u32.into(), b"bye");
        result
    }
}

/// A light device's background connection: reconnects with the shipped
/// backoff until stopped.
pub struct LightSync {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl LightSync {
    /// Starts connecting `light` over `endpoint`.
    pub fn start(
        light: Arc<Light>,
        endpoint: quinn::Endpoint,
        link: LightLink,
        policy: BackoffPolicy,
    ) -> anyhow::Result<LightSync> {
        let crypto = {
            let mut tls = lock(&light.tls);
            match tls.as_ref() {
                Some(c) => c.clone(),
                None => {
                    let c = lanyard_client_core::tls::pinned_crypto(&link.pin)?;
                    *tls = Some(c.clone());
                    c
                }
            }
        };
        let (stop, mut stop_rx) = watch::channel(false);
        let task = tokio::spawn(async move {
            let mut backoff = Backoff::new(policy);
            loop {
                let started = Millis::from_system(std::time::SystemTime::now());
                let config =
                    lanyard_client_core::tls::client_config(crypto.clone(), Duration::from_secs(2));
                let r = light.session(&endpoint, config, &link, &mut stop_rx).await;
                if *stop_rx.borrow() {
                    return;
                }
                if let Err(e) = r {
                    *lock(&light.last_error) = Some(format!("{e:#}"));
                }
                light.retries.fetch_add(1, Ordering::Relaxed);
                let ended = Millis::from_system(std::time::SystemTime::now());
                let delay = backoff.next_delay(started, ended, rand::random::<f64>());
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = stop_rx.changed() => return,
                }
            }
        });
        Ok(LightSync { stop, task })
    }

    /// Stops and waits for the connection to close.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

impl Light {
    /// Whether `doc` is the event's seat counts (shared by every device,
    /// not kept by a light device, like the agenda).
    fn is_counts(&self, doc: &DocId) -> bool {
        matches!(doc, DocId::SeatCounts(e) if e == self.agenda.event())
    }

    /// Writes a seat request for `session` into its own document and has
    /// the live connection push it (or the next one, pipelined behind its
    /// Hello). Returns the request's id.
    pub fn reserve(&self, session: &lanyard_protocol::SessionId) -> anyhow::Result<RequestId> {
        let id = {
            let mut replica = lock(&self.replica);
            let doc = &mut replica.get_or_create(&self.own).doc;
            lanyard_client_core::seats::write_request(
                doc,
                &self.own.to_string(),
                session,
                lanyard_protocol::seats::RequestKind::Reserve,
                0,
            )?
        };
        self.kick.notify_one();
        Ok(id)
    }

    /// The server's outcome of `request`, once its seats document holds it.
    pub fn outcome(
        &self,
        request: &RequestId,
        session: &lanyard_protocol::SessionId,
    ) -> Option<Outcome> {
        let replica = lock(&self.replica);
        let DocId::Attendee(event, user) = &self.own else {
            return None;
        };
        let (event, user) = (event.clone(), user.clone());
        let seats = &replica.get(&DocId::Seats(event, user.clone()))?.doc;
        let decided = lanyard_protocol::seats::doc::read_decided(seats);
        decided.get(request.as_str())?;
        lanyard_protocol::seats::doc::read_outcomes(seats, &user)
            .into_iter()
            .find(|o| o.session == *session)
    }

    /// The document the device writes.
    pub fn own_doc(&self) -> &DocId {
        &self.own
    }
}
