//! Focused tests of the sans-IO sessions: limits, push splitting, base monotonicity.
#![allow(clippy::unwrap_used)]

use automerge::transaction::Transactable as _;
use automerge::{ActorId, ReadDoc as _, ROOT};
use std::collections::HashSet;

use automerge::{Change, ChangeHash};
use lanyard_protocol::client::MAX_PUSH_CHANGES;
use lanyard_protocol::server::{CATCH_UP_CHUNK_BYTES, SNAPSHOT_MIN_BYTES};
use lanyard_protocol::testing::{self, deflate_bomb, hello, Fixture, NOW};
use lanyard_protocol::wire;
use lanyard_protocol::{
    ClientMsg, ClientSession, DocId, EventId, Limits, RefusalReason, Replica, Role, ServerAction,
    ServerCore, ServerMsg, UserId,
};
use rand::{Rng as _, SeedableRng as _};

/// A server with `limits`, a token of `ann`'s phone valid for a minute, and the event.
fn setup(limits: Limits) -> (ServerCore, String, EventId) {
    let f = Fixture::with_limits(9, limits);
    let token = f.token("ann", Role::Attendee, "phone", NOW.as_secs() + 60);
    (f.server, token, f.event)
}

fn own(event: &EventId) -> DocId {
    DocId::Attendee(event.clone(), UserId::new("ann").unwrap())
}

fn put(replica: &mut Replica, doc: &DocId, key: &str, value: &str) {
    let mut tx = replica.get_or_create(doc).doc.transaction();
    tx.put(ROOT, key, value).unwrap();
    tx.commit();
}

/// Runs messages through the server and returns its replies, in order.
fn exchange(server: &mut ServerCore, conn: u64, msgs: Vec<ClientMsg>) -> Vec<ServerMsg> {
    testing::exchange(server, NOW, conn, msgs)
        .into_iter()
        .map(|(_, m)| m)
        .collect()
}

#[test]
fn an_oversized_change_is_refused_alone_and_named() {
    let (mut server, token, event) = setup(Limits {
        max_change: 300,
        ..Limits::default()
    });
    let doc = own(&event);
    let mut replica = Replica::new(ActorId::from(&[1u8; 16][..]));
    put(&mut replica, &doc, "big", &"x".repeat(2000));
    // An independent change made by another actor of the same user.
    let mut other = automerge::Automerge::new().with_actor(ActorId::from(&[2u8; 16][..]));
    let mut tx = other.transaction();
    tx.put(ROOT, "small", "ok").unwrap();
    tx.commit();
    replica
        .get_or_create(&doc)
        .doc
        .apply_changes(other.get_changes(&[]))
        .unwrap();
    let (mut session, msgs) = ClientSession::start(event, token, &replica);
    server.connect(1);
    let replies = exchange(&mut server, 1, msgs);
    let mut refused = None;
    for r in replies {
        if let ServerMsg::Refused {
            reason, changes, ..
        } = &r
        {
            refused = Some((*reason, changes.clone()));
        }
        session.handle(&mut replica, r).unwrap();
    }
    let (reason, changes) = refused.expect("a refusal");
    assert_eq!(reason, RefusalReason::TooLarge);
    assert_eq!(changes.len(), 1);
    let held = server.doc(&own(&EventId::new("conf").unwrap())).unwrap();
    assert!(
        held.get(ROOT, "small").unwrap().is_some(),
        "the small change got through"
    );
    assert!(held.get(ROOT, "big").unwrap().is_none());
    assert_eq!(replica.pending_count(), 0);
    assert_eq!(replica.refusals().len(), 1);
    assert!(session.is_settled(&replica));
}

#[test]
fn many_pending_changes_are_pushed_in_pieces_within_the_limits() {
    let (_, token, event) = setup(Limits::default());
    let doc = own(&event);
    let mut replica = Replica::new(ActorId::from(&[1u8; 16][..]));
    for i in 0..(2 * MAX_PUSH_CHANGES + 5) {
        put(&mut replica, &doc, &format!("k{i}"), "v");
    }
    let (_, msgs) = ClientSession::start(event, token, &replica);
    let pushes: Vec<usize> = msgs
        .iter()
        .filter_map(|m| match m {
            ClientMsg::Push { changes, .. } => {
                assert!(
                    changes.iter().map(Vec::len).sum::<usize>()
                        <= lanyard_protocol::Limits::default().max_push_bytes()
                );
                Some(changes.len())
            }
            _ => None,
        })
        .collect();
    assert_eq!(pushes, vec![MAX_PUSH_CHANGES, MAX_PUSH_CHANGES, 5]);
}

#[test]
fn a_late_ack_with_older_heads_does_not_move_the_base_back() {
    let (mut server, token, event) = setup(Limits::default());
    let doc = own(&event);
    let mut replica = Replica::new(ActorId::from(&[1u8; 16][..]));
    put(&mut replica, &doc, "a", "1");
    let (mut session, msgs) = ClientSession::start(event, token, &replica);
    server.connect(1);
    let first = exchange(&mut server, 1, msgs);
    for r in first.clone() {
        session.handle(&mut replica, r).unwrap();
    }
    let old_ack = first
        .into_iter()
        .find(|m| matches!(m, ServerMsg::Ack { .. }))
        .unwrap();
    put(&mut replica, &doc, "b", "2");
    let msgs = session.local_change(&replica, &doc);
    for r in exchange(&mut server, 1, msgs) {
        session.handle(&mut replica, r).unwrap();
    }
    let base = replica.get(&doc).unwrap().sync.base.clone();
    assert_eq!(replica.pending_count(), 0);
    // The first Ack arrives again (duplicated or late): nothing becomes pending.
    let out = session.handle(&mut replica, old_ack).unwrap();
    assert!(out.send.is_empty(), "no re-push: {:?}", out.send);
    assert_eq!(replica.get(&doc).unwrap().sync.base, base);
    assert_eq!(replica.pending_count(), 0);
}

/// A replica of `ann` holding `n` changes of `bytes` each: compressible words,
/// or seeded random letters that do not compress.
fn big_replica(event: &EventId, n: usize, bytes: usize, compressible: bool) -> Replica {
    let doc = own(event);
    let mut replica = Replica::new(ActorId::from(&[1u8; 16][..]));
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    for i in 0..n {
        let text: String = if compressible {
            "session notes ".repeat(bytes / 14)
        } else {
            (0..bytes)
                .map(|_| char::from(b'a' + rng.random_range(0..26u8)))
                .collect()
        };
        put(&mut replica, &doc, &format!("n{i}"), &text);
    }
    replica
}

/// Pushes everything `replica` holds to the server on connection `conn`.
fn upload(server: &mut ServerCore, conn: u64, token: &str, event: &EventId, replica: &mut Replica) {
    let (mut session, msgs) = ClientSession::start(event.clone(), token.to_owned(), replica);
    server.connect(conn);
    for r in exchange(server, conn, msgs) {
        session.handle(replica, r).unwrap();
    }
    assert!(session.is_settled(replica));
    server.disconnect(conn);
}

fn updates_of(replies: &[ServerMsg], doc: &DocId) -> Vec<lanyard_protocol::DocUpdate> {
    replies
        .iter()
        .flat_map(|m| match m {
            ServerMsg::Welcome { docs, .. } => docs.clone(),
            ServerMsg::Update(u) => vec![u.clone()],
            _ => Vec::new(),
        })
        .filter(|u| &u.doc == doc && !u.is_empty())
        .collect()
}

#[test]
fn a_first_download_comes_as_one_compressed_snapshot() {
    let (mut server, token, event) = setup(Limits::default());
    let doc = own(&event);
    let mut phone = big_replica(&event, 200, 500, true);
    upload(&mut server, 1, &token, &event, &mut phone);
    let raw: usize = phone
        .get(&doc)
        .unwrap()
        .doc
        .get_changes(&[])
        .iter()
        .map(|c| c.raw_bytes().len())
        .sum();
    assert!(raw >= SNAPSHOT_MIN_BYTES, "{raw}");

    // A second device holding nothing gets the document as one snapshot,
    // after a Welcome that stays small.
    let mut laptop = Replica::new(ActorId::from(&[2u8; 16][..]));
    let (mut session, msgs) = ClientSession::start(event, token, &laptop);
    server.connect(2);
    let replies = exchange(&mut server, 2, msgs);
    let ServerMsg::Welcome { docs, .. } = &replies[0] else {
        panic!("expected a Welcome first: {replies:?}");
    };
    assert!(docs.iter().all(|u| u.is_empty()), "{docs:?}");
    session.handle(&mut laptop, replies[0].clone()).unwrap();
    assert!(
        !session.is_settled(&laptop),
        "the Welcome announces a catch-up: not settled before it arrives"
    );
    let updates = updates_of(&replies, &doc);
    assert_eq!(updates.len(), 1, "one update");
    let snap = &updates[0];
    assert!(snap.changes.is_empty());
    assert!(
        snap.snapshot.len() * 2 <= raw,
        "snapshot {} B for {raw} B of changes",
        snap.snapshot.len()
    );
    for r in replies.into_iter().skip(1) {
        session.handle(&mut laptop, r).unwrap();
    }
    let server_heads = server.doc(&doc).unwrap().get_heads();
    assert_eq!(laptop.get(&doc).unwrap().doc.get_heads(), server_heads);
    assert!(session.is_settled(&laptop));
    let base: Vec<ChangeHash> = laptop
        .get(&doc)
        .unwrap()
        .sync
        .base
        .iter()
        .map(|h| ChangeHash(*h))
        .collect();
    assert_eq!(base, server_heads, "the snapshot's heads become the base");
    let value = |r: &Replica, key: &str| {
        r.get(&doc)
            .unwrap()
            .doc
            .get(ROOT, key)
            .unwrap()
            .map(|(v, _)| v.to_string())
    };
    assert!(value(&phone, "n199").is_some());
    assert_eq!(value(&laptop, "n199"), value(&phone, "n199"));
}

#[test]
fn an_interrupted_catch_up_resumes_where_it_stopped() {
    let (mut server, token, event) = setup(Limits::default());
    let doc = own(&event);
    // Incompressible notes: the catch-up comes as batches, not a snapshot.
    let mut phone = big_replica(&event, 300, 800, false);
    upload(&mut server, 1, &token, &event, &mut phone);
    let all = phone.get(&doc).unwrap().doc.get_changes(&[]);

    // The laptop holds the first 20 changes, never synced.
    let mut laptop = Replica::new(ActorId::from(&[2u8; 16][..]));
    laptop
        .get_or_create(&doc)
        .doc
        .apply_changes(all[..20].iter().cloned())
        .unwrap();
    let (mut session, msgs) = ClientSession::start(event.clone(), token.clone(), &laptop);
    server.connect(2);
    let replies = exchange(&mut server, 2, msgs);
    let batches = updates_of(&replies, &doc);
    assert!(batches.len() >= 3, "{} batches", batches.len());
    for b in &batches {
        assert!(b.snapshot.is_empty());
        assert!(
            b.payload_len() <= CATCH_UP_CHUNK_BYTES,
            "{}",
            b.payload_len()
        );
    }
    let first_sent: HashSet<ChangeHash> = batches
        .iter()
        .flat_map(|b| &b.changes)
        .map(|raw| Change::try_from(raw.as_slice()).unwrap().hash())
        .collect();
    assert_eq!(
        first_sent.len(),
        all.len() - 20,
        "exactly the missing changes"
    );

    // The connection drops after the Welcome and two batches.
    let mut delivered = 0;
    for r in replies {
        if matches!(r, ServerMsg::Update(_)) {
            if delivered == 2 {
                break;
            }
            delivered += 1;
        }
        session.handle(&mut laptop, r).unwrap();
    }
    server.disconnect(2);
    let got: HashSet<ChangeHash> = batches[..2]
        .iter()
        .flat_map(|b| &b.changes)
        .map(|raw| Change::try_from(raw.as_slice()).unwrap().hash())
        .collect();

    // The reconnect resumes: nothing already applied is sent again.
    let (mut session, msgs) = ClientSession::start(event, token, &laptop);
    server.connect(3);
    let replies = exchange(&mut server, 3, msgs);
    let resent: Vec<ChangeHash> = updates_of(&replies, &doc)
        .iter()
        .flat_map(|b| b.changes.clone())
        .map(|raw| Change::try_from(raw.as_slice()).unwrap().hash())
        .collect();
    assert_eq!(resent.len(), all.len() - 20 - got.len());
    assert!(resent.iter().all(|h| !got.contains(h)));
    for r in replies {
        session.handle(&mut laptop, r).unwrap();
    }
    assert_eq!(
        laptop.get(&doc).unwrap().doc.get_heads(),
        server.doc(&doc).unwrap().get_heads()
    );
    assert!(session.is_settled(&laptop));
}

#[test]
fn a_corrupt_snapshot_is_a_clear_error_and_leaves_the_document_as_it_was() {
    let (_, token, event) = setup(Limits::default());
    let doc = own(&event);
    let mut replica = Replica::new(ActorId::from(&[1u8; 16][..]));
    put(&mut replica, &doc, "kept", "yes");
    let before = replica.get(&doc).unwrap().doc.get_heads();
    let (mut session, _) = ClientSession::start(event, token, &replica);
    let err = session
        .handle(
            &mut replica,
            ServerMsg::Update(lanyard_protocol::DocUpdate {
                doc: doc.clone(),
                changes: Vec::new(),
                snapshot: b"not an automerge document".to_vec(),
                heads: Vec::new(),
            }),
        )
        .unwrap_err();
    assert!(
        matches!(&err, lanyard_protocol::SessionError::BadServerMessage(m) if m.contains(&doc.to_string())),
        "{err:?}"
    );
    assert_eq!(replica.get(&doc).unwrap().doc.get_heads(), before);
}

#[test]
fn a_snapshot_merges_into_a_device_that_already_holds_part_of_the_document() {
    let (mut server, token, event) = setup(Limits::default());
    let doc = own(&event);
    let mut phone = big_replica(&event, 200, 500, true);
    upload(&mut server, 1, &token, &event, &mut phone);
    let all = phone.get(&doc).unwrap().doc.get_changes(&[]);
    // The laptop holds a few of the changes and one of its own.
    let mut laptop = Replica::new(ActorId::from(&[2u8; 16][..]));
    laptop
        .get_or_create(&doc)
        .doc
        .apply_changes(all[..5].iter().cloned())
        .unwrap();
    put(&mut laptop, &doc, "mine", "offline");
    let (mut session, msgs) = ClientSession::start(event, token, &laptop);
    server.connect(2);
    let replies = exchange(&mut server, 2, msgs);
    assert!(
        updates_of(&replies, &doc)
            .iter()
            .any(|u| !u.snapshot.is_empty()),
        "sent as a snapshot"
    );
    for r in replies {
        session.handle(&mut laptop, r).unwrap();
    }
    let d = &laptop.get(&doc).unwrap().doc;
    assert!(d.get(ROOT, "n199").unwrap().is_some());
    assert!(
        d.get(ROOT, "mine").unwrap().is_some(),
        "its own change kept"
    );
    assert_eq!(d.get_actor(), &ActorId::from(&[2u8; 16][..]));
    assert_eq!(
        server.doc(&doc).unwrap().get_heads(),
        d.get_heads(),
        "its change was pushed and acknowledged"
    );
}

/// A fresh Hello for `ann`'s phone on connection `conn`; the reply.
fn hello_on(server: &mut ServerCore, token: &str, event: &EventId, conn: u64) -> Vec<ServerMsg> {
    server.connect(conn);
    exchange(server, conn, vec![hello(event, token)])
}

fn error_of(replies: &[ServerMsg]) -> Option<(wire::ErrorCode, String)> {
    replies.iter().find_map(|r| match r {
        ServerMsg::Error { code, message } => Some((*code, message.clone())),
        _ => None,
    })
}

#[test]
fn a_replayed_token_gets_no_more_sessions_than_one_device_may_hold() {
    let (mut server, token, event) = setup(Limits {
        max_sessions_per_device: 2,
        ..Limits::default()
    });
    for conn in 1..=2 {
        assert_eq!(error_of(&hello_on(&mut server, &token, &event, conn)), None);
    }
    let (code, message) = error_of(&hello_on(&mut server, &token, &event, 3)).expect("refused");
    assert_eq!(code, wire::ErrorCode::TooManySessions);
    assert!(
        message.contains("device phone of ann already has 2 sessions open (at most 2)"),
        "{message}"
    );
    assert_eq!(server.session_count(), 2, "the refused session is gone");
    // A session ends: the device may open another.
    server.disconnect(1);
    assert_eq!(error_of(&hello_on(&mut server, &token, &event, 4)), None);
}

#[test]
fn a_session_sending_faster_than_allowed_is_closed_clearly() {
    let (mut server, token, event) = setup(Limits {
        request_burst: 5,
        requests_per_sec: 2,
        ..Limits::default()
    });
    server.connect(1);
    let resync = || ClientMsg::Resync {
        doc: own(&EventId::new("conf").unwrap()),
        have: Vec::new(),
    };
    let mut replies = exchange(&mut server, 1, vec![hello(&event, &token)]);
    // Four more requests in the same second fit the burst of five...
    for _ in 0..4 {
        replies.extend(exchange(&mut server, 1, vec![resync()]));
    }
    assert_eq!(error_of(&replies), None);
    // ...the sixth does not.
    let (code, message) = error_of(&exchange(&mut server, 1, vec![resync()])).expect("limited");
    assert_eq!(code, wire::ErrorCode::RateLimited);
    assert!(
        message.contains("5 requests in a burst, or 2 per second"),
        "{message}"
    );
    assert_eq!(server.session_count(), 0);
    // A patient session is refilled as time passes.
    server.connect(2);
    let (_, token2, _) = setup(Limits::default());
    let _ = server.handle(NOW, 2, hello(&event, &token2));
    for second in 0..20 {
        for _ in 0..2 {
            let out = server.handle(NOW + std::time::Duration::from_secs(second), 2, resync());
            assert!(
                !out.iter().any(|a| matches!(a, ServerAction::Close { .. })),
                "two per second are allowed (second {second})"
            );
        }
    }
}

#[test]
fn attendee_documents_have_their_own_size_limit() {
    let (mut server, token, event) = setup(Limits {
        max_attendee_doc: 1000,
        ..Limits::default()
    });
    let doc = own(&event);
    let mut replica = Replica::new(ActorId::from(&[1u8; 16][..]));
    put(&mut replica, &doc, "note", &"x".repeat(3000));
    let (_, msgs) = ClientSession::start(event, token, &replica);
    server.connect(1);
    let replies = exchange(&mut server, 1, msgs);
    assert!(
        replies.iter().any(|r| matches!(
            r,
            ServerMsg::Refused {
                reason: RefusalReason::TooLarge,
                ..
            }
        )),
        "{replies:?}"
    );
    assert!(server
        .doc(&doc)
        .is_none_or(|d| d.get(ROOT, "note").unwrap().is_none()));
}

#[test]
fn a_deflate_bomb_is_refused_before_it_is_inflated() {
    let bomb = deflate_bomb(256 << 20);
    assert!(
        bomb.len() < 1 << 20,
        "256 MiB of zeros deflate to {} bytes",
        bomb.len()
    );
    let limit = Limits::default().max_change;
    assert_eq!(
        lanyard_protocol::server::decompressed_size(&bomb, limit),
        Some(limit + 1 + 9 + 3),
        "counting stops one byte over the limit"
    );
    let (mut server, token, event) = setup(Limits::default());
    let replies = hello_on(&mut server, &token, &event, 1);
    assert_eq!(error_of(&replies), None);
    let replies = exchange(
        &mut server,
        1,
        vec![ClientMsg::Push {
            doc: own(&event),
            changes: vec![bomb],
        }],
    );
    assert!(
        replies.iter().any(|r| matches!(
            r,
            ServerMsg::Refused {
                reason: RefusalReason::TooLarge,
                ..
            }
        )),
        "{replies:?}"
    );
    // A real change is not a compressed chunk and passes the check as is.
    let mut d = automerge::Automerge::new();
    let mut tx = d.transaction();
    tx.put(ROOT, "k", "v").unwrap();
    tx.commit();
    let real = d.get_last_local_change().unwrap().raw_bytes().to_vec();
    assert_eq!(
        lanyard_protocol::server::decompressed_size(&real, limit),
        None
    );
}
