//! `lanyard`: the command-line client of Lanyard, for organizers and attendees.
//!
//! It keeps this device's copy of an event's agenda and the user's notes and
//! bookmarks in a local database (`HOME/db`, through
//! [`lanyard_client_core::Client`]) and works fully offline; `lanyard sync`
//! exchanges changes with the event's server.
//!
//! ```text
//! lanyard join 'lanyard://HOST:PORT/EVENT?token=…&pin=…'
//! lanyard agenda [--day YYYY-MM-DD] [--json]
//! lanyard note ID [TEXT | --append TEXT]
//! lanyard bookmark ID [--off]
//! lanyard session add --id ID --title T --room R --start T --end T   (organizers)
//! lanyard session link ID URL [--title T]                            (organizers)
//! lanyard import FILE [--format json|xml|ics] [--timezone TZ] [--dry-run] [--json]   (organizers)
//! lanyard export [--format ics|json|xml] [--mine] [--output FILE]
//! lanyard watch [--json]
//! lanyard sync [--timeout SECS]
//! lanyard status [--json]
//! ```
//!
//! Errors are printed as one line (`lanyard: …`) on stderr with exit code 1
//! (2 for usage errors). Diagnostics go to stderr only when `RUST_LOG` is set.

mod args;
mod show;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context as _};
use clap::Parser as _;
use lanyard_client_core::time::{day_of, format_clock, format_rfc3339, parse_time};
use lanyard_client_core::{
    Client, ClientError, Identity, NewSession, Room, Session, SyncError, SyncReport,
};
use serde_json::Value;

use crate::args::{AddSession, Cli, Command, RoomCommand, SeatOverlap, SessionCommand};
use crate::show::count;

/// Writes a line to stdout. A closed pipe (`lanyard agenda | head`) ends the
/// program quietly instead of panicking.
macro_rules! outln {
    () => { $crate::write_stdout(format_args!("\n")) };
    ($($arg:tt)*) => { $crate::write_stdout(format_args!("{}\n", format_args!($($arg)*))) };
}

/// Writes to stdout without a newline; see [`outln!`].
macro_rules! out {
    ($($arg:tt)*) => { $crate::write_stdout(format_args!($($arg)*)) };
}

mod follow;
mod schedule;

fn write_stdout(args: std::fmt::Arguments<'_>) {
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = stdout.write_fmt(args).and_then(|()| stdout.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("lanyard: cannot write to stdout: {e}");
        std::process::exit(1);
    }
}

fn main() -> ExitCode {
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let msg = format!("{e:#}");
            eprintln!("lanyard: {}", one_line(&msg));
            ExitCode::FAILURE
        }
    }
}

/// Collapses a message onto one line.
fn one_line(msg: &str) -> String {
    msg.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The home directory: `--home`, `LANYARD_HOME`, or the platform data directory.
fn home_dir(arg: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    if let Some(home) = arg.filter(|h| !h.as_os_str().is_empty()) {
        return Ok(home);
    }
    directories::ProjectDirs::from("org", "lanyard", "lanyard")
        .map(|p| p.data_dir().to_path_buf())
        .context("cannot find a data directory for this user: pass --home DIR or set LANYARD_HOME")
}

/// Opens the client database. Only `join` creates it: other commands on a
/// home without a database fail with "not joined" and leave no trace.
fn open_client(home: &Path, create: bool) -> anyhow::Result<Client> {
    let db = home.join("db");
    if !create && !db.exists() {
        return Err(ClientError::NotJoined.into());
    }
    std::fs::create_dir_all(home)
        .with_context(|| format!("cannot create the directory {}", home.display()))?;
    Client::open(&db).with_context(|| format!("cannot open the database {}", db.display()))
}

fn identity(client: &Client) -> anyhow::Result<Identity> {
    client
        .identity()
        .ok_or_else(|| ClientError::NotJoined.into())
}

/// Fails early (before parsing anything else) unless this device is an organizer's.
fn require_organizer(client: &Client) -> anyhow::Result<Identity> {
    let id = identity(client)?;
    if id.role != "organizer" {
        return Err(ClientError::OrganizersOnly.into());
    }
    Ok(id)
}

fn time_zone(client: &Client) -> anyhow::Result<String> {
    Ok(client.event_info()?.time_zone)
}

fn print_json(value: &Value) -> anyhow::Result<()> {
    outln!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// `; 2 changes waiting for `lanyard sync``, for confirmations of local edits.
fn pending_note(client: &Client) -> String {
    match client.status().pending_changes {
        0 => String::new(),
        n => format!(" ({} waiting for `lanyard sync`)", count(n, "change")),
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    if let Command::Export {
        format,
        output,
        agenda_file: Some(file),
        ..
    } = &cli.command
    {
        return schedule::export_agenda_file(file, *format, output.as_deref());
    }
    let home = home_dir(cli.home)?;
    let create = matches!(cli.command, Command::Join { .. });
    let client = open_client(&home, create)?;
    match cli.command {
        Command::Join { link } => join(&client, &link),
        Command::Sync { timeout } => sync(&client, timeout),
        Command::Agenda { day, json } => agenda(&client, day.as_deref(), json),
        Command::Session { command } => session(&client, command),
        Command::Event {
            name,
            timezone,
            seat_overlap,
            offer_hold,
        } => event(&client, name, timezone, seat_overlap, offer_hold),
        Command::Reserve { id, cancel, accept } => reserve(&client, &id, cancel, accept),
        Command::Reservations { json } => reservations(&client, json),
        Command::Pass { id } => {
            identity(&client)?;
            outln!("{}", client.pass(&id)?);
            Ok(())
        }
        Command::Checkin { pass, walk_in } => checkin(&client, pass, walk_in),
        Command::Checkins { json } => checkins(&client, json),
        Command::Room { command } => room(&client, command),
        Command::Announce { text } => {
            require_organizer(&client)?;
            client.announce(&text)?;
            outln!("announcement posted{}", pending_note(&client));
            Ok(())
        }
        Command::Announcements { json } => {
            let tz = time_zone(&client)?;
            let list = client.announcements()?;
            if json {
                print_json(&show::announcements_json(&list, &tz)?)
            } else if list.is_empty() {
                outln!("No announcements.");
                Ok(())
            } else {
                out!("{}", show::announcements_text(&list, &tz)?);
                Ok(())
            }
        }
        Command::Note { id, text, append } => note(&client, &id, text, append),
        Command::Notes { json } => notes(&client, json),
        Command::Bookmark { id, off } => {
            identity(&client)?;
            client.set_bookmark(&id, !off)?;
            let what = if off {
                "removed the bookmark of"
            } else {
                "bookmarked"
            };
            outln!("{what} {id}{}", pending_note(&client));
            Ok(())
        }
        Command::Bookmarks { json } => bookmarks(&client, json),
        Command::Status { json } => status(&client, json),
        Command::ResolveRefused { json } => resolve_refused(&client, json),
        Command::Kept { json, clear } => kept(&client, json, clear),
        Command::Import {
            file,
            follow,
            every,
            fetch_timeout,
            format,
            timezone,
            dry_run,
            json,
            capacity_from_rooms,
        } => {
            require_organizer(&client)?;
            let options = schedule::ImportOptions {
                format,
                time_zone: timezone,
                dry_run,
                json_out: json,
            };
            let url = follow::is_url(&file).then(|| file.to_string_lossy().into_owned());
            match (url, follow) {
                (Some(url), true) => {
                    return follow::follow(
                        &client,
                        &url,
                        every,
                        &options,
                        fetch_timeout,
                        Duration::from_secs(60),
                    )
                }
                (None, true) => bail!("--follow needs the schedule's http(s) URL, not a file"),
                (Some(url), false) => follow::import_url(&client, &url, &options, fetch_timeout)?,
                (None, false) => schedule::import(&client, &file, &options)?,
            }
            if capacity_from_rooms && !dry_run {
                let n = client.capacities_from_rooms()?;
                // Not on stdout when it carries the import's JSON.
                let line = format!(
                    "{} given the capacity of their room{}",
                    count(n as u64, "session"),
                    pending_note(&client)
                );
                if json {
                    eprintln!("{line}");
                } else {
                    outln!("{line}");
                }
            }
            Ok(())
        }
        Command::Export {
            format,
            mine,
            output,
            ..
        } => schedule::export(&client, format, mine, output.as_deref()),
        Command::Watch { json } => schedule::watch(&client, json),
    }
}

fn join(client: &Client, link: &str) -> anyhow::Result<()> {
    let id = client.join(link)?;
    outln!(
        "joined event {} as {} ({}) on server {}; device {}",
        id.event,
        id.user,
        id.role,
        id.server,
        id.device
    );
    let expires = i64::try_from(id.expires_at_unix).unwrap_or(i64::MAX);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    if let Ok(at) = format_rfc3339(expires, "UTC") {
        if expires <= now {
            eprintln!("lanyard: warning: this invite's token expired at {at}; ask for a new link");
        } else {
            outln!("token valid until {at}");
        }
    }
    Ok(())
}

fn sync(client: &Client, timeout: u64) -> anyhow::Result<()> {
    let id = identity(client)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let result = runtime.block_on(client.sync(Duration::from_secs(timeout)));
    match sync_outcome(client, &id, result) {
        Ok(summary) => {
            outln!("{summary}");
            Ok(())
        }
        Err(reason) => bail!("{reason}"),
    }
}

/// The success summary, or the one-line reason the sync is not complete.
fn sync_outcome(
    client: &Client,
    id: &Identity,
    result: Result<SyncReport, SyncError>,
) -> Result<String, String> {
    let pending = client.status().pending_changes;
    let kept = match pending {
        0 => String::new(),
        n => format!(
            "; {} kept on this device for the next sync",
            count(n, "local change")
        ),
    };
    let report = match result {
        Ok(r) => r,
        Err(e @ SyncError::Timeout { .. }) => return Err(format!("server too slow: {e}{kept}")),
        Err(e) => return Err(format!("{e}{kept}")),
    };
    if let Some(first) = report.refused.first() {
        let more = match report.refused.len() - 1 {
            0 => String::new(),
            n => format!(" (and {n} more; see `lanyard status`)"),
        };
        // The server's message usually names the document already.
        let message = if first.message.starts_with(&format!("{}:", first.doc)) {
            first.message.clone()
        } else {
            format!("{}: {}", first.doc, first.message)
        };
        return Err(format!(
            "change refused: {message}{more}; run `lanyard resolve-refused` to set it aside and redo what can be redone"
        ));
    }
    if pending > 0 {
        return Err(format!(
            "not in sync: {} not acknowledged by the server",
            count(pending, "local change")
        ));
    }
    Ok(format!(
        "in sync with {}: received {}, {} acknowledged",
        id.server,
        count(report.received_changes, "change"),
        report.acknowledged_changes
    ))
}

fn agenda(client: &Client, day: Option<&str>, json: bool) -> anyhow::Result<()> {
    let info = client.event_info()?;
    let tz = &info.time_zone;
    let sessions = match day {
        Some(d) => client.sessions_on(d)?,
        None => client.sessions()?,
    };
    let seats = client.seat_counts()?;
    if json {
        let none = lanyard_client_core::SeatCount::default();
        let items = sessions
            .iter()
            .map(|s| show::session_json(s, tz, Some(seats.get(&s.id).unwrap_or(&none))))
            .collect::<anyhow::Result<Vec<_>>>()?;
        return print_json(&Value::Array(items));
    }
    outln!("{} - times in {tz}", info.name);
    outln!();
    if sessions.is_empty() {
        match day {
            Some(d) => outln!("No sessions on {d}."),
            None => outln!("No sessions yet (run `lanyard sync` to fetch the agenda)."),
        }
        return Ok(());
    }
    out!("{}", show::agenda_table(&sessions, tz, &seats)?);
    Ok(())
}

fn parse_at(input: &str, tz: &str, what: &str) -> anyhow::Result<i64> {
    parse_time(input, tz).with_context(|| format!("--{what}"))
}

/// `2026-06-10 09:00-10:00 (America/New_York), room Hall A`
fn when_where(s: &Session, tz: &str) -> anyhow::Result<String> {
    Ok(format!(
        "{} {}-{} ({tz}), room {}",
        day_of(s.start_unix, tz)?,
        format_clock(s.start_unix, tz)?,
        format_clock(s.end_unix, tz)?,
        s.room
    ))
}

fn session(client: &Client, command: SessionCommand) -> anyhow::Result<()> {
    match command {
        SessionCommand::Add(add) => add_session(client, add),
        SessionCommand::Show { id, json } => {
            let tz = time_zone(client)?;
            let s = client
                .session(&id)?
                .ok_or_else(|| ClientError::NoSuchSession(id.clone()))?;
            if json {
                let seats = client.seat_counts()?;
                let none = lanyard_client_core::SeatCount::default();
                let mut v = show::session_json(&s, &tz, Some(seats.get(&s.id).unwrap_or(&none)))?;
                if let Value::Object(map) = &mut v {
                    map.insert("abstract".into(), Value::String(s.abstract_text.clone()));
                }
                print_json(&v)
            } else {
                out!("{}", show::session_detail(&s, &tz)?);
                if s.capacity > 0 {
                    let seats = client.seat_counts()?;
                    outln!("  seats:    {}", show::fullness(&s, seats.get(&s.id)));
                }
                Ok(())
            }
        }
        SessionCommand::Move {
            id,
            room,
            start,
            end,
        } => {
            require_organizer(client)?;
            let tz = time_zone(client)?;
            let start = start.map(|t| parse_at(&t, &tz, "start")).transpose()?;
            let end = end.map(|t| parse_at(&t, &tz, "end")).transpose()?;
            client.move_session(&id, room, start, end)?;
            let s = client
                .session(&id)?
                .ok_or_else(|| ClientError::NoSuchSession(id.clone()))?;
            outln!(
                "moved {id}: now {}{}",
                when_where(&s, &tz)?,
                pending_note(client)
            );
            Ok(())
        }
        SessionCommand::Capacity { id, capacity } => {
            require_organizer(client)?;
            client.set_capacity(&id, capacity)?;
            let what = if capacity == 0 {
                "takes no reservations".to_owned()
            } else {
                format!("has {}", count(u64::from(capacity), "seat"))
            };
            outln!("{id} {what}{}", pending_note(client));
            Ok(())
        }
        SessionCommand::Cancel { id } => {
            require_organizer(client)?;
            client.cancel_session(&id)?;
            outln!("cancelled {id}{}", pending_note(client));
            Ok(())
        }
        SessionCommand::Link { id, url, title } => {
            require_organizer(client)?;
            client.add_session_link(&id, &url, &title)?;
            outln!(
                "added a link to {id}: {}{}",
                url.trim(),
                pending_note(client)
            );
            Ok(())
        }
    }
}

fn add_session(client: &Client, add: AddSession) -> anyhow::Result<()> {
    require_organizer(client)?;
    let tz = time_zone(client)?;
    let start_unix = parse_at(&add.start, &tz, "start")?;
    let end_unix = parse_at(&add.end, &tz, "end")?;
    let id = add.id.clone();
    client.add_session(NewSession {
        id: add.id,
        title: add.title,
        abstract_text: add.abstract_text,
        room: add.room,
        start_unix,
        end_unix,
        track: add.track,
        speakers: add.speakers,
    })?;
    if add.capacity > 0 {
        client.set_capacity(&id, add.capacity)?;
    }
    let s = client
        .session(&id)?
        .ok_or_else(|| ClientError::NoSuchSession(id.clone()))?;
    outln!(
        "added session {id}: {}{}",
        when_where(&s, &tz)?,
        pending_note(client)
    );
    Ok(())
}

fn event(
    client: &Client,
    name: Option<String>,
    timezone: Option<String>,
    seat_overlap: Option<SeatOverlap>,
    offer_hold: Option<std::time::Duration>,
) -> anyhow::Result<()> {
    let info = client.event_info()?;
    if seat_overlap.is_some() || offer_hold.is_some() {
        require_organizer(client)?;
        client.set_seat_policy(
            seat_overlap.map(|o| o == SeatOverlap::Allowed),
            offer_hold.map(|d| d.as_secs()),
        )?;
        let (overlap, hold) = client.seat_policy()?;
        outln!(
            "event {}: {}{}",
            info.id,
            seat_policy_text(overlap, hold),
            pending_note(client)
        );
        if name.is_none() && timezone.is_none() {
            return Ok(());
        }
    }
    if name.is_none() && timezone.is_none() {
        let (overlap, hold) = client.seat_policy()?;
        outln!("event:     {}", info.id);
        outln!("name:      {}", info.name);
        outln!("time zone: {}", info.time_zone);
        outln!("seats:     {}", seat_policy_text(overlap, hold));
        return Ok(());
    }
    require_organizer(client)?;
    let name = name.unwrap_or(info.name);
    let tz = timezone.unwrap_or(info.time_zone);
    client.set_event(&name, &tz)?;
    outln!(
        "event {}: name {name:?}, time zone {tz}{}",
        info.id,
        pending_note(client)
    );
    Ok(())
}

/// `overlapping seats refused; a freed seat goes to the first person waiting`.
fn seat_policy_text(overlap: bool, hold_secs: u64) -> String {
    let overlap = if overlap { "allowed" } else { "refused" };
    let freed = if hold_secs == 0 {
        "goes to the first person waiting at once".to_owned()
    } else {
        format!(
            "is offered to the first person waiting for {}",
            humantime::format_duration(std::time::Duration::from_secs(hold_secs))
        )
    };
    format!("overlapping seats {overlap}; a freed seat {freed}")
}

fn reserve(client: &Client, id: &str, cancel: bool, accept: bool) -> anyhow::Result<()> {
    identity(client)?;
    let (request, what) = if cancel {
        (client.cancel_reservation(id)?, "cancellation")
    } else if accept {
        (client.accept_offer(id)?, "acceptance")
    } else {
        (client.reserve(id)?, "reservation")
    };
    outln!(
        "{what} of {id} pending (request {request}); the server decides at the next sync{}",
        pending_note(client)
    );
    Ok(())
}

fn checkin(client: &Client, pass: Option<String>, walk_in: Option<String>) -> anyhow::Result<()> {
    require_organizer(client)?;
    if let Some(session) = walk_in {
        let n = client.walk_in(&session)?;
        let cap = client.session(&session)?.map_or(0, |s| s.capacity);
        outln!(
            "walk-in: {session}, {}{}",
            of_capacity(n, cap),
            pending_note(client)
        );
        return Ok(());
    }
    let c = client.check_in(pass.as_deref().unwrap_or_default())?;
    outln!(
        "ok: {}, {}, {}{}",
        c.user,
        c.session,
        of_capacity(c.checked_in, c.capacity),
        pending_note(client)
    );
    Ok(())
}

/// `17/200`, or `17` without a capacity.
fn of_capacity(n: u32, capacity: u32) -> String {
    if capacity == 0 {
        n.to_string()
    } else {
        format!("{n}/{capacity}")
    }
}

fn checkins(client: &Client, json: bool) -> anyhow::Result<()> {
    require_organizer(client)?;
    let list = client.checkins()?;
    if json {
        return print_json(&serde_json::to_value(&list)?);
    }
    if list.is_empty() {
        outln!("No check-ins yet.");
        return Ok(());
    }
    for s in &list {
        outln!(
            "{}: {} passes, {} walk-ins",
            s.session,
            s.passes,
            s.walk_ins
        );
        for d in &s.double_uses {
            outln!(
                "  DOUBLE USE: the pass of {} was admitted at {}",
                d.user,
                d.doors.join(" and ")
            );
        }
    }
    Ok(())
}

fn reservations(client: &Client, json: bool) -> anyhow::Result<()> {
    identity(client)?;
    let tz = time_zone(client)?;
    let list = client.reservations()?;
    if json {
        let items = list
            .iter()
            .map(|r| show::reservation_json(r, &tz))
            .collect::<anyhow::Result<Vec<_>>>()?;
        return print_json(&Value::Array(items));
    }
    if list.is_empty() {
        outln!("No reservations (reserve a seat with `lanyard reserve ID`).");
        return Ok(());
    }
    let titles = client
        .sessions()?
        .into_iter()
        .map(|s| (s.id, s.title))
        .collect();
    out!("{}", show::reservations_text(&list, &titles, &tz)?);
    Ok(())
}

fn room(client: &Client, command: RoomCommand) -> anyhow::Result<()> {
    match command {
        RoomCommand::Add { name, capacity } => {
            require_organizer(client)?;
            client.put_room(Room {
                name: name.clone(),
                capacity,
            })?;
            outln!("room {name} saved{}", pending_note(client));
            Ok(())
        }
        RoomCommand::List { json } => {
            let rooms = client.rooms()?;
            if json {
                let items: Vec<Value> = rooms
                    .iter()
                    .map(|r| serde_json::json!({ "name": r.name, "capacity": r.capacity }))
                    .collect();
                print_json(&Value::Array(items))
            } else if rooms.is_empty() {
                outln!("No rooms yet.");
                Ok(())
            } else {
                out!("{}", show::rooms_text(&rooms));
                Ok(())
            }
        }
    }
}

fn note(
    client: &Client,
    id: &str,
    text: Option<String>,
    append: Option<String>,
) -> anyhow::Result<()> {
    identity(client)?;
    match (text, append) {
        (Some(text), _) => {
            client.set_note(id, &text)?;
            outln!("note on {id} saved{}", pending_note(client));
        }
        (None, Some(more)) => {
            client.append_note(id, &more)?;
            outln!("note on {id} saved{}", pending_note(client));
        }
        (None, None) => {
            let text = client.note(id)?;
            if !text.is_empty() {
                if text.ends_with('\n') {
                    out!("{text}");
                } else {
                    outln!("{text}");
                }
            }
        }
    }
    Ok(())
}

fn notes(client: &Client, json: bool) -> anyhow::Result<()> {
    let notes = client.notes()?;
    if json {
        let items: Vec<Value> = notes
            .iter()
            .map(|(id, text)| serde_json::json!({ "id": id, "note": text }))
            .collect();
        return print_json(&Value::Array(items));
    }
    if notes.is_empty() {
        outln!("No notes yet.");
    }
    for (i, (id, text)) in notes.iter().enumerate() {
        if i > 0 {
            outln!();
        }
        let title = client.session(id)?.map(|s| s.title).unwrap_or_default();
        outln!("{}", format!("== {id} {title}").trim_end());
        outln!("{}", text.trim_end_matches('\n'));
    }
    Ok(())
}

fn bookmarks(client: &Client, json: bool) -> anyhow::Result<()> {
    let tz = time_zone(client)?;
    let ids = client.bookmarks()?;
    let mut entries = Vec::with_capacity(ids.len());
    for id in &ids {
        entries.push((id, client.session(id)?));
    }
    if json {
        let items = entries
            .iter()
            .map(|(id, s)| show::bookmark_json(id, s.as_ref(), &tz))
            .collect::<anyhow::Result<Vec<_>>>()?;
        return print_json(&Value::Array(items));
    }
    if entries.is_empty() {
        outln!("No bookmarks.");
    }
    for (id, s) in &entries {
        outln!("{}", show::bookmark_line(id, s.as_ref(), &tz)?);
    }
    Ok(())
}

fn resolve_refused(client: &Client, json: bool) -> anyhow::Result<()> {
    let report = client.resolve_refused()?;
    if json {
        return print_json(&serde_json::to_value(&report)?);
    }
    if report.set_aside == 0 {
        outln!("nothing to resolve: no change was refused");
        return Ok(());
    }
    outln!(
        "set aside {} (refused by the server, or built on one)",
        count(report.set_aside, "change")
    );
    for r in &report.redone {
        outln!("  redone: {r}");
    }
    for k in &report.kept {
        let about = k
            .session
            .as_deref()
            .map_or(String::new(), |s| format!(" (session {s})"));
        outln!("  kept{about}: {}\n    because {}", k.text, k.reason);
    }
    outln!(
        "{} to push; run `lanyard sync`{}",
        count(report.new_changes, "new change"),
        if report.kept.is_empty() {
            String::new()
        } else {
            "; the kept edits stay in `lanyard kept`".to_owned()
        }
    );
    Ok(())
}

fn kept(client: &Client, json: bool, clear: bool) -> anyhow::Result<()> {
    let kept = client.kept_edits()?;
    if json {
        print_json(&serde_json::to_value(&kept)?)?;
    } else if kept.is_empty() {
        outln!("no kept edits");
    } else {
        for k in &kept {
            let about = k
                .session
                .as_deref()
                .map_or(String::new(), |s| format!(", session {s}"));
            outln!("{}{about}: {}\n  because {}", k.doc, k.text, k.reason);
        }
    }
    if clear {
        client.clear_kept_edits()?;
        if !json {
            outln!("forgot {}", count(kept.len() as u64, "kept edit"));
        }
    }
    Ok(())
}

fn status(client: &Client, json: bool) -> anyhow::Result<()> {
    let id = identity(client)?;
    let tz = time_zone(client)?;
    let status = client.status();
    let last_error = status
        .last_error
        .clone()
        .map(|e| one_line(&e))
        .filter(|e| !e.is_empty());
    if json {
        return print_json(&show::status_json(&status, last_error.as_deref(), &tz)?);
    }
    outln!(
        "event {} as {} ({}), server {}",
        id.event,
        id.user,
        id.role,
        id.server
    );
    out!(
        "{}",
        show::status_text(&status, last_error.as_deref(), &tz)?
    );
    Ok(())
}
