//! Two server nodes on one shared store: a change accepted by one reaches
//! the devices of the other through `ServerCore::apply_stored`.
#![allow(clippy::unwrap_used)]

use automerge::transaction::Transactable as _;
use automerge::{ActorId, ReadDoc as _, ROOT};

use lanyard_protocol::testing::{persisted, sent_to, Fixture, NOW};
use lanyard_protocol::{DocId, Replica, Role, ServerAction, UserId};

fn put(replica: &mut Replica, doc: &DocId, key: &str, value: &str) {
    let mut tx = replica.get_or_create(doc).doc.transaction();
    tx.put(ROOT, key, value).unwrap();
    tx.commit();
}

fn value(replica: &Replica, doc: &DocId, key: &str) -> Option<String> {
    let d = &replica.get(doc)?.doc;
    d.get(ROOT, key)
        .unwrap()
        .map(|(v, _)| v.into_string().unwrap_or_default())
}

#[test]
fn a_change_stored_by_one_node_reaches_the_devices_of_another_once() {
    // Two nodes with the same token key (one cluster).
    let mut a = Fixture::new(4);
    let mut b = Fixture::new(4);
    let doc = DocId::Attendee(a.event.clone(), UserId::new("ann").unwrap());
    let exp = NOW.as_secs() + 600;

    let mut laptop = Replica::new(ActorId::from(&[1u8; 16][..]));
    put(&mut laptop, &doc, "note", "first");
    let mut on_a = a.sync(
        1,
        a.token("ann", Role::Attendee, "laptop", exp),
        &mut laptop,
    );
    // Node b learns the first change from the store, as it would at start.
    let stored: Vec<Vec<u8>> = a.disk[&doc].clone();
    let mut sink: Vec<ServerAction> = Vec::new();
    assert_eq!(
        b.server
            .apply_stored(NOW, doc.clone(), &stored, &mut sink)
            .unwrap(),
        1
    );
    assert!(sink.is_empty(), "nobody subscribed on b yet: {sink:?}");

    let mut phone = Replica::new(ActorId::from(&[2u8; 16][..]));
    let mut on_b = b.sync(7, b.token("ann", Role::Attendee, "phone", exp), &mut phone);
    assert_eq!(value(&phone, &doc, "note").as_deref(), Some("first"));

    // The laptop writes again on node a; a persists it, b reads it.
    put(&mut laptop, &doc, "note", "second");
    let msgs = on_a.local_change(&laptop, &doc);
    let actions = a.handle(NOW, 1, msgs);
    let chunks: Vec<Vec<u8>> = persisted(&actions).into_iter().map(|(_, c)| c).collect();
    assert_eq!(chunks.len(), 1);
    let mut sink: Vec<ServerAction> = Vec::new();
    assert_eq!(
        b.server
            .apply_stored(NOW, doc.clone(), &chunks, &mut sink)
            .unwrap(),
        1
    );
    assert!(
        !sink
            .iter()
            .any(|a| matches!(a, ServerAction::Persist { .. })),
        "already stored: nothing to persist"
    );
    for m in sent_to(7, &sink) {
        on_b.handle(&mut phone, m).unwrap();
    }
    assert_eq!(value(&phone, &doc, "note").as_deref(), Some("second"));

    // The same chunks again (a feed read twice): nothing new, nothing sent.
    let mut again: Vec<ServerAction> = Vec::new();
    assert_eq!(
        b.server
            .apply_stored(NOW, doc.clone(), &chunks, &mut again)
            .unwrap(),
        0
    );
    assert!(again.is_empty(), "{again:?}");

    // A chunk that is not Automerge changes nothing and sends nothing
    // (Automerge skips what it cannot read, or it is reported).
    let mut junk: Vec<ServerAction> = Vec::new();
    let r = b
        .server
        .apply_stored(NOW, doc.clone(), &[b"garbage".to_vec()], &mut junk);
    assert!(matches!(r, Ok(0) | Err(_)), "{r:?}");
    assert!(junk.is_empty(), "{junk:?}");
    assert_eq!(value(&phone, &doc, "note").as_deref(), Some("second"));
}
