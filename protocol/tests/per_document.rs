//! State per document: a push holds only its document's lock, so work on
//! one document never waits for another, and the core hands actions over
//! while the documents they depend on are locked, so a device never gets a
//! document's frames out of order (its Welcome first).

#![allow(clippy::unwrap_used)]

use std::sync::mpsc;
use std::time::Duration;

use automerge::transaction::Transactable as _;
use automerge::{ActorId, ROOT};
use lanyard_protocol::testing::{sent_to, Fixture, IN_AN_HOUR, NOW};
use lanyard_protocol::{
    ClientMsg, ClientSession, ConnId, DocId, DocPush, Millis, Replica, Role, ServerAction,
    ServerMsg, Sink, UserId,
};

/// Long enough for a loaded machine; only reached if a lock is shared.
const DEADLINE: Duration = Duration::from_secs(60);

struct Device {
    conn: ConnId,
    replica: Replica,
    session: ClientSession,
}

fn join(f: &mut Fixture, conn: ConnId, user: &str, role: Role, actor: u8) -> Device {
    let token = f.token(user, role, "phone", IN_AN_HOUR);
    let mut replica = Replica::new(ActorId::from(&[actor; 16][..]));
    let session = f.sync(conn, token, &mut replica);
    Device {
        conn,
        replica,
        session,
    }
}

/// One local change of `doc`, as the push messages the device would send.
fn edit(dev: &mut Device, doc: &DocId, key: &str) -> Vec<ClientMsg> {
    let mut tx = dev.replica.get_or_create(doc).doc.transaction();
    tx.put(ROOT, key, "v").unwrap();
    tx.commit();
    dev.session.local_change(&dev.replica, doc)
}

/// One local change of `doc` pushed through the core and the server's
/// answer delivered back to the device: the server's actions.
fn push(
    f: &mut Fixture,
    dev: &mut Device,
    doc: &DocId,
    key: &str,
    now: Millis,
) -> Vec<ServerAction> {
    let msgs = edit(dev, doc, key);
    let actions = f.handle(now, dev.conn, msgs);
    for m in sent_to(dev.conn, &actions) {
        dev.session.handle(&mut dev.replica, m).unwrap();
    }
    actions
}

/// Routes `msgs` through the core: the push they carry, not yet run.
fn route(f: &mut Fixture, conn: ConnId, msgs: Vec<ClientMsg>) -> DocPush {
    let mut out = Vec::new();
    let mut push = None;
    for m in msgs {
        if let Some(p) = f.server.route(NOW, conn, m, &mut out) {
            assert!(push.is_none(), "one push");
            push = Some(p);
        }
    }
    assert!(out.is_empty(), "nothing before the push runs: {out:?}");
    push.expect("a push to an existing document is routed, not run")
}

/// A sink that stops inside `take` until told to go on: the push that calls
/// it holds its document's lock all that time.
struct Stalling {
    inside: mpsc::Sender<()>,
    go_on: mpsc::Receiver<()>,
    got: Vec<ServerAction>,
}

impl Sink for Stalling {
    fn take(&mut self, actions: Vec<ServerAction>) -> bool {
        self.inside.send(()).unwrap();
        self.go_on.recv_timeout(DEADLINE).unwrap();
        self.got.extend(actions);
        true
    }
}

#[test]
fn a_push_to_one_document_runs_while_another_document_is_locked() {
    let mut f = Fixture::new(9);
    let mut org = join(&mut f, 1, "org", Role::Organizer, 1);
    let mut ann = join(&mut f, 2, "ann", Role::Attendee, 2);
    let agenda = f.agenda();
    let own = DocId::Attendee(f.event.clone(), UserId::new("ann").unwrap());
    // Both documents exist (a document's first push runs under the core).
    for (dev, doc) in [(&mut org, &agenda), (&mut ann, &own)] {
        let actions = push(&mut f, dev, doc, "first", NOW);
        assert!(
            sent_to(dev.conn, &actions)
                .iter()
                .any(|m| matches!(m, ServerMsg::Ack { .. })),
            "{actions:?}"
        );
    }
    let agenda_push = route(&mut f, org.conn, edit(&mut org, &agenda, "second"));
    let note_push = route(&mut f, ann.conn, edit(&mut ann, &own, "second"));
    assert_eq!(agenda_push.doc(), &agenda);
    assert_eq!(note_push.doc(), &own);

    // The agenda push stops while its document is locked.
    let (inside_tx, inside) = mpsc::channel();
    let (go_on, go_on_rx) = mpsc::channel();
    let stalled = std::thread::spawn(move || {
        let mut sink = Stalling {
            inside: inside_tx,
            go_on: go_on_rx,
            got: Vec::new(),
        };
        let done = agenda_push.run(&mut sink);
        (done, sink.got)
    });
    inside.recv_timeout(DEADLINE).unwrap();

    // Meanwhile the note is pushed and acknowledged on another thread, and
    // the core itself stays free.
    let (done_tx, done_rx) = mpsc::channel();
    let other = std::thread::spawn(move || {
        let mut out = Vec::new();
        let done = note_push.run(&mut out);
        done_tx.send(()).unwrap();
        (done, out)
    });
    done_rx
        .recv_timeout(DEADLINE)
        .expect("the note's push waited for the agenda's lock");
    let (note_done, note_actions) = other.join().unwrap();
    f.server.pushed(NOW, note_done);
    assert!(
        matches!(
            sent_to(ann.conn, &note_actions).as_slice(),
            [ServerMsg::Ack { doc, .. }] if *doc == own
        ),
        "{note_actions:?}"
    );
    assert!(note_actions
        .iter()
        .any(|a| matches!(a, ServerAction::Persist { doc, .. } if *doc == own)));
    assert_eq!(
        f.server.session_count(),
        2,
        "the core answers while a document is locked"
    );

    // The agenda push finishes: persisted, acknowledged, fanned out to ann.
    go_on.send(()).unwrap();
    let (agenda_done, agenda_actions) = stalled.join().unwrap();
    f.server.pushed(NOW, agenda_done);
    assert!(agenda_actions
        .iter()
        .any(|a| matches!(a, ServerAction::Persist { doc, .. } if *doc == agenda)));
    assert!(matches!(
        sent_to(org.conn, &agenda_actions).as_slice(),
        [ServerMsg::Ack { .. }]
    ));
    assert!(matches!(
        sent_to(ann.conn, &agenda_actions).as_slice(),
        [ServerMsg::Update(u)] if u.doc == agenda
    ));
    assert_eq!(f.server.stats().changes_accepted, 4);
    assert!(
        f.server.poll_timeout().is_some(),
        "the agenda's beacon is due"
    );
}

#[test]
fn a_device_gets_its_welcome_before_a_push_routed_earlier_reaches_it() {
    let mut f = Fixture::new(10);
    let mut org = join(&mut f, 1, "org", Role::Organizer, 1);
    let agenda = f.agenda();
    push(&mut f, &mut org, &agenda, "first", NOW);
    // The organizer's next push is routed (not yet run) when ann connects.
    let routed = route(&mut f, org.conn, edit(&mut org, &agenda, "second"));
    let mut order: Vec<ServerAction> = Vec::new();
    f.server.connect(2);
    let token = f.token("ann", Role::Attendee, "phone", IN_AN_HOUR);
    let replica = Replica::new(ActorId::from(&[2; 16][..]));
    let (_, hello) = ClientSession::start(f.event.clone(), token, &replica);
    for m in hello {
        assert!(f.server.route(NOW, 2, m, &mut order).is_none());
    }
    let done = routed.run(&mut order);
    f.server.pushed(NOW, done);
    let to_ann = sent_to(2, &order);
    assert!(
        matches!(to_ann.first(), Some(ServerMsg::Welcome { .. })),
        "{to_ann:?}"
    );
    assert!(
        to_ann
            .iter()
            .any(|m| matches!(m, ServerMsg::Update(u) if u.doc == agenda)),
        "ann, subscribed by her Welcome, gets the change: {to_ann:?}"
    );
}

#[test]
fn devices_joining_at_once_share_one_encoded_snapshot_frame() {
    let mut f = Fixture::new(11);
    let mut org = join(&mut f, 1, "org", Role::Organizer, 1);
    let agenda = f.agenda();
    // An agenda of many small changes, ten pushes a second (within the
    // request budget): a new device gets one snapshot.
    for i in 0..400 {
        let key = format!("session-{i:04}-in-the-main-hall");
        push(
            &mut f,
            &mut org,
            &agenda,
            &key,
            NOW + Duration::from_millis(100 * i),
        );
    }
    let snapshot_frames: Vec<bytes::Bytes> = (2..5)
        .map(|conn| {
            f.server.connect(conn);
            let token = f.token(&format!("user{conn}"), Role::Attendee, "phone", IN_AN_HOUR);
            let replica = Replica::new(ActorId::from(&[conn as u8; 16][..]));
            let (_, hello) = ClientSession::start(f.event.clone(), token, &replica);
            let actions = f.handle(NOW, conn, hello);
            let frames: Vec<bytes::Bytes> = actions
                .iter()
                .filter_map(|a| match a {
                    ServerAction::Send { conn: c, frame, .. } if *c == conn => Some(frame.clone()),
                    _ => None,
                })
                .filter(|frame| {
                    matches!(
                        lanyard_protocol::testing::decode_frame(frame),
                        ServerMsg::Update(u) if u.doc == agenda && !u.snapshot.is_empty()
                    )
                })
                .collect();
            assert_eq!(frames.len(), 1, "one snapshot update for device {conn}");
            frames.into_iter().next().unwrap()
        })
        .collect();
    for other in &snapshot_frames[1..] {
        assert_eq!(other, &snapshot_frames[0]);
        assert_eq!(
            other.as_ptr(),
            snapshot_frames[0].as_ptr(),
            "the same encoded frame, not a copy per device"
        );
    }
}
