//! The event's time zone while a file is read: which zone floating local
//! times (no UTC offset) are read in, and where it came from.
//!
//! One rule for every reader (DESIGN.md, "Time"): a local time without an
//! offset is read in the file's own zone when it names a known one, else in
//! the fallback the caller gives (the organizer's `--timezone`, else the
//! agenda's zone), and never silently as UTC: with neither, reading a
//! floating time fails with [`ImportError::NoTimeZone`].

use std::cell::Cell;

use jiff::civil::DateTime;
use jiff::tz::TimeZone;
use jiff::Timestamp;

use super::ImportError;

/// Where the zone of an [`ImportedSchedule`](super::ImportedSchedule) came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ZoneSource {
    /// The file names it (`time_zone_name`, `X-WR-TIMEZONE`, a `TZID`).
    File,
    /// The file names none; the caller's fallback zone was used.
    Fallback,
    /// Neither the file nor the caller named one: every time in the file had
    /// an offset, and `time_zone` is `"UTC"` only to count days.
    Unnamed,
}

/// A local time could not be placed because no zone is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct NoZone;

/// The zone floating times of one file are read in.
#[derive(Debug)]
pub(crate) struct EventZone {
    /// The IANA name, when known.
    name: Option<String>,
    tz: TimeZone,
    source: ZoneSource,
    /// Set when a floating local time was read.
    floating: Cell<bool>,
}

/// The canonical IANA name of a zone the bundled tz database knows.
pub(crate) fn known_zone(name: &str) -> Option<String> {
    let name = name.trim();
    let tz = TimeZone::get(name).ok()?;
    Some(tz.iana_name().unwrap_or(name).to_owned())
}

impl EventZone {
    /// The file's own zone when it is known, else `fallback`. A fallback that
    /// is not a known IANA zone is an error (the caller typed it), while an
    /// unknown zone in the file is ignored, as readers are lenient.
    pub(crate) fn new(
        file_zone: Option<&str>,
        fallback: Option<&str>,
    ) -> Result<Self, ImportError> {
        let (name, source) = if let Some(name) = file_zone.and_then(known_zone) {
            (Some(name), ZoneSource::File)
        } else if let Some(given) = fallback {
            let name = known_zone(given).ok_or_else(|| ImportError::UnknownTimeZone {
                name: given.to_owned(),
            })?;
            (Some(name), ZoneSource::Fallback)
        } else {
            (None, ZoneSource::Unnamed)
        };
        let tz = name
            .as_deref()
            .and_then(|n| TimeZone::get(n).ok())
            .unwrap_or(TimeZone::UTC);
        Ok(EventZone {
            name,
            tz,
            source,
            floating: Cell::new(false),
        })
    }

    /// The zone, or UTC when none is known: for placing instants on dates,
    /// never for reading floating times.
    pub(crate) fn tz(&self) -> &TimeZone {
        &self.tz
    }

    /// The IANA name, `"UTC"` when none is known.
    pub(crate) fn name(&self) -> &str {
        self.name.as_deref().unwrap_or("UTC")
    }

    /// Where the zone came from.
    pub(crate) fn source(&self) -> ZoneSource {
        self.source
    }

    /// Whether a floating local time was read.
    pub(crate) fn had_floating_times(&self) -> bool {
        self.floating.get()
    }

    /// A floating local time as an instant in the event's zone (a time
    /// skipped by a DST change moves forward by the gap, a repeated time is
    /// its first occurrence). `Err(NoZone)` when no zone is known;
    /// `Ok(None)` when the time is out of range.
    pub(crate) fn local(&self, dt: DateTime) -> Result<Option<Timestamp>, NoZone> {
        self.floating.set(true);
        if self.name.is_none() {
            return Err(NoZone);
        }
        Ok(dt.to_zoned(self.tz.clone()).ok().map(|z| z.timestamp()))
    }
}

impl NoZone {
    /// The import error for a floating time found at `at` (a line, an
    /// element or a JSON path).
    pub(crate) fn at(self, at: impl Into<String>) -> ImportError {
        ImportError::NoTimeZone { at: at.into() }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn the_file_zone_wins_then_the_fallback_and_never_utc_silently() {
        let dt: DateTime = "2025-02-01T09:30".parse().unwrap();
        let brussels = Timestamp::from_second(1_738_398_600).unwrap(); // 08:30Z

        let z = EventZone::new(Some(" Europe/Brussels "), Some("Asia/Tokyo")).unwrap();
        assert_eq!(
            (z.name(), z.source()),
            ("Europe/Brussels", ZoneSource::File)
        );
        assert!(!z.had_floating_times());
        assert_eq!(z.local(dt).unwrap(), Some(brussels));
        assert!(z.had_floating_times());

        // An unknown zone in the file is ignored; the fallback is used.
        let z = EventZone::new(Some("Mars/Olympus_Mons"), Some("Europe/Brussels")).unwrap();
        assert_eq!(z.source(), ZoneSource::Fallback);
        assert_eq!(z.local(dt).unwrap(), Some(brussels));

        let z = EventZone::new(None, None).unwrap();
        assert_eq!((z.name(), z.source()), ("UTC", ZoneSource::Unnamed));
        assert_eq!(z.local(dt), Err(NoZone));

        // A fallback the caller typed wrong is an error, not UTC.
        let err = EventZone::new(None, Some("Europe/Brusels")).unwrap_err();
        assert_eq!(
            err,
            ImportError::UnknownTimeZone {
                name: "Europe/Brusels".into()
            }
        );
    }
}
