//! Times as the time series REST API reads and writes them. Pure.
//!
//! Read (`fromDate`, `toDate`, `beforeDate`): ISO 8601 with an offset (`2024-05-01T12:00:00Z`,
//! `...+02:00`), a date-time or a date without one (taken as UTC), milliseconds since the epoch,
//! `now`, or `now` plus or minus a duration: `now-7d`, `now-15m`, `now+1h` (units `ms`, `s`,
//! `m`, `h`, `d`, `w`). Written: ISO 8601 in UTC with milliseconds (`2024-05-01T12:00:00.000Z`).

use jiff::{Timestamp, civil};

/// An ISO 8601 time: with an offset, or a civil date-time / date taken as UTC.
pub fn parse_iso(s: &str) -> Result<i64, String> {
    let invalid = || format!("invalid ISO 8601 time {s:?}");
    if let Ok(ts) = s.parse::<Timestamp>() {
        return Ok(ts.as_millisecond());
    }
    let civil = s
        .parse::<civil::DateTime>()
        .or_else(|_| {
            s.parse::<civil::Date>()
                .map(|d| d.to_datetime(civil::Time::midnight()))
        })
        .map_err(|_| invalid())?;
    civil
        .to_zoned(jiff::tz::TimeZone::UTC)
        .map(|z| z.timestamp().as_millisecond())
        .map_err(|_| invalid())
}

/// A REST date parameter (see the module docs), relative to `now` (ms).
pub fn parse_date(s: &str, now: i64) -> Result<i64, String> {
    let s = s.trim();
    if let Some(rest) = s.strip_prefix("now") {
        if rest.is_empty() {
            return Ok(now);
        }
        let (sign, amount) = match rest.split_at(1) {
            ("-", amount) => (-1, amount),
            ("+", amount) => (1, amount),
            _ => return Err(format!("invalid date {s:?}: expected now, now-7d, now+1h, ...")),
        };
        return duration_ms(amount)
            .map(|d| now.saturating_add(sign * d))
            .ok_or_else(|| format!("invalid duration in {s:?}: use a number and ms, s, m, h, d or w"));
    }
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return s
            .parse::<i64>()
            .map_err(|_| format!("invalid date {s:?}: out of range"));
    }
    parse_iso(s)
}

/// `15m` -> 900000.
fn duration_ms(s: &str) -> Option<i64> {
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    let (n, unit) = s.split_at(digits);
    let n: i64 = n.parse().ok()?;
    let factor = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        "w" => 7 * 86_400_000,
        _ => return None,
    };
    n.checked_mul(factor)
}

/// ISO 8601 in UTC with milliseconds; times out of jiff's range are clamped to it.
pub fn format_iso(ms: i64) -> String {
    let ts = Timestamp::from_millisecond(ms).unwrap_or(if ms < 0 { Timestamp::MIN } else { Timestamp::MAX });
    ts.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_700_000_000_000;

    #[test]
    fn relative_dates() {
        assert_eq!(parse_date("now", NOW), Ok(NOW));
        assert_eq!(parse_date("now-7d", NOW), Ok(NOW - 7 * 86_400_000));
        assert_eq!(parse_date("now-15m", NOW), Ok(NOW - 900_000));
        assert_eq!(parse_date("now+1h", NOW), Ok(NOW + 3_600_000));
        assert_eq!(parse_date("now-500ms", NOW), Ok(NOW - 500));
        assert_eq!(parse_date("now-2w", NOW), Ok(NOW - 14 * 86_400_000));
        for bad in [
            "now-",
            "now-7",
            "now-7y",
            "now7d",
            "now--1d",
            "now-99999999999999999w",
        ] {
            assert!(parse_date(bad, NOW).is_err(), "{bad}");
        }
    }

    #[test]
    fn absolute_dates() {
        assert_eq!(parse_date("1700000000123", NOW), Ok(1_700_000_000_123));
        assert_eq!(parse_date("2024-01-02T03:04:05.678Z", NOW), Ok(1_704_164_645_678));
        assert_eq!(
            parse_date("2024-01-02T04:04:05.678+01:00", NOW),
            Ok(1_704_164_645_678)
        );
        assert_eq!(parse_date("2024-01-02T03:04:05", NOW), Ok(1_704_164_645_000));
        assert_eq!(parse_date("2024-01-02", NOW), Ok(1_704_153_600_000));
        for bad in ["", "yesterday", "2024-13-01", "99999999999999999999"] {
            assert!(parse_date(bad, NOW).is_err(), "{bad}");
        }
    }

    #[test]
    fn written_times_are_utc_with_milliseconds() {
        assert_eq!(format_iso(1_704_164_645_678), "2024-01-02T03:04:05.678Z");
        assert_eq!(format_iso(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(parse_iso(&format_iso(1_704_164_645_000)), Ok(1_704_164_645_000));
        assert!(format_iso(i64::MAX).starts_with("9999-"));
    }
}
