//! A real FOSDEM-size agenda publishes through a real server, limits are a
//! protocol fact checked before a change is made, and a device whose change
//! was refused gets back to a state that syncs (issue 13), over real QUIC.
#![allow(clippy::unwrap_used)]

use lanyard_client_core::{ClientError, LimitKind, NewSession, SessionStatus};
use lanyard_protocol::{Limits, Role};
use lanyard_schedule::import::parse_schedule_xml;
use lanyard_schedule::import_schedule;
use lanyard_tests::{Device, TestServer};

const FOSDEM: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/data/schedules/fosdem-2025.xml"
);

fn fosdem() -> lanyard_schedule::import::ImportedSchedule {
    parse_schedule_xml(&std::fs::read(FOSDEM).unwrap()).unwrap()
}

/// A server whose change limit is `max_change` bytes (other limits default).
async fn server_with(limits: Limits) -> TestServer {
    TestServer::start_with(|o| o.limits = limits).await.unwrap()
}

fn small_changes(max_change: usize) -> Limits {
    Limits {
        max_change,
        ..Limits::default()
    }
}

/// Every local change of `dev` that the server has not confirmed fits `max`.
fn local_changes_fit(dev: &Device, max: usize) -> (usize, usize) {
    let sizes = dev.client.pending_change_sizes().unwrap();
    let largest = sizes.iter().copied().max().unwrap_or(0);
    assert!(
        largest <= max,
        "a change of {largest} bytes is over the {max}-byte limit: {sizes:?}"
    );
    (sizes.len(), largest)
}

fn same_sessions(a: &Device, b: &Device) {
    let (x, y) = (a.client.sessions().unwrap(), b.client.sessions().unwrap());
    assert_eq!(x.len(), y.len());
    assert!(x == y, "the attendee's agenda differs from the organizer's");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_fosdem_agenda_publishes_in_changes_that_fit_and_reaches_the_attendee() {
    let srv = TestServer::start().await.unwrap();
    let org = srv.device(Role::Organizer, "org", "laptop").unwrap();
    let schedule = fosdem();
    let summary = import_schedule(&org.client, &schedule, false, &mut |_| {}).unwrap();
    assert_eq!(summary.sessions, schedule.sessions.len() as u64);
    assert!(summary.sessions > 900, "{}", summary.sessions);
    let max = Limits::default().max_change;
    let (changes, largest) = local_changes_fit(&org, max);
    assert!(changes >= 2, "one change of {largest} bytes");
    assert_eq!(
        summary.counts.changes as usize + 1,
        changes,
        "import + genesis"
    );
    eprintln!(
        "fosdem import: {} changes, largest {largest} bytes, {} bytes in all",
        summary.counts.changes, summary.counts.change_bytes
    );
    let report = org.sync().await.unwrap();
    assert!(report.refused.is_empty(), "{:?}", report.refused);
    assert_eq!(org.client.status().pending_changes, 0);

    let ann = srv.device(Role::Attendee, "ann", "phone").unwrap();
    ann.sync().await.unwrap();
    assert_eq!(
        ann.client.sessions().unwrap().len(),
        schedule.sessions.len()
    );
    same_sessions(&org, &ann);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_announced_by_the_server_are_checked_before_a_change_is_made() {
    let limits = Limits {
        max_change: 64 * 1024,
        max_attendee_doc: 256 * 1024,
        ..Limits::default()
    };
    let srv = server_with(limits).await;
    let org = srv.device(Role::Organizer, "org", "laptop").unwrap();
    let ann = srv.device(Role::Attendee, "ann", "phone").unwrap();
    assert_eq!(
        org.client.limits(),
        Limits::default(),
        "defaults before any connection"
    );
    org.sync().await.unwrap();
    ann.sync().await.unwrap();
    assert_eq!(org.client.limits(), limits, "the Welcome announced them");

    // The import is split to the announced limit, and publishes.
    import_schedule(&org.client, &fosdem(), false, &mut |_| {}).unwrap();
    let (changes, _) = local_changes_fit(&org, limits.max_change);
    assert!(changes > 10, "{changes} changes");
    org.sync().await.unwrap();
    ann.sync().await.unwrap();
    same_sessions(&org, &ann);

    // A long note (over the change limit) becomes several changes that fit.
    let long = "a note typed during a long keynote. ".repeat(3000);
    ann.client.set_note("t1", &long).unwrap();
    local_changes_fit(&ann, limits.max_change);
    // A note that would make the document too large is refused before it
    // exists, with an error naming the limit, and nothing changes.
    let pending = ann.client.status().pending_changes;
    let huge = "x".repeat(300 * 1024);
    let err = ann.client.set_note("t2", &huge).unwrap_err();
    assert!(
        matches!(
            err,
            ClientError::OverLimit {
                limit: LimitKind::AttendeeDoc,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("max_attendee_doc"), "{err}");
    assert_eq!(ann.client.note("t2").unwrap(), "");
    assert_eq!(ann.client.status().pending_changes, pending);
    ann.sync().await.unwrap();
    let tablet = srv.device(Role::Attendee, "ann", "tablet").unwrap();
    tablet.sync().await.unwrap();
    assert_eq!(tablet.client.note("t1").unwrap(), long);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_organizer_import_refused_for_its_size_is_redone_and_a_later_move_still_lands() {
    // The organizer imports before ever connecting: the device only knows the
    // default limits, and this server takes changes of 64 KiB at most.
    let srv = server_with(small_changes(64 * 1024)).await;
    let mut org = srv.device(Role::Organizer, "org", "laptop").unwrap();
    let schedule = fosdem();
    import_schedule(&org.client, &schedule, false, &mut |_| {}).unwrap();
    let report = org.sync().await.unwrap();
    assert!(
        !report.refused.is_empty(),
        "the server must refuse the large changes"
    );
    let moved = schedule.sessions[10].guid.clone().unwrap();
    // Built on the refused import: blocked too.
    org.client
        .move_session(&moved, Some("Janson".into()), None, None)
        .unwrap();
    let status = org.client.status();
    assert!(status.refused.len() >= 2, "{:?}", status.refused);
    assert_eq!(status.pending_changes, 0, "nothing sendable");

    let resolved = org.client.resolve_refused().unwrap();
    assert!(resolved.set_aside >= 2, "{resolved:?}");
    assert!(resolved.kept.is_empty(), "{:?}", resolved.kept);
    assert!(
        resolved
            .redone
            .iter()
            .any(|r| r.contains(&moved) && r.contains("Janson")),
        "{:?}",
        resolved.redone
    );
    assert!(org.client.status().refused.is_empty());
    // The resolution is on disk.
    org.reopen().unwrap();
    assert!(org.client.status().refused.is_empty());
    let report = org.sync().await.unwrap();
    assert!(report.refused.is_empty(), "{:?}", report.refused);
    assert_eq!(org.client.status().pending_changes, 0);

    let ann = srv.device(Role::Attendee, "ann", "phone").unwrap();
    ann.sync().await.unwrap();
    same_sessions(&org, &ann);
    let s = ann.client.session(&moved).unwrap().unwrap();
    assert_eq!(
        (s.room.as_str(), s.status),
        ("Janson", SessionStatus::Moved)
    );
    assert_eq!(
        ann.client.sessions().unwrap().len(),
        schedule.sessions.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attendee_note_refused_for_its_size_is_redone_in_pieces_with_later_edits() {
    let srv = server_with(small_changes(16 * 1024)).await;
    let phone = srv.device(Role::Attendee, "ann", "phone").unwrap();
    // Typed offline before the first connection: one change of ~40 KB.
    let note = "notes from the hallway track, ".repeat(1400);
    phone.client.set_note("t1", &note).unwrap();
    let report = phone.sync().await.unwrap();
    assert_eq!(report.refused.len(), 1, "{:?}", report.refused);
    // Later edits build on the refused change.
    phone
        .client
        .append_note("t1", " and one more line")
        .unwrap();
    phone.client.set_bookmark("t1", true).unwrap();
    assert_eq!(phone.client.status().refused.len(), 3);

    let resolved = phone.client.resolve_refused().unwrap();
    assert_eq!(resolved.set_aside, 3, "{resolved:?}");
    assert!(resolved.kept.is_empty(), "{:?}", resolved.kept);
    assert!(resolved.new_changes >= 3, "{resolved:?}");
    let wanted = format!("{note} and one more line");
    assert_eq!(phone.client.note("t1").unwrap(), wanted);
    phone.sync().await.unwrap();
    assert_eq!(phone.client.status().pending_changes, 0);

    let tablet = srv.device(Role::Attendee, "ann", "tablet").unwrap();
    tablet.sync().await.unwrap();
    assert_eq!(tablet.client.note("t1").unwrap(), wanted);
    assert_eq!(tablet.client.bookmarks().unwrap(), vec!["t1"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_note_that_can_never_fit_is_kept_and_shown_and_the_device_syncs_again() {
    let srv = server_with(Limits {
        max_attendee_doc: 8 * 1024,
        ..Limits::default()
    })
    .await;
    let phone = srv.device(Role::Attendee, "ann", "phone").unwrap();
    // Typed offline before the first connection, so the device only knows
    // the default limits: a 20 KB note the server's document limit forbids.
    phone.client.set_note("t1", "short").unwrap();
    let long = "y".repeat(20 * 1024);
    phone.client.set_note("t2", &long).unwrap();
    phone.client.set_bookmark("t1", true).unwrap();
    let report = phone.sync().await.unwrap();
    assert!(!report.refused.is_empty());
    assert_eq!(phone.client.limits().max_attendee_doc, 8 * 1024);

    let resolved = phone.client.resolve_refused().unwrap();
    assert_eq!(resolved.kept.len(), 1, "{resolved:?}");
    assert_eq!(resolved.kept[0].session.as_deref(), Some("t2"));
    assert_eq!(resolved.kept[0].text, long, "the text is kept in full");
    assert!(
        resolved.kept[0].reason.contains("limits"),
        "{}",
        resolved.kept[0].reason
    );
    assert!(
        resolved.redone.iter().any(|r| r.contains("bookmark")),
        "{resolved:?}"
    );
    assert_eq!(phone.client.status().kept_edits, 1);
    assert_eq!(phone.client.kept_edits().unwrap(), resolved.kept);
    phone.sync().await.unwrap();
    let status = phone.client.status();
    assert!(
        status.refused.is_empty() && status.pending_changes == 0,
        "{status:?}"
    );
    assert_eq!(phone.client.note("t1").unwrap(), "short");
    phone.client.clear_kept_edits().unwrap();
    assert_eq!(phone.client.status().kept_edits, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agenda_edits_refused_as_forbidden_are_kept_not_redone() {
    let srv = TestServer::start().await.unwrap();
    let dev = srv.device(Role::Organizer, "sam", "laptop").unwrap();
    dev.client
        .add_session(NewSession {
            id: "t9".into(),
            title: "Added while an organizer".into(),
            room: "Hall A".into(),
            start_unix: 1_781_000_000,
            end_unix: 1_781_001_800,
            ..Default::default()
        })
        .unwrap();
    // Sam is an attendee now (a new invite for the same user): the server
    // refuses the agenda edit made offline before.
    dev.client
        .join(&srv.link(Role::Attendee, "sam", "laptop").unwrap())
        .unwrap();
    dev.client.set_note("t9", "my own note").unwrap();
    let report = dev.sync().await.unwrap();
    assert!(!report.refused.is_empty());
    let resolved = dev.client.resolve_refused().unwrap();
    assert!(resolved.set_aside >= 1, "{resolved:?}");
    assert!(resolved.redone.is_empty(), "{resolved:?}");
    assert_eq!(resolved.kept.len(), 1, "{resolved:?}");
    assert_eq!(resolved.kept[0].session.as_deref(), Some("t9"));
    assert!(resolved.kept[0].text.contains("Added while an organizer"));
    assert!(dev.client.session("t9").unwrap().is_none());
    dev.sync().await.unwrap();
    let status = dev.client.status();
    assert!(
        status.refused.is_empty() && status.pending_changes == 0,
        "{status:?}"
    );
    assert_eq!(dev.client.note("t9").unwrap(), "my own note");
}
