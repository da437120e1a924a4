//! The command line, as clap derive types.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// The `lanyard` command line.
#[derive(Debug, Parser)]
#[command(
    name = "lanyard",
    version,
    about = "Conference agenda, notes and bookmarks that work offline, synced with a Lanyard server",
    long_about = "Conference agenda, notes and bookmarks that work offline, synced with a Lanyard server.\n\n\
        Start with `lanyard join LINK` using the invite link from your badge or the organizers. \
        Every command except `sync` works without a network; `sync` exchanges changes with the server.\n\n\
        Times are always shown in the event's time zone. Errors are printed as one line on stderr \
        and the exit code is non-zero. Set RUST_LOG (e.g. RUST_LOG=debug) for diagnostics on stderr."
)]
pub struct Cli {
    /// Directory holding this device's Lanyard data (the database is DIR/db).
    ///
    /// Defaults to the platform's data directory for Lanyard (for example
    /// ~/.local/share/lanyard on Linux).
    #[arg(long, global = true, env = "LANYARD_HOME", value_name = "DIR")]
    pub home: Option<PathBuf>,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Join an event with an invite link (stores the credentials; no network).
    Join {
        /// The invite link: lanyard://HOST:PORT/EVENT?token=TOKEN&pin=PIN
        link: String,
    },
    /// Exchange changes with the server once and report whether everything is in sync.
    ///
    /// Exits 0 only when every document is in sync and every local change was
    /// acknowledged by the server. A refused change, an unreachable server, an
    /// expired token or a timeout exit non-zero with a one-line reason.
    Sync {
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 30, value_name = "SECS",
              value_parser = clap::value_parser!(u64).range(1..))]
        timeout: u64,
    },
    /// Show the agenda, grouped by day, in the event's time zone.
    ///
    /// --json prints an array of objects with the keys id, title, room, start,
    /// end (RFC 3339 with the event zone's offset), status (scheduled, moved or
    /// cancelled), track ("" if none), speakers (array of strings), url (the
    /// session's page, "" if none), links (array of {url, title}: slides,
    /// recordings, ...), language and type ("" if unknown).
    Agenda {
        /// Only sessions starting on this day (YYYY-MM-DD, event time zone).
        #[arg(long, value_name = "YYYY-MM-DD")]
        day: Option<String>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Add, show, move or cancel a session (changes are for organizers only).
    Session {
        /// What to do with the session.
        #[command(subcommand)]
        command: SessionCommand,
    },
    /// Show the event, or set its name, time zone and seat settings (setting is for organizers only).
    ///
    /// Without options, prints the event's id, name, time zone and seat
    /// settings. With --name and/or --timezone, changes them; an option left
    /// out keeps its current value.
    Event {
        /// The event's display name.
        #[arg(long, value_name = "NAME")]
        name: Option<String>,
        /// The event's IANA time zone, e.g. Europe/Berlin or America/New_York.
        #[arg(long, value_name = "TZ")]
        timezone: Option<String>,
        /// Whether one attendee may hold seats in sessions that overlap in
        /// time (refused by default).
        #[arg(long, value_enum, value_name = "ALLOWED|REFUSED")]
        seat_overlap: Option<SeatOverlap>,
        /// When a seat frees up, offer it to the first person waiting for
        /// this long before it moves on (--offer-hold alone: 10m); 0
        /// confirms them at once (the default).
        #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration,
              num_args = 0..=1, default_missing_value = "10m")]
        offer_hold: Option<std::time::Duration>,
    },
    /// Reserve a seat in a session, give it back, or accept an offered seat.
    ///
    /// Works offline: the request is stored on this device at once and shows
    /// as pending; the server decides at the next sync (confirmed,
    /// waitlisted with a place, or refused with a reason), in the order
    /// requests reach it. See `lanyard reservations`.
    Reserve {
        /// The session's id.
        id: String,
        /// Give back your seat, offered seat or waitlist place.
        #[arg(long, conflicts_with = "accept")]
        cancel: bool,
        /// Accept a seat offered to you from the waitlist.
        #[arg(long)]
        accept: bool,
    },
    /// Print the pass of your confirmed seat in a session, for the door.
    ///
    /// The pass is signed by the server; an app shows it as a QR code, and
    /// a door device checks it with `lanyard checkin PASS`, offline.
    Pass {
        /// The session's id.
        id: String,
    },
    /// Check a pass in at the door, offline (organizers only).
    ///
    /// Prints `ok: USER, SESSION, N/CAPACITY` and exits 0, or a one-line
    /// refusal and exits 1: already checked in (with when and at which
    /// door), forged, of another event, expired, or revoked (the seat was
    /// given back). Check-ins are stored on this device and synced; passes
    /// two doors admitted offline count once and are listed by `lanyard
    /// checkins`. --walk-in ID lets someone in without a reservation.
    Checkin {
        /// The pass (from `lanyard pass`, or scanned).
        #[arg(required_unless_present = "walk_in", conflicts_with = "walk_in")]
        pass: Option<String>,
        /// Count a walk-in to this session instead.
        #[arg(long, value_name = "ID")]
        walk_in: Option<String>,
    },
    /// Check-ins per session as this door knows them, and passes used at two doors (organizers only).
    ///
    /// --json prints an array of {session, passes, walk_ins, double_uses:
    /// [{user, doors}]}.
    Checkins {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// List your reservations: one per session, with where each stands.
    ///
    /// --json prints an array of objects with the keys session, state
    /// (pending, confirmed, waitlisted, offered, refused or cancelled),
    /// position (waitlist place from 1, else null), reason (or null),
    /// updated (RFC 3339, event time zone) and offer_until (or null).
    Reservations {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Add or list rooms (adding is for organizers only).
    Room {
        /// What to do with rooms.
        #[command(subcommand)]
        command: RoomCommand,
    },
    /// Post an announcement to every attendee (organizers only).
    Announce {
        /// The announcement's text.
        text: String,
    },
    /// List the organizers' announcements, oldest first.
    Announcements {
        /// Print JSON: an array of {text, at} objects (at in RFC 3339, event time zone).
        #[arg(long)]
        json: bool,
    },
    /// Print, replace or append to your note on a session.
    ///
    /// `lanyard note ID` prints the note; `lanyard note ID TEXT` replaces it
    /// (an empty TEXT clears it); `lanyard note ID --append TEXT` appends TEXT
    /// exactly as given (include a leading space or newline if you want one).
    /// Notes are private to you and shared between your devices.
    Note {
        /// The session's id.
        id: String,
        /// The new text of the note (replaces the whole note).
        #[arg(conflicts_with = "append")]
        text: Option<String>,
        /// Text to add at the end of the note.
        #[arg(long, value_name = "TEXT")]
        append: Option<String>,
    },
    /// List all your non-empty notes.
    Notes {
        /// Print JSON: an array of {id, note} objects.
        #[arg(long)]
        json: bool,
    },
    /// Bookmark a session, or remove the bookmark with --off.
    Bookmark {
        /// The session's id.
        id: String,
        /// Remove the bookmark instead of setting it.
        #[arg(long)]
        off: bool,
    },
    /// List your bookmarked sessions.
    ///
    /// --json prints an array of objects: {id, title, start, end, room,
    /// status} for a session in the local agenda (start and end in RFC 3339,
    /// event time zone; status scheduled, moved or cancelled: a bookmark on
    /// a cancelled session is kept and flagged), or just {id} for a bookmark
    /// whose session is not known on this device (e.g. before the agenda was
    /// synced).
    Bookmarks {
        /// Print JSON instead of a list.
        #[arg(long)]
        json: bool,
    },
    /// Import a schedule file into the agenda (organizers only).
    ///
    /// Reads a frab/pretalx schedule.json (or schedule2), a frab/pentabarf
    /// schedule.xml or an iCalendar .ics file, prints what it holds and what
    /// importing changes, and applies it as one change (sent at the next
    /// `lanyard sync`). Importing a newer version of the same schedule
    /// changes only what changed: sessions are matched by GUID/UID, then by
    /// the file's id, then by title; sessions missing from the file are
    /// cancelled, not deleted. A malformed file is an error naming the line
    /// or field, and the agenda is left untouched.
    ///
    /// Times with a UTC offset are taken as they are. Local times without
    /// one (older frab/pentabarf exports give only <start>, iCalendar
    /// floating DTSTART) are read in the file's own time zone, else in
    /// --timezone, else in the agenda's zone (`lanyard event --timezone`, or
    /// an earlier import); a file with such times and no zone anywhere is
    /// refused. The file's zone (else --timezone) becomes the agenda's.
    ///
    /// --json prints one object with the keys file, format, time_zone, days
    /// (distinct dates, in the event's time zone, on which a session
    /// starts), rooms (distinct rooms holding a session), sessions, added,
    /// removed (cancelled by this import), changed, unchanged, change_bytes
    /// (size of the Automerge changes made; 0 when nothing changed), changes
    /// (how many: a large import is split so each fits the server's change
    /// limit), dry_run and elapsed_ms (reading, parsing and applying the file).
    Import {
        /// The schedule file, or its http(s) URL (the one pretalx or frab
        /// publishes).
        file: PathBuf,
        /// Keep fetching the URL (conditional GET: ETag, Last-Modified) and
        /// import and sync every new version, one line each, until
        /// interrupted; a failed fetch or a malformed version is reported
        /// and the agenda keeps the last good version.
        #[arg(long)]
        follow: bool,
        /// How often --follow fetches.
        #[arg(long, default_value = "2m", value_parser = humantime::parse_duration, requires = "follow")]
        every: std::time::Duration,
        /// A fetch of the URL that takes longer than this is given up (and
        /// reported; with --follow the next one is tried --every later).
        #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
        fetch_timeout: std::time::Duration,
        /// The file's format (default: from the extension, else from the content).
        #[arg(long, value_enum)]
        format: Option<ImportFormat>,
        /// The event's IANA time zone, for local times in a file that names
        /// none (e.g. Europe/Brussels).
        #[arg(long, value_name = "TZ")]
        timezone: Option<String>,
        /// Show what would change without changing anything.
        #[arg(long)]
        dry_run: bool,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        /// Give every session without a capacity the capacity of its room
        /// (rooms of unknown capacity are left alone).
        #[arg(long)]
        capacity_from_rooms: bool,
    },
    /// Export the agenda, or your bookmarked sessions, as iCalendar, schedule.json or schedule.xml.
    ///
    /// The .ics export is for calendar apps (times in UTC, the event's zone
    /// as X-WR-TIMEZONE, cancelled sessions marked STATUS:CANCELLED); the
    /// json export is a c3voc schedule.json valid against the c3voc JSON
    /// Schema, and the xml export a frab/pentabarf schedule.xml valid
    /// against the c3voc XSD, for schedule apps (days and times in the
    /// event's zone, cancelled sessions left out). Each keeps the sessions'
    /// pages, links, language and type, and re-imports with `lanyard
    /// import` to the same sessions.
    Export {
        /// The format to write.
        #[arg(long, value_enum, default_value_t = ExportFormat::Ics)]
        format: ExportFormat,
        /// Only your bookmarked sessions (a personal calendar).
        #[arg(long)]
        mine: bool,
        /// Write to this file instead of stdout.
        #[arg(long, short, value_name = "FILE")]
        output: Option<PathBuf>,
        /// Export an agenda document written by `lanyard-server export`
        /// (OUTDIR/agenda/EVENT.automerge) instead of this device's agenda;
        /// needs no joined device.
        #[arg(long, value_name = "FILE", conflicts_with = "mine")]
        agenda_file: Option<PathBuf>,
    },
    /// Stay connected and print schedule changes as they arrive, until Ctrl-C.
    ///
    /// Each change is one line: a session added, moved (room or time),
    /// cancelled or reinstated, an announcement, a new link (e.g. the
    /// recording) on a session you bookmarked, or news of your seats
    /// (confirmed, waitlisted, a seat opened up, offered, offer expired,
    /// released because the session was cancelled, refused); changes to your
    /// bookmarked sessions say so. Times are in the event's time zone.
    /// Connection problems are reported on stderr and retried.
    ///
    /// --json prints one JSON object per line with the keys kind (added,
    /// moved, cancelled, reinstated, announcement, link, seat_confirmed,
    /// seat_waitlisted, seat_promoted, seat_offered, seat_offer_expired,
    /// seat_released, seat_refused), bookmarked, message, session (null, or
    /// {id, title, room, start, end, status}), previous_room, previous_start
    /// (null unless changed by a move), announcement (null, or {text, at}),
    /// link (null, or the new {url, title} of a bookmarked session, e.g. its
    /// recording) and reservation (null, or the reservation as
    /// `reservations --json` lists it).
    Watch {
        /// Print JSON lines instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Show sync status: pending changes, last sync, refused changes, last error.
    ///
    /// --json prints an object with the keys pending_changes (number),
    /// last_sync (RFC 3339 string, or null if never), refused (array of
    /// {doc, change, message}), kept_edits (number of edits set aside that
    /// could not be redone; see `lanyard kept`) and last_error (string or null).
    Status {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Get past changes the server refused (no network needed).
    ///
    /// A refused change blocks every later edit of the same document. This
    /// sets the refused changes and everything built on them aside, rebuilds
    /// the document from what the server holds, and redoes the edits that
    /// can be redone as new changes within the server's limits (an import
    /// refused for its size is redone in smaller changes). What cannot be
    /// redone is kept and shown (`lanyard kept`). Then run `lanyard sync`.
    ///
    /// --json prints an object with the keys set_aside (number), redone
    /// (array of strings), new_changes (number) and kept (array of {doc,
    /// session, text, reason}).
    ResolveRefused {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Show the edits set aside that could not be redone (notes text in full).
    ///
    /// --json prints an array of {doc, session, text, reason}.
    Kept {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        /// Forget them (after you copied what you need).
        #[arg(long)]
        clear: bool,
    },
}

/// `lanyard session …`
#[derive(Debug, Subcommand)]
pub enum SessionCommand {
    /// Add a session (organizers only).
    ///
    /// Times are RFC 3339 with an offset (2026-05-12T13:00:00Z) or a local
    /// date and time in the event's time zone (2026-05-12T09:00).
    Add(AddSession),
    /// Show one session in detail.
    Show {
        /// The session's id.
        id: String,
        /// Print JSON (the same keys as `agenda --json`, plus abstract).
        #[arg(long)]
        json: bool,
    },
    /// Move a session to another room and/or time (organizers only).
    ///
    /// Give --room, or --start and --end together, or all three.
    Move {
        /// The session's id.
        id: String,
        /// The new room.
        #[arg(long, value_name = "ROOM")]
        room: Option<String>,
        /// The new start (RFC 3339, or local event time like 2026-05-12T09:00).
        #[arg(long, value_name = "TIME", requires = "end")]
        start: Option<String>,
        /// The new end (RFC 3339, or local event time like 2026-05-12T10:00).
        #[arg(long, value_name = "TIME", requires = "start")]
        end: Option<String>,
    },
    /// Set how many seats a session has (organizers only); 0 takes no reservations.
    ///
    /// Raising it confirms people from the waitlist; lowering it below the
    /// confirmed count bumps nobody (new requests wait).
    Capacity {
        /// The session's id.
        id: String,
        /// Number of seats.
        capacity: u32,
    },
    /// Cancel a session (organizers only); it stays in the agenda marked cancelled.
    Cancel {
        /// The session's id.
        id: String,
    },
    /// Add a link to a session, e.g. its recording after the talk (organizers only).
    ///
    /// The URL must be an absolute http:// or https:// URL; adding a URL the
    /// session has already replaces its title. Attendees who bookmarked the
    /// session are alerted at their next sync: "The recording of ... is
    /// online" when the link looks like a video (a title saying recording,
    /// video or VOD, a video file such as .mp4 or .webm, or a video site such
    /// as video.fosdem.org, media.ccc.de, YouTube or Vimeo), else "New link
    /// for ...".
    Link {
        /// The session's id.
        id: String,
        /// The link's URL.
        url: String,
        /// What the link is, e.g. "Recording" or "Slides".
        #[arg(long, value_name = "TITLE", default_value = "")]
        title: String,
    },
}

/// The options of `lanyard session add`.
#[derive(Debug, Args)]
pub struct AddSession {
    /// A stable id for the session (e.g. the schedule's own GUID).
    #[arg(long, value_name = "ID")]
    pub id: String,
    /// The title.
    #[arg(long, value_name = "TITLE")]
    pub title: String,
    /// The room's name.
    #[arg(long, value_name = "ROOM")]
    pub room: String,
    /// The start (RFC 3339, or local event time like 2026-05-12T09:00).
    #[arg(long, value_name = "TIME")]
    pub start: String,
    /// The end (RFC 3339, or local event time like 2026-05-12T10:00).
    #[arg(long, value_name = "TIME")]
    pub end: String,
    /// The track, if any.
    #[arg(long, value_name = "TRACK", default_value = "")]
    pub track: String,
    /// A speaker's name (repeat for several speakers).
    #[arg(long = "speaker", value_name = "NAME")]
    pub speakers: Vec<String>,
    /// The session's abstract.
    #[arg(long = "abstract", value_name = "TEXT", default_value = "")]
    pub abstract_text: String,
    /// Seats that can be reserved (0: no reservations).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub capacity: u32,
}

/// `--seat-overlap`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SeatOverlap {
    /// One attendee may hold seats in sessions at the same time.
    Allowed,
    /// A reservation overlapping a seat one holds is refused.
    Refused,
}

/// `lanyard room …`
#[derive(Debug, Subcommand)]
pub enum RoomCommand {
    /// Add a room, or change an existing room's capacity (organizers only).
    Add {
        /// The room's name (also its id).
        name: String,
        /// Number of seats (0 if unknown).
        #[arg(long, default_value_t = 0, value_name = "N")]
        capacity: u32,
    },
    /// List the rooms.
    List {
        /// Print JSON: an array of {name, capacity} objects.
        #[arg(long)]
        json: bool,
    },
}

/// Formats `lanyard import` reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ImportFormat {
    /// frab/pretalx schedule.json (c3voc), or schedule2.
    Json,
    /// frab/pentabarf schedule.xml (c3voc).
    Xml,
    /// iCalendar (RFC 5545).
    Ics,
}

/// Formats `lanyard export` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExportFormat {
    /// iCalendar (RFC 5545), for calendar apps.
    Ics,
    /// c3voc schedule.json, for schedule apps.
    Json,
    /// frab/pentabarf schedule.xml (c3voc XSD), for schedule apps.
    Xml,
}
