//! Importing real schedules into a client's agenda: counts, minimal
//! re-imports, cancellations, dry runs. No network: the organizer's device
//! edits its local agenda, as it would offline.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use lanyard_client_core::{Client, ClientError, SessionStatus};
use lanyard_protocol::Role;
use lanyard_schedule::import::{
    parse_ics, parse_schedule_json, parse_schedule_xml, ImportedSchedule,
};
use lanyard_schedule::{import_schedule, read_schedule};

mod common;

fn fixture(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/data/schedules")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn client(role: Role) -> Client {
    common::joined("conf", role)
}

fn parse(name: &str) -> ImportedSchedule {
    let bytes = fixture(name);
    if name.ends_with(".ics") {
        parse_ics(&bytes).unwrap()
    } else if name.ends_with(".xml") {
        parse_schedule_xml(&bytes).unwrap()
    } else {
        parse_schedule_json(&bytes).unwrap()
    }
}

/// Every fixture imports with the counts measured independently (Python over
/// the raw files, see tests/data/schedules/SOURCES.md), and a second import
/// of the same file changes nothing.
#[test]
fn each_real_schedule_imports_with_its_counts_and_reimports_as_a_no_op() {
    let expected = [
        // (file, sessions, rooms, days, time zone)
        ("frab-camp2019.json", 79, 2, 5, "Europe/Berlin"),
        ("pretalx-rc3.json", 48, 5, 4, "UTC"),
        ("pretalx-democon.json", 36, 2, 3, "UTC"),
        ("hub-schedule2.json", 2, 2, 2, "Europe/Berlin"),
        ("invalid-example.json", 1, 1, 1, "Europe/Zurich"),
        ("pyconuk2015-schedule.ics", 162, 11, 4, "UTC"),
    ];
    for (file, sessions, rooms, days, tz) in expected {
        let c = client(Role::Organizer);
        let schedule = parse(file);
        let mut calls = 0;
        let s = import_schedule(&c, &schedule, false, &mut |_| calls += 1).unwrap();
        assert_eq!(
            (s.sessions, s.rooms, s.days, s.time_zone.as_str()),
            (sessions, rooms, days, tz),
            "{file}"
        );
        assert_eq!(s.counts.added, sessions, "{file}");
        assert_eq!(s.counts.changed + s.counts.removed, 0, "{file}");
        assert!(s.counts.change_bytes > 0, "{file}");
        assert_eq!(calls, sessions, "{file}: one progress call per session");
        assert_eq!(c.sessions().unwrap().len() as u64, sessions, "{file}");
        assert_eq!(c.days().unwrap().len() as u64, days, "{file}");
        assert_eq!(c.event_info().unwrap().time_zone, tz, "{file}");
        let pending = c.status().pending_changes;

        let again = import_schedule(&c, &schedule, false, &mut |_| {}).unwrap();
        assert_eq!(again.counts.unchanged, sessions, "{file}");
        assert_eq!(
            (
                again.counts.added,
                again.counts.changed,
                again.counts.removed
            ),
            (0, 0, 0),
            "{file}"
        );
        assert_eq!(again.counts.change_bytes, 0, "{file}: no change at all");
        assert_eq!(c.status().pending_changes, pending, "{file}");
    }
}

/// The first 300 sessions of all the real fixtures together: an agenda the
/// size of the benchmark workload's.
fn three_hundred() -> ImportedSchedule {
    let mut all = parse("pyconuk2015-schedule.ics");
    for f in [
        "frab-camp2019.json",
        "pretalx-rc3.json",
        "pretalx-democon.json",
    ] {
        all.sessions.extend(parse(f).sessions);
    }
    all.sessions.truncate(300);
    all.name = "Three hundred".into();
    all.time_zone = "Europe/London".into();
    all
}

#[test]
fn moving_one_session_of_300_is_a_change_of_a_few_hundred_bytes() {
    let c = client(Role::Organizer);
    let mut schedule = three_hundred();
    let first = import_schedule(&c, &schedule, false, &mut |_| {}).unwrap();
    assert_eq!(first.counts.added, 300);

    let moved = &mut schedule.sessions[123];
    let id = lanyard_schedule::reimport::key_of(moved);
    moved.room = "Hall B".into();
    moved.start_unix += 3600;
    moved.end_unix += 3600;
    let second = import_schedule(&c, &schedule, false, &mut |_| {}).unwrap();
    assert_eq!(
        (
            second.counts.changed,
            second.counts.added,
            second.counts.removed
        ),
        (1, 0, 0)
    );
    assert_eq!(second.counts.unchanged, 299);
    println!(
        "one-session re-import of a 300-session agenda: change_bytes={} (first import: {})",
        second.counts.change_bytes, first.counts.change_bytes
    );
    assert!(
        second.counts.change_bytes > 0 && second.counts.change_bytes < 1000,
        "change_bytes={}",
        second.counts.change_bytes
    );
    assert!(second.counts.change_bytes * 100 < first.counts.change_bytes);
    let s = c.session(&id).unwrap().unwrap();
    assert_eq!(s.room, "Hall B");
    assert_eq!(s.status, SessionStatus::Moved);
    assert!(c.rooms().unwrap().iter().any(|r| r.name == "Hall B"));
}

#[test]
fn sessions_missing_from_a_reimport_are_cancelled_and_come_back() {
    let c = client(Role::Organizer);
    let mut schedule = parse("frab-camp2019.json");
    import_schedule(&c, &schedule, false, &mut |_| {}).unwrap();
    let gone = schedule.sessions.remove(10);
    let gone_id = lanyard_schedule::reimport::key_of(&gone);
    c.set_bookmark(&gone_id, true).unwrap();

    let s = import_schedule(&c, &schedule, false, &mut |_| {}).unwrap();
    assert_eq!((s.counts.removed, s.counts.changed), (1, 0));
    assert_eq!(s.sessions, 78);
    let kept = c.session(&gone_id).unwrap().expect("kept, not deleted");
    assert_eq!(kept.status, SessionStatus::Cancelled);
    assert_eq!(c.bookmarks().unwrap(), vec![gone_id.clone()]);
    // Cancelled once is not cancelled again.
    let s = import_schedule(&c, &schedule, false, &mut |_| {}).unwrap();
    assert_eq!(s.counts.removed, 0);
    assert_eq!(s.counts.change_bytes, 0);
    // Back in the file: reinstated.
    schedule.sessions.push(gone);
    let s = import_schedule(&c, &schedule, false, &mut |_| {}).unwrap();
    assert_eq!(s.counts.changed, 1);
    assert_eq!(
        c.session(&gone_id).unwrap().unwrap().status,
        SessionStatus::Scheduled
    );
}

#[test]
fn regenerated_guids_match_by_title_and_keep_notes() {
    let c = client(Role::Organizer);
    let mut schedule = parse("pretalx-rc3.json");
    import_schedule(&c, &schedule, false, &mut |_| {}).unwrap();
    let id = lanyard_schedule::reimport::key_of(&schedule.sessions[5]);
    c.set_note(&id, "bring a laptop").unwrap();
    for (i, s) in schedule.sessions.iter_mut().enumerate() {
        s.guid = Some(format!("regenerated-{i}"));
    }
    let s = import_schedule(&c, &schedule, false, &mut |_| {}).unwrap();
    assert_eq!(
        (s.counts.added, s.counts.removed, s.counts.changed),
        (0, 0, 0),
        "every session found again by its title"
    );
    assert_eq!(c.sessions().unwrap().len(), 48);
    assert_eq!(c.note(&id).unwrap(), "bring a laptop");
}

#[test]
fn a_dry_run_writes_nothing_and_attendees_cannot_import() {
    let c = client(Role::Organizer);
    let schedule = parse("pretalx-democon.json");
    let dry = import_schedule(&c, &schedule, true, &mut |_| {}).unwrap();
    assert!(dry.dry_run);
    assert_eq!(dry.counts.added, 36);
    assert!(dry.counts.change_bytes > 0);
    assert!(c.sessions().unwrap().is_empty());
    assert_eq!(c.status().pending_changes, 0);

    let a = client(Role::Attendee);
    assert!(matches!(
        import_schedule(&a, &schedule, false, &mut |_| {}),
        Err(ClientError::OrganizersOnly)
    ));
    assert!(a.sessions().unwrap().is_empty());
}

/// The import's time zone wins over UTC only when the file names a zone:
/// an all-UTC file does not erase a zone the organizer set.
#[test]
fn a_utc_file_keeps_the_event_zone_the_organizer_set() {
    let c = client(Role::Organizer);
    c.set_event("PyCon UK", "Europe/London").unwrap();
    let s = import_schedule(&c, &parse("pyconuk2015-schedule.ics"), false, &mut |_| {}).unwrap();
    assert_eq!(s.time_zone, "Europe/London");
    assert_eq!(c.event_info().unwrap().time_zone, "Europe/London");
    assert_eq!(s.days, 4);
}

/// An `.ics`, schedule.json and schedule.xml export of an imported real
/// agenda gives the same sessions when imported again: into a fresh device
/// (under the guids the exports write, see `export::guid_for`), and as a
/// 0-byte no-op re-import into the agenda it came from.
#[test]
fn exports_of_a_real_agenda_reimport_to_the_same_sessions() {
    use lanyard_schedule::export::{guid_for, to_ics, to_schedule_json, to_schedule_xml};
    for file in [
        "frab-camp2019.json",
        "pyconuk2015-schedule.ics",
        "pretalx-rc3.json",
        "fosdem-2025.xml",
    ] {
        let c = client(Role::Organizer);
        import_schedule(&c, &parse(file), false, &mut |_| {}).unwrap();
        let event = c.event_info().unwrap();
        let sessions = c.sessions().unwrap();
        let ics = to_ics(&event, &sessions, 1_700_000_000).unwrap();
        let json = to_schedule_json(&event, &sessions).unwrap().to_string();
        let xml = to_schedule_xml(&event, &sessions).unwrap();
        for (format, back) in [
            ("ics", parse_ics(ics.as_bytes()).unwrap()),
            ("json", parse_schedule_json(json.as_bytes()).unwrap()),
            ("xml", parse_schedule_xml(xml.as_bytes()).unwrap()),
        ] {
            let again = import_schedule(&c, &back, false, &mut |_| {}).unwrap();
            assert_eq!(
                (again.counts.unchanged, again.counts.change_bytes),
                (sessions.len() as u64, 0),
                "{file} via {format}: {again:?}"
            );
            let fresh = client(Role::Organizer);
            import_schedule(&fresh, &back, false, &mut |_| {}).unwrap();
            let mut want = sessions.clone();
            if format != "ics" {
                for s in &mut want {
                    s.id = guid_for(&s.id);
                }
                want.sort_by(|a, b| {
                    (a.start_unix, &a.room, &a.id).cmp(&(b.start_unix, &b.room, &b.id))
                });
            }
            let got = fresh.sessions().unwrap();
            assert_eq!(got.len(), want.len(), "{file} via {format}");
            for (g, w) in got.iter().zip(&want) {
                assert_eq!(g, w, "{file} via {format}");
            }
            assert_eq!(fresh.event_info().unwrap().time_zone, event.time_zone);
        }
    }
}

/// fosdem-2025-floating.xml is the real FOSDEM 2025 export without its zone,
/// its `<date>`s and its days' instants (made by
/// tests/data/schedules/make_floating_fosdem.py): only local `<start>` times
/// are left, as in older pentabarf exports. Read in the agenda's zone, every
/// session lands at the instants of the original; with no zone anywhere the
/// file is refused, and an explicit zone does the same as the agenda's.
#[test]
fn a_fosdem_export_without_zone_or_dates_gives_the_instants_of_the_original() {
    use lanyard_schedule::import::{ImportError, ScheduleFormat, ZoneSource};
    let original = parse("fosdem-2025.xml");
    assert_eq!(original.sessions.len(), 943);
    assert!(!original.floating_times);
    let floating = fixture("fosdem-2025-floating.xml");

    let c = client(Role::Organizer);
    let err = read_schedule(&c, ScheduleFormat::Xml, &floating, None).unwrap_err();
    assert!(
        matches!(
            &err,
            lanyard_schedule::import::ReadScheduleError::Import(ImportError::NoTimeZone { .. })
        ),
        "{err}"
    );

    c.set_event("FOSDEM 2025", "Europe/Brussels").unwrap();
    let from_agenda = read_schedule(&c, ScheduleFormat::Xml, &floating, None).unwrap();
    let given = read_schedule(
        &client(Role::Organizer),
        ScheduleFormat::Xml,
        &floating,
        Some("Europe/Brussels"),
    )
    .unwrap();
    for read in [&from_agenda, &given] {
        assert!(read.floating_times);
        assert_eq!(read.zone_source, ZoneSource::Fallback);
        assert_eq!(read.time_zone, "Europe/Brussels");
        assert_eq!(read.sessions.len(), original.sessions.len());
        for (f, o) in read.sessions.iter().zip(&original.sessions) {
            assert_eq!(f.guid, o.guid);
            assert_eq!(
                (f.start_unix, f.end_unix),
                (o.start_unix, o.end_unix),
                "{:?}",
                o.guid
            );
        }
        // Nothing else was lost either.
        assert_eq!(read.sessions, original.sessions);
    }
    // Imported into the Brussels agenda, then the original on top: no change.
    import_schedule(&c, &from_agenda, false, &mut |_| {}).unwrap();
    let again = import_schedule(&c, &original, false, &mut |_| {}).unwrap();
    assert_eq!(again.counts.change_bytes, 0, "{again:?}");
}

/// A newer file that only adds a recording to one session rewrites that
/// session's links and nothing else: a small change, one session changed.
#[test]
fn a_new_link_in_a_reimport_changes_only_that_session() {
    let c = client(Role::Organizer);
    let mut schedule = parse("fosdem-2025.xml");
    import_schedule(&c, &schedule, false, &mut |_| {}).unwrap();
    let talk = &mut schedule.sessions[100];
    let id = talk.guid.clone().unwrap();
    let before = talk.links.len();
    talk.links.push(lanyard_client_core::Link::new(
        "https://video.fosdem.org/2025/ud2120/talk.av1.webm",
        "Video recording (AV1/WebM)",
    ));
    let again = import_schedule(&c, &schedule, false, &mut |_| {}).unwrap();
    assert_eq!(
        (again.counts.changed, again.counts.unchanged),
        (1, 942),
        "{again:?}"
    );
    assert!(
        again.counts.change_bytes > 0 && again.counts.change_bytes < 1500,
        "{again:?}"
    );
    let links = c.session(&id).unwrap().unwrap().links;
    assert_eq!(links.len(), before + 1);
    assert_eq!(links.last().unwrap().title, "Video recording (AV1/WebM)");
}
