//! Times: stored as UTC instants, shown in the event's IANA time zone.

use jiff::civil::{Date, DateTime};
use jiff::tz::TimeZone;
use jiff::Timestamp;

use crate::error::ClientError;

fn zone(tz: &str) -> Result<TimeZone, ClientError> {
    TimeZone::get(tz).map_err(|e| ClientError::Time(format!("unknown time zone {tz:?}: {e}")))
}

/// Checks that `tz` is a known IANA time zone.
pub fn check_zone(tz: &str) -> Result<(), ClientError> {
    zone(tz).map(|_| ())
}

/// RFC 3339 with the zone's offset, e.g. `2026-05-12T09:00:00-04:00`.
pub fn format_rfc3339(unix: i64, tz: &str) -> Result<String, ClientError> {
    let ts = Timestamp::from_second(unix).map_err(|e| ClientError::Time(e.to_string()))?;
    let z = ts.to_zoned(zone(tz)?);
    Ok(z.strftime("%Y-%m-%dT%H:%M:%S%:z").to_string())
}

/// `HH:MM` in the zone.
pub fn format_clock(unix: i64, tz: &str) -> Result<String, ClientError> {
    let ts = Timestamp::from_second(unix).map_err(|e| ClientError::Time(e.to_string()))?;
    Ok(ts.to_zoned(zone(tz)?).strftime("%H:%M").to_string())
}

/// The day (`YYYY-MM-DD`) of an instant in the zone.
pub fn day_of(unix: i64, tz: &str) -> Result<String, ClientError> {
    let ts = Timestamp::from_second(unix).map_err(|e| ClientError::Time(e.to_string()))?;
    Ok(ts.to_zoned(zone(tz)?).date().to_string())
}

/// Parses a time: RFC 3339 with an offset (`2026-05-12T09:00:00Z`), or a local
/// date-time (`2026-05-12T09:00` or `2026-05-12 09:00`) in the event's zone.
pub fn parse_time(input: &str, tz: &str) -> Result<i64, ClientError> {
    if let Ok(ts) = input.parse::<Timestamp>() {
        return Ok(ts.as_second());
    }
    let dt: DateTime = input.replace(' ', "T").parse().map_err(|_| {
        ClientError::Time(format!(
            "{input:?} is not a time: use 2026-05-12T09:00 (event time) or RFC 3339 with an offset"
        ))
    })?;
    let z = dt
        .to_zoned(zone(tz)?)
        .map_err(|e| ClientError::Time(e.to_string()))?;
    Ok(z.timestamp().as_second())
}

/// The instants `[start, end)` of a day in the zone.
pub fn day_bounds(day: &str, tz: &str) -> Result<(i64, i64), ClientError> {
    let d: Date = day
        .parse()
        .map_err(|_| ClientError::Time(format!("{day:?} is not a day: use YYYY-MM-DD")))?;
    let z = zone(tz)?;
    let start = d
        .to_zoned(z.clone())
        .map_err(|e| ClientError::Time(e.to_string()))?;
    let next = d
        .tomorrow()
        .and_then(|t| t.to_zoned(z))
        .map_err(|e| ClientError::Time(e.to_string()))?;
    Ok((start.timestamp().as_second(), next.timestamp().as_second()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn times_are_shown_in_the_event_zone() {
        // 13:00 UTC on a summer day is 09:00 in New York.
        let t = parse_time("2026-06-10T13:00:00Z", "UTC").unwrap();
        assert_eq!(
            format_rfc3339(t, "America/New_York").unwrap(),
            "2026-06-10T09:00:00-04:00"
        );
        assert_eq!(
            parse_time("2026-06-10T09:00", "America/New_York").unwrap(),
            t
        );
        assert_eq!(
            parse_time("2026-06-10 09:00", "America/New_York").unwrap(),
            t
        );
        assert_eq!(format_clock(t, "Asia/Tokyo").unwrap(), "22:00");
        assert_eq!(day_of(t, "Asia/Tokyo").unwrap(), "2026-06-10");
    }

    #[test]
    fn day_bounds_follow_the_zone_and_dst() {
        let (a, b) = day_bounds("2026-03-08", "America/New_York").unwrap();
        assert_eq!(b - a, 23 * 3600, "DST starts that day");
        assert!(day_bounds("2026-13-01", "UTC").is_err());
        assert!(parse_time("tomorrow", "UTC").is_err());
        assert!(check_zone("Mars/Olympus").is_err());
    }
}
