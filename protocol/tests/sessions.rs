//! Focused tests of the sans-IO sessions: limits, push splitting, base monotonicity.
#![allow(clippy::unwrap_used)]

use automerge::transaction::Transactable as _;
use automerge::{ActorId, ReadDoc as _, ROOT};
use lanyard_protocol::client::{MAX_PUSH_BYTES, MAX_PUSH_CHANGES};
use lanyard_protocol::wire::{self, HEADER_LEN};
use lanyard_protocol::{
    token, ClientMsg, ClientSession, DeviceId, DocId, EventId, Limits, RefusalReason, Replica,
    Role, ServerAction, ServerConfig, ServerCore, ServerMsg, TokenClaims, UserId,
};
use ring::signature::{Ed25519KeyPair, KeyPair as _};

const NOW: u64 = 1_700_000_000;

fn setup(limits: Limits) -> (ServerCore, String, EventId) {
    let key = Ed25519KeyPair::from_seed_unchecked(&[9; 32]).unwrap();
    let event = EventId::new("conf").unwrap();
    let claims = TokenClaims {
        event: event.clone(),
        user: UserId::new("ann").unwrap(),
        role: Role::Attendee,
        device: DeviceId::new("phone").unwrap(),
        expires_at: NOW + 60,
    };
    let server = ServerCore::new(ServerConfig {
        token_key: key.public_key().as_ref().to_vec(),
        limits,
    });
    (server, token::sign(&claims, &key), event)
}

fn own(event: &EventId) -> DocId {
    DocId::Attendee(event.clone(), UserId::new("ann").unwrap())
}

fn put(replica: &mut Replica, doc: &DocId, key: &str, value: &str) {
    let mut tx = replica.get_or_create(doc).doc.transaction();
    tx.put(ROOT, key, value).unwrap();
    tx.commit();
}

/// Runs messages through the server and returns its replies, checking the order of actions.
fn exchange(server: &mut ServerCore, conn: u64, msgs: Vec<ClientMsg>) -> Vec<ServerMsg> {
    let mut replies = Vec::new();
    for m in msgs {
        for a in server.handle(NOW, conn, m) {
            if let ServerAction::Send { frame, .. } = a {
                replies.push(wire::decode(&frame[HEADER_LEN..]).unwrap());
            }
        }
    }
    replies
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
                assert!(changes.iter().map(Vec::len).sum::<usize>() <= MAX_PUSH_BYTES);
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
