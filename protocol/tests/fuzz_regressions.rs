//! Regression tests for inputs found by the fuzz targets in `fuzz/` (see
//! `scripts/fuzz.sh`) and by `proptest_inputs.rs`: each replays an exact
//! input (hex) and asserts a clear refusal (or a consistent answer) instead
//! of a panic or silent corruption, and that the server keeps serving.
//!
//! Automerge 0.12.0 trusts the changes it applies: a change that decodes but
//! breaks its invariants makes `Automerge::apply_changes` (or
//! `Change::decode`) panic, in release builds too. The server must check
//! such changes (or contain the panic) before they reach it.
#![allow(clippy::unwrap_used)]

use automerge::transaction::Transactable as _;
use automerge::{ActorId, Automerge, Change, ReadDoc as _, ROOT};
use lanyard_protocol::testing::{self, fix_checksum, hello, sent, Fixture, IN_AN_HOUR, NOW};
use lanyard_protocol::wire;
use lanyard_protocol::{ClientMsg, DocId, RefusalReason, Role, ServerCore, ServerMsg, UserId};

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// The server of these tests: key seed 9, default limits.
fn setup() -> Fixture {
    Fixture::new(9)
}

/// A token for `user` on device `dev`, valid for an hour.
fn token(s: &Fixture, user: &str, role: Role) -> String {
    s.token(user, role, "dev", IN_AN_HOUR)
}

/// Connects `conn` as the organizer and checks the Welcome.
fn connect_organizer(s: &mut Fixture, conn: u64) {
    s.server.connect(conn);
    let organizer = token(s, "org", Role::Organizer);
    let (sent, _) = run(&mut s.server, conn, hello(&s.event, &organizer));
    assert!(matches!(sent[..], [ServerMsg::Welcome { .. }]), "{sent:?}");
}

/// Handles one message; returns the messages sent and the changes persisted.
fn run(server: &mut ServerCore, conn: u64, msg: ClientMsg) -> (Vec<ServerMsg>, Vec<Vec<u8>>) {
    let actions = server.handle(NOW, conn, msg);
    (
        sent(&actions).into_iter().map(|(_, m)| m).collect(),
        testing::persisted(&actions)
            .into_iter()
            .map(|(_, c)| c)
            .collect(),
    )
}

/// Pushes `changes` on `conn` to `doc`; asserts that the server answers with
/// a refusal for `reason`, persists nothing, and still acknowledges a valid
/// change from the same session afterwards.
fn assert_refused(
    s: &mut Fixture,
    conn: u64,
    doc: DocId,
    changes: Vec<Vec<u8>>,
    reason: RefusalReason,
) {
    for c in &changes {
        assert!(
            Change::try_from(c.as_slice()).is_ok(),
            "automerge decodes it"
        );
    }
    let (sent, persisted) = run(
        &mut s.server,
        conn,
        ClientMsg::Push {
            doc: doc.clone(),
            changes,
        },
    );
    assert!(
        sent.iter()
            .any(|m| matches!(m, ServerMsg::Refused { reason: r, .. } if *r == reason)),
        "expected a {reason:?} refusal, got {sent:?}"
    );
    assert!(persisted.is_empty(), "persisted {persisted:?}");
    let (sent, _) = run(
        &mut s.server,
        1,
        ClientMsg::Push {
            doc: DocId::Agenda(s.event.clone()),
            changes: vec![real_change()],
        },
    );
    assert!(
        sent.iter().any(|m| matches!(m, ServerMsg::Ack { .. })),
        "{sent:?}"
    );
}

/// The organizer (session 1) pushes one change to the agenda: it must be
/// refused as `Malformed`, and the session keeps working.
fn assert_malformed(change: &str) {
    let mut s = setup();
    connect_organizer(&mut s, 1);
    let agenda = DocId::Agenda(s.event.clone());
    assert_refused(
        &mut s,
        1,
        agenda,
        vec![hex(change)],
        RefusalReason::Malformed,
    );
}

/// A real change: actor 01×16, seq 1, `title = "RustConf"`, `n = 3`.
fn real_change() -> Vec<u8> {
    let mut am = Automerge::new().with_actor(ActorId::from(&[1u8; 16][..]));
    let mut tx = am.transaction();
    tx.put(ROOT, "title", "RustConf").unwrap();
    tx.put(ROOT, "n", 3i64).unwrap();
    tx.commit();
    am.get_changes(&[])[0].raw_bytes().to_vec()
}

/// A real change that creates an object and writes into it: actor 01×16,
/// seq 1, start op 1, `m = {k: "v"}` (63 bytes). The crafted changes below
/// are this one with one byte changed and the checksum fixed up.
const NESTED_CHANGE: &str = "856f4a83ef3b1bd3013f0010010101010101010101010101010101010101000000080104020415053401420356035701700200017f0000017f017e016d016b027e00017e0016760200";

#[test]
fn the_checksum_fix_up_agrees_with_automerge() {
    let real = real_change();
    assert_eq!(fix_checksum(&real), real);
    let mut am = Automerge::new().with_actor(ActorId::from(&[1u8; 16][..]));
    let mut tx = am.transaction();
    let m = tx.put_object(ROOT, "m", automerge::ObjType::Map).unwrap();
    tx.put(&m, "k", "v").unwrap();
    tx.commit();
    assert_eq!(hex(NESTED_CHANGE), am.get_changes(&[])[0].raw_bytes());
    assert_eq!(fix_checksum(&hex(NESTED_CHANGE)), hex(NESTED_CHANGE));
}

/// Finding 1 (`server_core`; fixed in c75a011): a change whose header
/// checksum does not match its contents (here the real change above with the
/// first checksum byte flipped) was decoded by `Change::try_from` (which does
/// not verify the checksum), applied, acknowledged and persisted; after a
/// restart `ServerCore::load_doc` (via `Automerge::load`, which does verify
/// it) refused the whole document: "bad checksum".
#[test]
fn a_change_with_a_wrong_checksum_is_refused_or_reloads() {
    let mut s = setup();
    connect_organizer(&mut s, 1);
    let mut bad = real_change();
    bad[4] ^= 0xff;
    assert!(
        Change::try_from(bad.as_slice()).is_ok(),
        "automerge decodes it"
    );
    let agenda = DocId::Agenda(s.event.clone());
    let (sent, persisted) = run(
        &mut s.server,
        1,
        ClientMsg::Push {
            doc: agenda.clone(),
            changes: vec![bad],
        },
    );
    let refused = sent.iter().any(|m| {
        matches!(
            m,
            ServerMsg::Refused {
                reason: RefusalReason::Malformed,
                ..
            }
        )
    });
    if !refused {
        let mut restarted = setup().server;
        let bytes: Vec<u8> = persisted.concat();
        if let Err(e) = restarted.load_doc(agenda.clone(), &bytes) {
            panic!("accepted and persisted, but the document no longer loads: {e}");
        }
        assert_eq!(
            restarted.doc(&agenda).unwrap().get_heads(),
            s.server.doc(&agenda).unwrap().get_heads()
        );
    }
}

/// The change of finding 2: actor 02×16, seq 1, no deps, the text change
/// `notes = "hello wörld"` with byte 46 (the column spec `0x42`, the action
/// column) set to `0x34` (a second insert column), checksum fixed up.
/// Automerge decodes it to a change with no ops and hash `d5e57855…`.
const NON_CANONICAL_CHANGE: &str = "856f4a83d5e57855016400100202020202020202020202020202020201010000000a01040204110413071509340234045608570c700200010b0000010b0100020a0000017e000209017f056e6f746573000b010b7f040b017f0007167f26031668656c6c6f2077c3b6726c640c00";

/// The whole frame body the proptest `the_server_survives_any_frames_…`
/// shrank to: `Push { doc: attendee/conf/ann, changes: [NON_CANONICAL_CHANGE] }`.
const NON_CANONICAL_PUSH: &str = "010104636f6e6603616e6e016e856f4a83d5e57855016400100202020202020202020202020202020201010000000a01040204110413071509340234045608570c700200010b0000010b0100020a0000017e000209017f056e6f746573000b010b7f040b017f0007167f26031668656c6c6f2077c3b6726c640c00";

/// Finding 2 (`proptest_inputs`, server property; fixed in 9d7132e): a change
/// whose encoding is not canonical (a duplicated column spec, no action
/// column) decodes and applies, but Automerge rebuilds it from its ops with
/// another hash (`3399f1c9…` instead of `d5e57855…`). With debug assertions
/// the server panics in its own `get_change_by_hash` right after applying
/// (automerge-0.12.0 `op_set2/change/collector.rs:753`: `called
/// Result::unwrap() on an Err value: ChangeGraph(MissingDep(3399f1c9…))`).
/// Without them the change is acknowledged, but devices catching up are sent
/// the rebuilt change (hash `3399f1c9…`, never the advertised head) and
/// `save()` gives a document that does not load (`MismatchingHeads`). The
/// server must refuse it as `Malformed` (or hold it consistently), and keep
/// serving others.
#[test]
fn a_non_canonical_change_is_refused_or_held_consistently() {
    let mut s = setup();
    let ann = token(&s, "ann", Role::Attendee);
    s.server.connect(2);
    let welcome = s.server.handle(NOW, 2, hello(&s.event, &ann));
    assert_eq!(welcome.len(), 1);
    let body = hex(NON_CANONICAL_PUSH);
    let own = DocId::Attendee(s.event.clone(), UserId::new("ann").unwrap());
    assert_eq!(
        wire::decode::<ClientMsg>(&body).unwrap(),
        ClientMsg::Push {
            doc: own.clone(),
            changes: vec![hex(NON_CANONICAL_CHANGE)],
        }
    );
    let sent = sent(&s.server.handle_frame(NOW, 2, &body));
    let refused = sent.iter().any(|(_, m)| {
        matches!(
            m,
            ServerMsg::Refused {
                reason: RefusalReason::Malformed,
                ..
            }
        )
    });
    if !refused {
        let am = s.server.doc(&own).unwrap();
        for h in am.get_heads() {
            assert_eq!(am.get_change_by_hash(&h).unwrap().hash(), h);
        }
        let reloaded = Automerge::load(&am.save()).unwrap();
        assert_eq!(reloaded.get_heads(), am.get_heads());
    }
    // The organizer is still served.
    connect_organizer(&mut s, 1);
    let (sent, _) = run(
        &mut s.server,
        1,
        ClientMsg::Push {
            doc: DocId::Agenda(s.event.clone()),
            changes: vec![real_change()],
        },
    );
    assert!(
        sent.iter().any(|m| matches!(m, ServerMsg::Ack { .. })),
        "{sent:?}"
    );
}

/// Finding 3a, as `server_core` found it (input `AAAAAAAAOgB3aGVu`, base64:
/// the organizer pushes pool change 0 with its actor length byte set to 0,
/// checksum fixed up). Automerge decodes it as a change by the empty actor,
/// seq 1, that lists one more actor (`01`) and has no ops.
const UNUSED_ACTOR_FOUND: &str = "856f4a8398d18e0201ba02000001010101010101010101010101010101010180e2cfaa06056669727374000a0104020c1108130c15623404420e561e574d7002000a1600000a7f0a030b020e7f0b0f11000f7f0000020e00000e7e000f00017e71120d0172057469746c65047965617205726174696f046f70656e076e6f7468696e6704626c6f62047768656e0475696e74056c696b65730873657373696f6e7302733104726f6f6d05737461727408737065616b65727300027f086162737472616374000f0e02010f0901020002017f0202017f040f0177860124850102004769a3011802007a66540036560008167f2605167f4652757374436f6e66ea0f000000000000e03f000102ff80d095ffbc31ffffffffffffffffff010148616c6c204180e2cfaa06416461477261636548656c6c6f2c2077c3b6726c642120f09f918b2000";

/// Finding 3a, reduced by hand to 36 bytes: actor 01×16, seq 1, start op 1,
/// time 0, no message, one other actor `02`, no op columns.
const UNUSED_ACTOR_MINIMAL: &str =
    "856f4a8382b7d8d5011a0010010101010101010101010101010101010101000001010200";

/// Finding 3b, [`NESTED_CHANGE`] with seq 2 (byte 28): a canonical change
/// by an actor the document does not know, at seq 2. (`server_core` found
/// the same with pool change 1, actor bytes mutated.)
const SEQ_GAP: &str = "856f4a8301d04aff013f0010010101010101010101010101010101010201000000080104020415053401420356035701700200017f0000017f017e016d016b027e00017e0016760200";

/// Finding 3 (`server_core`): a change that names an actor the document
/// cannot place (an actor listed but used by no op, or an author whose seq
/// does not follow on what the document holds) decodes, is canonical,
/// passes the dependency check, and then `Automerge::apply_changes` panics
/// inside `ServerCore::push`, in release builds too: automerge-0.12.0
/// `src/op_set2/change/batch.rs:1121:47` (`import_ops`:
/// `self.ops.lookup_actor(a).unwrap()`), "called `Option::unwrap()` on a
/// `None` value", with the server's document half updated. Any device that
/// may write one document (an attendee's own) can send it.
#[test]
fn a_change_naming_an_actor_the_document_cannot_place_is_refused_not_a_panic() {
    assert_malformed(UNUSED_ACTOR_MINIMAL);
    assert_malformed(UNUSED_ACTOR_FOUND);
    assert_malformed(SEQ_GAP);
}

/// Finding 4, as `server_core` found it (input `ABsAAAAAYmxvYm8HBw==`,
/// base64): pool change 0 with its start op set from 1 to 7, checksum fixed.
const START_OP_FOUND: &str = concat!(
    "856f4a834b1c362d01ba02001001010101010101010101010101010101010780e2cfaa06056669727374000a",
    "0104020c1108130c15623404420e561e574d7002000a1600000a7f0a030b020e7f0b0f11000f7f0000020e00",
    "000e7e000f00017e71120d0172057469746c65047965617205726174696f046f70656e076e6f7468696e6704",
    "626c6f62047768656e0475696e74056c696b65730873657373696f6e7302733104726f6f6d05737461727408",
    "737065616b65727300027f086162737472616374000f0e02010f0901020002017f0202017f040f0177860124",
    "850102004769a3011802007a66540036560008167f2605167f4652757374436f6e66ea0f000000000000e03f",
    "000102ff80d095ffbc31ffffffffffffffffff010148616c6c204180e2cfaa06416461477261636548656c6c",
    "6f2c2077c3b6726c642120f09f918b2000",
);

/// Finding 4, reduced: [`NESTED_CHANGE`] with start op 7 (byte 29): its
/// second op writes into object `1@01…`, which no longer exists (the map
/// it creates is now `7@01…`).
const START_OP_SHIFTED: &str = "856f4a832f9aa647013f0010010101010101010101010101010101010107000000080104020415053401420356035701700200017f0000017f017e016d016b027e00017e0016760200";

/// Finding 4 (`server_core`): a canonical change whose ops target an object
/// that does not exist makes `Automerge::apply_changes` panic inside
/// `ServerCore::push`, in release builds too: automerge-0.12.0
/// `src/op_set2/change/batch.rs:920:22`, "Obj … Missing from Index".
#[test]
fn a_change_writing_into_a_missing_object_is_refused_not_a_panic() {
    assert_malformed(START_OP_SHIFTED);
    assert_malformed(START_OP_FOUND);
}

/// Finding 5, as `server_core` found it (input `BAAAAAcAgoIbQAcAGwAAG2EAcg==`,
/// base64: pool change 4 mutated, checksum fixed).
const ACTOR_INDEX_FOUND: &str = concat!(
    "856f4a83d363aee2018b04022329a6ad10821b8e10c881fb7c589fbf1105ec5c444db6c2c8e90d08c5ecda85",
    "ad638892345180eebbdc09f1e6230b059d73f0be247064372fa5728bdbab6b0a100101010101010101010101",
    "010101010104350000000a0109020a11091311151b3405420a560d57b702700300028e02610001100000028e",
    "0236000110c50200038d020000020f0000027e00378c020100017ebd7dc6020e017e066d6572676564046c6f",
    "6e67008e027f076e756d626572730010028e0201107e01048e02017f0210017e36008e02167e001408240734",
    "796573776f72643020776f72643120776f72643220776f72643320776f72643420776f72643520776f726436",
    "20776f72643720776f72643820776f72643920776f7264313020776f7264313120776f7264313220776f7264",
    "313320776f7264313420776f7264313520776f7264313620776f7264313720776f7264313820776f72643139",
    "20776f7264323020776f7264323120776f7264323220776f7264323320776f7264323420776f726432352077",
    "6f7264323620776f7264323720776f7264323820776f7264323920776f7264333020776f7264333120776f72",
    "64333220776f7264333320776f7264333420776f7264333520776f7264333620776f7264333720776f726433",
    "3820776f726433392000e807d00fb817a01f8827f02ed836c03ea8c60090ce00f8d500e0dd00c8e500b0ed00",
    "98f500a10200",
);

/// Finding 5, reduced: [`NESTED_CHANGE`] whose object-actor column names
/// actor index 5 (byte 53) when the change lists one actor.
const ACTOR_INDEX_OUT_OF_RANGE: &str = "856f4a832d526016013f0010010101010101010101010101010101010101000000080104020415053401420356035701700200017f0500017f017e016d016b027e00017e0016760200";

/// Finding 5 (`server_core`, after 9d7132e): a change whose ops name an
/// actor index past the change's actor list decodes, but
/// `Change::decode()`, called by the server's new `is_canonical` check for
/// every pushed change (before the write permission is checked), panics:
/// automerge-0.12.0 `src/change.rs:331:49` (`actors.get(&id.actor()).unwrap()`;
/// `src/change.rs:346:91` for a pred), "called `Option::unwrap()` on a
/// `None` value". Applying the reduced one panics too
/// (`src/op_set2/change/batch.rs:859:49`). So any authenticated device, even
/// a read-only attendee pushing to the agenda, crashes the server's push.
#[test]
fn a_change_naming_an_actor_index_out_of_range_is_refused_not_a_panic() {
    assert_malformed(ACTOR_INDEX_OUT_OF_RANGE);
    assert_malformed(ACTOR_INDEX_FOUND);
    // A reader pushing it to the agenda gets `Forbidden`, not a panic.
    let mut s = setup();
    connect_organizer(&mut s, 1);
    let ann = token(&s, "ann", Role::Attendee);
    s.server.connect(2);
    let welcome = s.server.handle(NOW, 2, hello(&s.event, &ann));
    assert_eq!(welcome.len(), 1);
    let agenda = DocId::Agenda(s.event.clone());
    let bad = vec![hex(ACTOR_INDEX_OUT_OF_RANGE)];
    let (sent, persisted) = run(
        &mut s.server,
        2,
        ClientMsg::Push {
            doc: agenda,
            changes: bad,
        },
    );
    assert!(
        sent.iter().any(|m| matches!(m, ServerMsg::Refused { .. })),
        "{sent:?}"
    );
    assert!(persisted.is_empty());
}

/// Found by `server_core` after the guards above (artifact
/// `crash-7e5482b4…`): the organizer's real change, then a mutated version
/// of a follow-up change, then a second one whose body matches the first
/// follow-up but whose header names another hash. Applying the third made
/// Automerge panic inside `get_change_by_hash` (`op_set2/change/
/// collector.rs:753`, `MissingDep(818ed880…)`); the server now catches it,
/// refuses the change as `Malformed`, keeps the document as it was and goes
/// on acknowledging.
const FOLLOW_UP_BASE: &str = "856f4a837dfe4bfa01ba02001001010101010101010101010101010101010180e2cfaa06056669727374000a0104020c1108130c15623404420e561e574d7002000a1600000a7f0a030b020e7f0b0f11000f7f0000020e00000e7e000f00017e71120d0172057469746c65047965617205726174696f046f70656e076e6f7468696e6704626c6f62047768656e0475696e74056c696b65730873657373696f6e7302733104726f6f6d05737461727408737065616b65727300027f086162737472616374000f0e02010f0901020002017f0202017f040f0177860124850102004769a3011802007a66540036560008167f2605167f4652757374436f6e66ea0f000000000000e03f000102ff80d095ffbc31ffffffffffffffffff010148616c6c204180e2cfaa06416461477261636548656c6c6f2c2077c3b6726c642120f09f918b2000";
const FOLLOW_UP_MUTATED: &str = "856f4a832eefca3401d901017dfe4bfa894fc735c5a45686e042dfc80a649a55cdea8519b715c4133d51f3da100101010101010101010101010101010102210000000e0108020a1106131115193403420b560a570a700871027308940103a5010a00010d0000027f0000010c117f0e00027f3000020c00000300017c0016020c03017f7204017f7200037f056c696b6573000d7d076e6f7468692567047461677301740107097f050207050107037e00017d140200051608007f4605776f726c64727573747f0107000701020008007e091004017e727602010e00017f04626f6c64000f";
const FOLLOW_UP_MISNAMED: &str = "856f4a83818ed88001d901017dfe4bfa894fc735c5a45686e042dfc80a649a55cdea8519b715c4133d51f3da100101010101010101010101010101010102210000000e0108020a1106131115193403420b560a570a700871027308940103a5010a00010d0000027f0000010c117f0e00027f3000020c00000300017c0016020c03017f7204017f7200037f056c696b6573000d7d076e6f7468696e67047461677301740107097f050207050107037e00017d140200051608007f4605776f726c64727573747f0107000701020008007e091004017e727602010e00017f04626f6c64000f";

#[test]
fn a_change_automerge_cannot_index_after_applying_is_refused_not_a_panic() {
    let mut s = setup();
    connect_organizer(&mut s, 1);
    let agenda = DocId::Agenda(s.event.clone());
    let mut persisted = Vec::new();
    for change in [FOLLOW_UP_BASE, FOLLOW_UP_MUTATED, FOLLOW_UP_MISNAMED] {
        let (_, p) = run(
            &mut s.server,
            1,
            ClientMsg::Push {
                doc: agenda.clone(),
                changes: vec![hex(change)],
            },
        );
        persisted.extend(p);
    }
    // What was persisted reloads to the live heads (as after a restart).
    let mut restarted = setup().server;
    restarted
        .load_doc(agenda.clone(), &persisted.concat())
        .unwrap();
    assert_eq!(
        restarted.doc(&agenda).unwrap().get_heads(),
        s.server.doc(&agenda).unwrap().get_heads()
    );
    // And the session is still served.
    let (sent, _) = run(
        &mut s.server,
        1,
        ClientMsg::Push {
            doc: agenda,
            changes: vec![real_change()],
        },
    );
    assert!(
        sent.iter().any(|m| matches!(m, ServerMsg::Ack { .. })),
        "{sent:?}"
    );
}
