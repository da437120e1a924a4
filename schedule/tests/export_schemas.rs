//! The schedule.json and schedule.xml exports of real agendas validate
//! against the c3voc JSON Schema (`tests/data/schedules/schema.json`, with
//! the `jsonschema` crate, formats checked) and the c3voc XSD
//! (`schedule.xml.xsd`, with `xmllint --schema` from libxml2: schedule apps
//! such as EventFahrplan, Giggity and Confclerk read these formats).
//!
//! `xmllint` must be installed (Debian: `apt-get install libxml2-utils`,
//! as `.ci/run` does); without it the XML tests fail and say so.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use lanyard_client_core::{Client, NewSession};
use lanyard_protocol::Role;
use lanyard_schedule::export::{to_schedule_json, to_schedule_xml};
use lanyard_schedule::import::{parse_schedule, ImportedSchedule, ScheduleFormat};
use lanyard_schedule::import_schedule;

mod common;
use serde_json::Value;

fn data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/data/schedules")
        .join(name)
}

fn fixture(name: &str) -> Vec<u8> {
    let path = data(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn parse(name: &str) -> ImportedSchedule {
    let format = match name.rsplit('.').next() {
        Some("ics") => ScheduleFormat::Ics,
        Some("xml") => ScheduleFormat::Xml,
        _ => ScheduleFormat::Json,
    };
    parse_schedule(format, &fixture(name), None).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// An organizer's device for the event `event`.
fn organizer(event: &str) -> Client {
    common::joined(event, Role::Organizer)
}

/// The c3voc JSON Schema errors of `value`, as `path: message` lines.
fn json_schema_errors(value: &Value) -> Vec<String> {
    let schema: Value = serde_json::from_slice(&fixture("schema.json")).unwrap();
    let validator = jsonschema::draft6::options()
        .should_validate_formats(true)
        .build(&schema)
        .unwrap();
    validator
        .iter_errors(value)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect()
}

/// `xmllint --schema schedule.xml.xsd` on `xml`: `Err` with its report.
fn xsd_check(xml: &str) -> Result<(), String> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("schedule.xml");
    std::fs::write(&file, xml).unwrap();
    let out = Command::new("xmllint")
        .arg("--noout")
        .arg("--schema")
        .arg(data("schedule.xml.xsd"))
        .arg(&file)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run xmllint ({e}): the XML export is checked with libxml2's validator; \
                 install it (Debian/Ubuntu: apt-get install libxml2-utils), see the README's prerequisites"
            )
        });
    let report = String::from_utf8_lossy(&out.stderr).into_owned();
    if out.status.success() {
        Ok(())
    } else {
        Err(report)
    }
}

/// Every real fixture, imported and exported: 0 schema errors, 0 XSD errors.
#[test]
fn exports_of_every_real_agenda_validate_against_the_c3voc_schemas() {
    for file in [
        "frab-camp2019.json",
        "pretalx-rc3.json",
        "pretalx-democon.json",
        "hub-schedule2.json",
        "invalid-example.json",
        "pyconuk2015-schedule.ics",
        "frab-camp2019.xml",
        "frab-camp2019-noroom.xml",
        "fosdem-2025.xml",
    ] {
        // An event id the acronym patterns refuse as it is.
        let c = organizer("Fosdem-2025.Main");
        import_schedule(&c, &parse(file), false, &mut |_| {}).unwrap();
        let event = c.event_info().unwrap();
        let sessions = c.sessions().unwrap();

        let started = Instant::now();
        let json = to_schedule_json(&event, &sessions).unwrap();
        let json_ms = started.elapsed().as_secs_f64() * 1000.0;
        let errors = json_schema_errors(&json);
        assert!(
            errors.is_empty(),
            "{file}: {} schema errors, e.g.\n{}",
            errors.len(),
            errors[..errors.len().min(10)].join("\n")
        );

        let started = Instant::now();
        let xml = to_schedule_xml(&event, &sessions).unwrap();
        let xml_ms = started.elapsed().as_secs_f64() * 1000.0;
        if let Err(report) = xsd_check(&xml) {
            let head: Vec<&str> = report.lines().take(10).collect();
            panic!("{file}: the XML export fails the XSD:\n{}", head.join("\n"));
        }
        eprintln!(
            "{file}: {} sessions, schedule.json in {json_ms:.1} ms, schedule.xml in {xml_ms:.1} ms",
            sessions.len()
        );
    }
}

/// Sessions an organizer added by hand (ids that are not UUIDs, a link with
/// characters to escape, no page, no speakers) validate too.
#[test]
fn hand_made_sessions_validate_too() {
    let c = organizer("conf");
    c.set_event("Conf & <Friends>", "America/Argentina/Buenos_Aires")
        .unwrap();
    for (id, room, start) in [
        ("t1", "Hall \"A\"", 1_772_900_000),
        ("Keynote.2026", "Hall <B>", 1_772_990_007),
    ] {
        c.add_session(NewSession {
            id: id.into(),
            title: format!("Talk {id} & more"),
            room: room.into(),
            start_unix: start,
            end_unix: start + 2707,
            speakers: vec!["Ada".into(), "Grace".into(), "Ada".into()],
            ..NewSession::default()
        })
        .unwrap();
    }
    c.add_session_link(
        "t1",
        "https://example.org/slides?a=1&b=<2>",
        "Slides & notes",
    )
    .unwrap();
    let event = c.event_info().unwrap();
    let sessions = c.sessions().unwrap();
    let errors = json_schema_errors(&to_schedule_json(&event, &sessions).unwrap());
    assert!(errors.is_empty(), "{errors:#?}");
    xsd_check(&to_schedule_xml(&event, &sessions).unwrap()).unwrap();
}

/// The checks can fail: the real frab export breaks its own schema (slug
/// and acronym patterns), and the older-layout XML fixture is not valid
/// against the XSD (events outside a room, no <date>).
#[test]
fn the_validators_find_what_real_files_break() {
    let frab: Value = serde_json::from_slice(&fixture("frab-camp2019.json")).unwrap();
    let errors = json_schema_errors(&frab);
    assert!(errors.len() >= 80, "{}: {errors:#?}", errors.len());
    assert!(errors.iter().any(|e| e.contains("slug")), "{errors:#?}");

    let noroom = String::from_utf8(fixture("frab-camp2019-noroom.xml")).unwrap();
    let report = xsd_check(&noroom).unwrap_err();
    assert!(report.contains("fails to validate"), "{report}");
    let valid = String::from_utf8(fixture("frab-camp2019.xml")).unwrap();
    xsd_check(&valid).unwrap();
}
