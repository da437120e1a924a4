//! `lanyard import`, `lanyard export` and `lanyard watch`.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use indicatif::{ProgressBar, ProgressStyle};
use lanyard_client_core::time::format_rfc3339;
use lanyard_client_core::{Alert, AlertListener, BackgroundOptions, Client, Session};
use lanyard_schedule::export::{to_ics, to_schedule_json, to_schedule_xml};
use lanyard_schedule::import::{ImportError, ImportedSchedule, ReadScheduleError, ScheduleFormat};
use lanyard_schedule::{import_schedule, read_schedule};
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::args::{ExportFormat, ImportFormat};
use crate::show::{self, count};

/// Files at least this large get a progress bar (when stderr is a terminal).
const LARGE_FILE_BYTES: u64 = 1024 * 1024;
/// Schedules with at least this many sessions get a progress bar.
const LARGE_SCHEDULE_SESSIONS: usize = 1000;

fn format_name(f: ImportFormat) -> &'static str {
    match f {
        ImportFormat::Json => "json",
        ImportFormat::Xml => "xml",
        ImportFormat::Ics => "ics",
    }
}

/// The format from `--format`, else the extension, else the first
/// non-blank byte (`{` JSON, `<` XML, `B` for BEGIN:VCALENDAR).
fn detect_format(
    path: &Path,
    bytes: &[u8],
    given: Option<ImportFormat>,
) -> anyhow::Result<ImportFormat> {
    if let Some(f) = given {
        return Ok(f);
    }
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    match ext.as_deref() {
        Some("json") => return Ok(ImportFormat::Json),
        Some("xml") => return Ok(ImportFormat::Xml),
        Some("ics" | "ical" | "ifb" | "icalendar") => return Ok(ImportFormat::Ics),
        _ => {}
    }
    let first = bytes
        .strip_prefix(b"\xef\xbb\xbf")
        .unwrap_or(bytes)
        .iter()
        .find(|b| !b.is_ascii_whitespace());
    match first {
        Some(b'{' | b'[') => Ok(ImportFormat::Json),
        Some(b'<') => Ok(ImportFormat::Xml),
        Some(b'B' | b'b') => Ok(ImportFormat::Ics),
        _ => bail!(
            "cannot tell the format of {}: give --format json, xml or ics",
            path.display()
        ),
    }
}

fn bar(len: u64, message: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    let style = ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} ({elapsed})")
        .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style.progress_chars("=> "));
    bar.set_message(message.to_owned());
    bar
}

/// The options of `lanyard import`.
pub struct ImportOptions {
    /// `--format`.
    pub format: Option<ImportFormat>,
    /// `--timezone`: the zone of local times in a file that names none.
    pub time_zone: Option<String>,
    /// `--dry-run`.
    pub dry_run: bool,
    /// `--json`.
    pub json_out: bool,
}

/// The reader's name for a format.
fn schedule_format(f: ImportFormat) -> ScheduleFormat {
    match f {
        ImportFormat::Json => ScheduleFormat::Json,
        ImportFormat::Xml => ScheduleFormat::Xml,
        ImportFormat::Ics => ScheduleFormat::Ics,
    }
}

/// Reads `bytes` (named `file`, for its extension and messages) as a
/// schedule and imports it into the agenda: the format, and what changed.
/// Nothing is written when the file cannot be read.
pub fn import_bytes(
    client: &Client,
    file: &Path,
    bytes: &[u8],
    options: &ImportOptions,
) -> anyhow::Result<(ImportFormat, lanyard_schedule::ImportSummary)> {
    let format = detect_format(file, bytes, options.format)?;
    let large = bytes.len() as u64 >= LARGE_FILE_BYTES;
    let spinner = large.then(|| {
        let s = ProgressBar::new_spinner();
        s.set_message(format!("reading {}", file.display()));
        s.enable_steady_tick(Duration::from_millis(100));
        s
    });
    let parsed = read_schedule(
        client,
        schedule_format(format),
        bytes,
        options.time_zone.as_deref(),
    );
    if let Some(s) = spinner {
        s.finish_and_clear();
    }
    let what = || {
        format!(
            "cannot import {} (as {}); the agenda is unchanged",
            file.display(),
            format_name(format)
        )
    };
    let schedule: ImportedSchedule = match parsed {
        Ok(schedule) => schedule,
        Err(ReadScheduleError::Import(e @ ImportError::NoTimeZone { .. })) => {
            return Err(anyhow::Error::new(e)
                .context(
                    "pass --timezone ZONE (the event's IANA zone, e.g. Europe/Brussels), \
                     or set the agenda's with `lanyard event --timezone ZONE`",
                )
                .context(what()));
        }
        Err(e) => return Err(anyhow::Error::new(e).context(what())),
    };
    let progress = (large || schedule.sessions.len() >= LARGE_SCHEDULE_SESSIONS)
        .then(|| bar(schedule.sessions.len() as u64, "importing"));
    let summary = import_schedule(client, &schedule, options.dry_run, &mut |n| {
        if let Some(p) = &progress {
            p.set_position(n);
        }
    })?;
    if let Some(p) = progress {
        p.finish_and_clear();
    }
    Ok((format, summary))
}

/// `lanyard import FILE [--format F] [--timezone TZ] [--dry-run] [--json]`.
pub fn import(client: &Client, file: &Path, options: &ImportOptions) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let bytes = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    import_and_report(client, file, &bytes, options, started)
}

/// Imports `bytes` and prints what changed (as JSON with `--json`).
pub fn import_and_report(
    client: &Client,
    file: &Path,
    bytes: &[u8],
    options: &ImportOptions,
    started: std::time::Instant,
) -> anyhow::Result<()> {
    let (dry_run, json_out) = (options.dry_run, options.json_out);
    let (format, summary) = import_bytes(client, file, bytes, options)?;
    let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
    let c = &summary.counts;
    if json_out {
        let value = json!({
            "file": file.display().to_string(),
            "format": format_name(format),
            "time_zone": summary.time_zone,
            "days": summary.days,
            "rooms": summary.rooms,
            "sessions": summary.sessions,
            "added": c.added,
            "removed": c.removed,
            "changed": c.changed,
            "unchanged": c.unchanged,
            "change_bytes": c.change_bytes,
            "changes": c.changes,
            "dry_run": summary.dry_run,
            "elapsed_ms": (elapsed_ms * 10.0).round() / 10.0,
        });
        outln!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(());
    }
    outln!(
        "{} ({}): {} in {} over {} ({}), read in {elapsed_ms:.0} ms",
        file.display(),
        format_name(format),
        count(summary.sessions, "session"),
        count(summary.rooms, "room"),
        count(summary.days, "day"),
        summary.time_zone
    );
    let what = format!(
        "{} added, {} changed, {} cancelled, {} unchanged",
        c.added, c.changed, c.removed, c.unchanged
    );
    if dry_run {
        outln!(
            "dry run, nothing written: would make {what} ({} in {})",
            count(c.change_bytes, "byte"),
            count(c.changes, "change")
        );
    } else if c.change_bytes == 0 {
        outln!("nothing to change: the agenda already matches ({what})");
    } else {
        outln!(
            "imported: {what}; {} in {} (each within the server's change limit){}",
            count(c.change_bytes, "byte"),
            count(c.changes, "change"),
            crate::pending_note(client)
        );
    }
    Ok(())
}

/// `lanyard export [--format F] [--mine] [--output FILE]`.
pub fn export(
    client: &Client,
    format: ExportFormat,
    mine: bool,
    output: Option<&Path>,
) -> anyhow::Result<()> {
    let event = client.event_info()?;
    let mut sessions: Vec<Session> = client.sessions()?;
    if mine {
        let bookmarks = client.bookmarks()?;
        sessions.retain(|s| bookmarks.contains(&s.id));
    }
    write_export(&event, &sessions, format, output)
}

/// `lanyard export --agenda-file FILE`: an agenda document written by
/// `lanyard-server export` (`OUTDIR/agenda/EVENT.automerge`), no device needed.
pub fn export_agenda_file(
    file: &Path,
    format: ExportFormat,
    output: Option<&Path>,
) -> anyhow::Result<()> {
    let bytes = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    let doc = automerge::Automerge::load(&bytes)
        .with_context(|| format!("{} is not an Automerge document", file.display()))?;
    let id = file
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("event")
        .to_string();
    let (name, time_zone) = lanyard_client_core::docs::AgendaDoc::event(&doc);
    let sessions = lanyard_client_core::docs::AgendaDoc::sessions(&doc);
    if sessions.is_empty() && name.is_none() {
        bail!("{} holds no agenda (no event, no sessions)", file.display());
    }
    let event = lanyard_client_core::EventInfo {
        name: name.unwrap_or_else(|| id.clone()),
        time_zone: time_zone.unwrap_or_else(|| "UTC".into()),
        id,
    };
    write_export(&event, &sessions, format, output)
}

fn write_export(
    event: &lanyard_client_core::EventInfo,
    sessions: &[Session],
    format: ExportFormat,
    output: Option<&Path>,
) -> anyhow::Result<()> {
    let text = match format {
        ExportFormat::Ics => {
            let now = jiff::Timestamp::now().as_second();
            to_ics(event, sessions, now)?
        }
        ExportFormat::Json => {
            let mut t = serde_json::to_string_pretty(&to_schedule_json(event, sessions)?)?;
            t.push('\n');
            t
        }
        ExportFormat::Xml => to_schedule_xml(event, sessions)?,
    };
    match output {
        Some(path) => {
            std::fs::write(path, text)
                .with_context(|| format!("cannot write {}", path.display()))?;
            eprintln!(
                "lanyard: wrote {} to {}",
                count(sessions.len() as u64, "session"),
                path.display()
            );
        }
        None => out!("{text}"),
    }
    Ok(())
}

/// Hands alerts from the sync task to the printing loop.
struct ToChannel(mpsc::UnboundedSender<Alert>);

impl AlertListener for ToChannel {
    fn on_alert(&self, alert: Alert) {
        let _ = self.0.send(alert);
    }
}

fn alert_json(a: &Alert, tz: &str) -> anyhow::Result<Value> {
    let session = match &a.session {
        Some(s) => {
            let mut v = show::session_json(s, tz, None)?;
            if let Value::Object(m) = &mut v {
                for key in ["track", "speakers", "url", "links", "language", "type"] {
                    m.remove(key);
                }
            }
            v
        }
        None => Value::Null,
    };
    let previous_start = match a.previous_start_unix {
        Some(t) => json!(format_rfc3339(t, tz)?),
        None => Value::Null,
    };
    let announcement = match &a.announcement {
        Some(an) => json!({ "text": an.text, "at": format_rfc3339(an.at_unix, tz)? }),
        None => Value::Null,
    };
    Ok(json!({
        "kind": a.kind,
        "bookmarked": a.bookmarked,
        "message": a.message,
        "session": session,
        "previous_room": a.previous_room,
        "previous_start": previous_start,
        "announcement": announcement,
        "link": a.link.as_ref().map(|l| json!({ "url": l.url, "title": l.title })),
        "reservation": a
            .reservation
            .as_ref()
            .map(|r| show::reservation_json(r, tz))
            .transpose()?,
    }))
}

/// `lanyard watch [--json]`: background sync plus an alert listener, until
/// Ctrl-C or SIGTERM.
pub fn watch(client: &Client, json_out: bool) -> anyhow::Result<()> {
    let id = crate::identity(client)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let listener = client.add_alert_listener(Arc::new(ToChannel(tx)))?;
        let sync = client.start_background(BackgroundOptions::default());
        eprintln!(
            "lanyard: watching event {} on {}; Ctrl-C to stop",
            id.event, id.server
        );
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("cannot watch for SIGTERM")?;
        let mut status = client.status_changes();
        let mut last_state: Option<(bool, Option<String>)> = None;
        loop {
            tokio::select! {
                Some(alert) = rx.recv() => {
                    let tz = client.event_info()?.time_zone;
                    if json_out {
                        outln!("{}", serde_json::to_string(&alert_json(&alert, &tz)?)?);
                    } else {
                        outln!("{}", alert.message);
                    }
                }
                Ok(()) = status.changed() => {
                    let st = client.status();
                    let state = (st.connected, st.last_error.clone());
                    if last_state.as_ref() != Some(&state) {
                        match &state {
                            (true, _) => eprintln!("lanyard: connected"),
                            (false, Some(e)) => eprintln!("lanyard: not connected ({}); retrying", crate::one_line(e)),
                            (false, None) => {}
                        }
                        last_state = Some(state);
                    }
                }
                _ = tokio::signal::ctrl_c() => break,
                _ = term.recv() => break,
            }
        }
        client.remove_alert_listener(listener);
        sync.stop().await;
        Ok(())
    })
}
