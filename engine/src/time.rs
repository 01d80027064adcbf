//! Timestamps: `i64` nanoseconds since the Unix epoch (UTC), and strict
//! RFC 3339 parsing and formatting of them.
//!
//! The engine orders, windows and compares events by time on every line, so a
//! time is a plain integer ([`Nanos`]) rather than a calendar struct: adding,
//! subtracting and comparing are single instructions and the value is `Copy`.
//! An `i64` of nanoseconds spans roughly 1677-09-21 to 2262-04-11; anything
//! outside that is rejected instead of being clamped or wrapped, because a
//! silently wrong time corrupts every window it falls into.
//!
//! The parser is strict on purpose: input comes from feeds we do not control,
//! and accepting loose spellings (missing offsets, local times, week dates)
//! would let ambiguous data in. It accepts exactly
//! `YYYY-MM-DD('T'|'t'|' ')HH:MM:SS[.1-9 digits]('Z'|'z'|(+|-)HH:MM)`.
//!
//! Decisions worth knowing:
//! * A leap second (`:60`) is rejected with its own error. The engine has no
//!   use for UTC's leap seconds, and folding one into the next second would
//!   make two different inputs parse to the same instant without telling
//!   anyone.
//! * More than nine fraction digits is rejected rather than truncated, so a
//!   source sending finer precision is noticed instead of quietly rounded.
//!
//! Calendar conversion is done with proleptic-Gregorian day arithmetic written
//! here, so parsing needs no allocation and no dependency.

/// Nanoseconds since 1970-01-01T00:00:00Z.
pub type Nanos = i64;

pub const NANOS_PER_SEC: i64 = 1_000_000_000;

const SECS_PER_DAY: i64 = 86_400;
/// Days from 0000-03-01 (the start of the shifted calendar below) to
/// 1970-01-01.
const EPOCH_SHIFT_DAYS: i64 = 719_468;
/// The Gregorian calendar repeats exactly every 400 years, which is 146 097
/// days, so all day arithmetic reduces to one 400-year era.
const DAYS_PER_ERA: i64 = 146_097;
/// "YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ": the year always has four digits because
/// the whole `i64` range lies within 1677..=2262.
const MAX_FORMATTED_LEN: usize = 30;
/// "YYYY-MM-DDTHH:MM:SSZ", the shortest valid input.
const MIN_INPUT_LEN: usize = 20;
const MAX_FRACTION_DIGITS: usize = 9;

/// Why a string is not an accepted RFC 3339 time. Each message is meant to
/// be shown to a person as is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TimeError {
    #[error("time is not RFC 3339 (expected YYYY-MM-DDTHH:MM:SS with a Z or \u{b1}HH:MM offset)")]
    Malformed,
    #[error("time has more than nanosecond precision (at most 9 fraction digits)")]
    TooPrecise,
    #[error("time has an invalid date")]
    InvalidDate,
    #[error("time has an invalid time of day (hour 00-23, minute 00-59, second 00-59)")]
    InvalidTimeOfDay,
    #[error("time has second 60, but leap seconds are not supported")]
    LeapSecond,
    #[error("time has an invalid UTC offset (hours 00-23, minutes 00-59)")]
    InvalidOffset,
    #[error(
        "time is out of range (must be between 1677-09-21T00:12:43.145224192Z and 2262-04-11T23:47:16.854775807Z)"
    )]
    OutOfRange,
}

/// Parses a strict RFC 3339 timestamp (see the module docs) into UTC
/// nanoseconds. Does not allocate.
pub fn parse_rfc3339(s: &str) -> Result<Nanos, TimeError> {
    let b = s.as_bytes();
    if b.len() < MIN_INPUT_LEN {
        return Err(TimeError::Malformed);
    }
    let year = digits(b, 0, 4)?;
    literal(b, 4, b'-')?;
    let month = digits(b, 5, 2)?;
    literal(b, 7, b'-')?;
    let day = digits(b, 8, 2)?;
    if !matches!(b[10], b'T' | b't' | b' ') {
        return Err(TimeError::Malformed);
    }
    let hour = digits(b, 11, 2)?;
    literal(b, 13, b':')?;
    let minute = digits(b, 14, 2)?;
    literal(b, 16, b':')?;
    let second = digits(b, 17, 2)?;

    let mut i = 19;
    let mut fraction_nanos = 0i64;
    if b[i] == b'.' {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            if i - start == MAX_FRACTION_DIGITS {
                return Err(TimeError::TooPrecise);
            }
            fraction_nanos = fraction_nanos * 10 + i64::from(b[i] - b'0');
            i += 1;
        }
        let count = i - start;
        if count == 0 {
            return Err(TimeError::Malformed);
        }
        for _ in count..MAX_FRACTION_DIGITS {
            fraction_nanos *= 10;
        }
    }

    // Offset in seconds east of UTC.
    let offset_secs = match b.get(i) {
        Some(b'Z' | b'z') => {
            i += 1;
            0
        }
        Some(&sign @ (b'+' | b'-')) => {
            if b.len() < i + 6 {
                return Err(TimeError::Malformed);
            }
            let hours = digits(b, i + 1, 2)?;
            literal(b, i + 3, b':')?;
            let minutes = digits(b, i + 4, 2)?;
            i += 6;
            if hours > 23 || minutes > 59 {
                return Err(TimeError::InvalidOffset);
            }
            let magnitude = hours * 3_600 + minutes * 60;
            if sign == b'-' { -magnitude } else { magnitude }
        }
        _ => return Err(TimeError::Malformed),
    };
    if i != b.len() {
        return Err(TimeError::Malformed);
    }

    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return Err(TimeError::InvalidDate);
    }
    if hour > 23 || minute > 59 {
        return Err(TimeError::InvalidTimeOfDay);
    }
    match second {
        60 => return Err(TimeError::LeapSecond),
        61.. => return Err(TimeError::InvalidTimeOfDay),
        _ => {}
    }

    let local_secs =
        days_from_civil(year, month, day) * SECS_PER_DAY + hour * 3_600 + minute * 60 + second;
    // i128 because the last second at each end of the range only fits once
    // its fraction is added: its whole-second part alone overflows i64 ns.
    let total = i128::from(local_secs - offset_secs) * i128::from(NANOS_PER_SEC)
        + i128::from(fraction_nanos);
    Nanos::try_from(total).map_err(|_| TimeError::OutOfRange)
}

/// Appends `t` as RFC 3339 in UTC with a `Z`, e.g. `2026-11-25T10:05:00Z`.
/// The fraction appears only when non-zero, without trailing zeros
/// (`…:00.5Z`, `…:00.000001Z`).
pub fn write_rfc3339(t: Nanos, out: &mut Vec<u8>) {
    let mut buf = [0u8; MAX_FORMATTED_LEN];
    let len = render(t, &mut buf);
    out.extend_from_slice(&buf[..len]);
}

/// [`write_rfc3339`] into a new `String`.
pub fn format_rfc3339(t: Nanos) -> String {
    let mut buf = [0u8; MAX_FORMATTED_LEN];
    let len = render(t, &mut buf);
    buf[..len].iter().map(|&b| char::from(b)).collect()
}

fn render(t: Nanos, buf: &mut [u8; MAX_FORMATTED_LEN]) -> usize {
    // Euclidean division keeps the time of day positive for pre-1970 times.
    let secs = t.div_euclid(NANOS_PER_SEC);
    let nanos = t.rem_euclid(NANOS_PER_SEC);
    let days = secs.div_euclid(SECS_PER_DAY);
    let sec_of_day = secs.rem_euclid(SECS_PER_DAY);
    let (year, month, day) = civil_from_days(days);

    put_digits(buf, 0, year, 4);
    buf[4] = b'-';
    put_digits(buf, 5, month, 2);
    buf[7] = b'-';
    put_digits(buf, 8, day, 2);
    buf[10] = b'T';
    put_digits(buf, 11, sec_of_day / 3_600, 2);
    buf[13] = b':';
    put_digits(buf, 14, sec_of_day / 60 % 60, 2);
    buf[16] = b':';
    put_digits(buf, 17, sec_of_day % 60, 2);
    let mut len = 19;
    if nanos != 0 {
        buf[len] = b'.';
        put_digits(buf, len + 1, nanos, MAX_FRACTION_DIGITS);
        len += 1 + MAX_FRACTION_DIGITS;
        while buf[len - 1] == b'0' {
            len -= 1;
        }
    }
    buf[len] = b'Z';
    len + 1
}

/// Writes the low `width` decimal digits of a non-negative `value`,
/// zero-padded.
fn put_digits(buf: &mut [u8], at: usize, mut value: i64, width: usize) {
    for slot in buf[at..at + width].iter_mut().rev() {
        *slot = b'0' + (value % 10) as u8;
        value /= 10;
    }
}

/// Reads `width` ASCII digits at `at`. Callers have checked the length.
fn digits(b: &[u8], at: usize, width: usize) -> Result<i64, TimeError> {
    let mut value = 0i64;
    for &c in &b[at..at + width] {
        let d = c.wrapping_sub(b'0');
        if d > 9 {
            return Err(TimeError::Malformed);
        }
        value = value * 10 + i64::from(d);
    }
    Ok(value)
}

fn literal(b: &[u8], at: usize, expected: u8) -> Result<(), TimeError> {
    if b[at] == expected {
        Ok(())
    } else {
        Err(TimeError::Malformed)
    }
}

fn is_leap_year(year: i64) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap_year(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
///
/// Counting the year from March puts February, and so the leap day, last:
/// the day of the year then no longer depends on whether the year is a leap
/// year, and month lengths from March follow a regular 153-days-per-5-months
/// pattern that a linear formula captures.
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let shifted_year = if month <= 2 { year - 1 } else { year };
    let era = shifted_year.div_euclid(400);
    let year_of_era = shifted_year.rem_euclid(400);
    let month_from_march = (month + 9) % 12;
    let day_of_year = (153 * month_from_march + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * DAYS_PER_ERA + day_of_era - EPOCH_SHIFT_DAYS
}

/// The inverse of [`days_from_civil`]: `(year, month, day)`.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let shifted = days + EPOCH_SHIFT_DAYS;
    let era = shifted.div_euclid(DAYS_PER_ERA);
    let day_of_era = shifted.rem_euclid(DAYS_PER_ERA);
    // Undo the leap-day corrections (every 4th year, not every 100th, but
    // every 400th) to find the year within the era.
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = era * 400 + year_of_era + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = NANOS_PER_SEC;

    #[test]
    fn parses_epoch() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Ok(0));
    }

    #[test]
    fn parses_known_instant() {
        assert_eq!(parse_rfc3339("2026-11-25T10:05:00Z"), Ok(1_795_601_100 * S));
    }

    #[test]
    fn accepts_lowercase_and_space_separators() {
        let want = Ok(1_795_601_100 * S);
        assert_eq!(parse_rfc3339("2026-11-25t10:05:00z"), want);
        assert_eq!(parse_rfc3339("2026-11-25 10:05:00Z"), want);
    }

    #[test]
    fn applies_offsets() {
        let want = Ok(1_795_601_100 * S);
        assert_eq!(parse_rfc3339("2026-11-25T12:35:00+02:30"), want);
        assert_eq!(parse_rfc3339("2026-11-25T05:05:00-05:00"), want);
        assert_eq!(parse_rfc3339("2026-11-25T10:05:00-00:00"), want);
        assert_eq!(parse_rfc3339("2026-11-26T10:04:00+23:59"), want);
    }

    #[test]
    fn scales_fractions() {
        let base = 1_795_601_100 * S;
        assert_eq!(parse_rfc3339("2026-11-25T10:05:00.5Z"), Ok(base + S / 2));
        assert_eq!(
            parse_rfc3339("2026-11-25T10:05:00.000001Z"),
            Ok(base + 1_000)
        );
        assert_eq!(
            parse_rfc3339("2026-11-25T10:05:00.123456789Z"),
            Ok(base + 123_456_789)
        );
        assert_eq!(parse_rfc3339("2026-11-25T10:05:00.000000000Z"), Ok(base));
    }

    #[test]
    fn pre_epoch_times() {
        assert_eq!(parse_rfc3339("1969-12-31T23:59:59Z"), Ok(-S));
        assert_eq!(parse_rfc3339("1969-12-31T23:59:59.5Z"), Ok(-S / 2));
        assert_eq!(
            parse_rfc3339("1900-01-01T00:00:00Z"),
            Ok(-2_208_988_800 * S)
        );
    }

    #[test]
    fn validates_leap_years() {
        assert_eq!(parse_rfc3339("2024-02-29T00:00:00Z"), Ok(1_709_164_800 * S));
        assert!(parse_rfc3339("2000-02-29T00:00:00Z").is_ok());
        assert_eq!(
            parse_rfc3339("2023-02-29T00:00:00Z"),
            Err(TimeError::InvalidDate)
        );
        assert_eq!(
            parse_rfc3339("1900-02-29T00:00:00Z"),
            Err(TimeError::InvalidDate)
        );
    }

    #[test]
    fn rejects_invalid_dates() {
        for s in [
            "2026-00-01T00:00:00Z",
            "2026-13-01T00:00:00Z",
            "2026-01-00T00:00:00Z",
            "2026-01-32T00:00:00Z",
            "2026-04-31T00:00:00Z",
            "2026-11-31T00:00:00Z",
        ] {
            assert_eq!(parse_rfc3339(s), Err(TimeError::InvalidDate), "{s}");
        }
    }

    #[test]
    fn rejects_invalid_times_of_day() {
        for s in [
            "2026-01-01T24:00:00Z",
            "2026-01-01T23:60:00Z",
            "2026-01-01T23:59:61Z",
            "2026-01-01T99:00:00Z",
        ] {
            assert_eq!(parse_rfc3339(s), Err(TimeError::InvalidTimeOfDay), "{s}");
        }
    }

    #[test]
    fn rejects_leap_second() {
        assert_eq!(
            parse_rfc3339("2016-12-31T23:59:60Z"),
            Err(TimeError::LeapSecond)
        );
        assert_eq!(
            TimeError::LeapSecond.to_string(),
            "time has second 60, but leap seconds are not supported"
        );
    }

    #[test]
    fn rejects_sub_nanosecond_precision() {
        assert_eq!(
            parse_rfc3339("2026-11-25T10:05:00.1234567891Z"),
            Err(TimeError::TooPrecise)
        );
    }

    #[test]
    fn rejects_invalid_offsets() {
        for s in ["2026-11-25T10:05:00+24:00", "2026-11-25T10:05:00-01:60"] {
            assert_eq!(parse_rfc3339(s), Err(TimeError::InvalidOffset), "{s}");
        }
    }

    #[test]
    fn rejects_malformed_text() {
        for s in [
            "",
            "2026-11-25",
            "2026-11-25T10:05:00",
            "2026-11-25T10:05Z",
            "2026-11-25T10:05:00.Z",
            "2026-11-25T10:05:00+0200",
            "2026-11-25T10:05:00+02",
            "2026-11-25T10:05:00 Z",
            "2026-11-25T10:05:00ZZ",
            "2026-11-25T10:05:00Z ",
            " 2026-11-25T10:05:00Z",
            "2026/11/25T10:05:00Z",
            "2026-11-25X10:05:00Z",
            "+2026-11-25T10:05:00Z",
            "2026-1-25T10:05:00Z0",
            "2026-11-25T10:05:00UTC",
            "2026-11-25T10:05:00\u{2212}02:00",
            "\u{e9}026-11-25T10:05:00Z",
        ] {
            assert_eq!(parse_rfc3339(s), Err(TimeError::Malformed), "{s:?}");
        }
        assert_eq!(
            TimeError::Malformed.to_string(),
            "time is not RFC 3339 (expected YYYY-MM-DDTHH:MM:SS with a Z or \u{b1}HH:MM offset)"
        );
    }

    #[test]
    fn range_limits_are_exact() {
        assert_eq!(
            parse_rfc3339("1677-09-21T00:12:43.145224192Z"),
            Ok(i64::MIN)
        );
        assert_eq!(
            parse_rfc3339("2262-04-11T23:47:16.854775807Z"),
            Ok(i64::MAX)
        );
        for s in [
            "1677-09-21T00:12:43.145224191Z",
            "2262-04-11T23:47:16.854775808Z",
            "0000-01-01T00:00:00Z",
            "9999-12-31T23:59:59Z",
            "2262-04-11T23:47:16.854775807-00:01",
        ] {
            assert_eq!(parse_rfc3339(s), Err(TimeError::OutOfRange), "{s}");
        }
    }

    #[test]
    fn formats_without_zero_fraction() {
        assert_eq!(format_rfc3339(1_795_601_100 * S), "2026-11-25T10:05:00Z");
        assert_eq!(format_rfc3339(0), "1970-01-01T00:00:00Z");
    }

    #[test]
    fn formats_trimmed_fractions() {
        let base = 1_795_601_100 * S;
        assert_eq!(format_rfc3339(base + S / 2), "2026-11-25T10:05:00.5Z");
        assert_eq!(format_rfc3339(base + 1_000), "2026-11-25T10:05:00.000001Z");
        assert_eq!(format_rfc3339(base + 1), "2026-11-25T10:05:00.000000001Z");
    }

    #[test]
    fn formats_pre_epoch_times() {
        assert_eq!(format_rfc3339(-1), "1969-12-31T23:59:59.999999999Z");
        assert_eq!(format_rfc3339(-S), "1969-12-31T23:59:59Z");
        assert_eq!(format_rfc3339(-2_208_988_800 * S), "1900-01-01T00:00:00Z");
    }

    #[test]
    fn formats_range_limits() {
        assert_eq!(format_rfc3339(i64::MIN), "1677-09-21T00:12:43.145224192Z");
        assert_eq!(format_rfc3339(i64::MAX), "2262-04-11T23:47:16.854775807Z");
    }

    #[test]
    fn write_appends() {
        let mut out = b"at ".to_vec();
        write_rfc3339(0, &mut out);
        assert_eq!(out, b"at 1970-01-01T00:00:00Z");
    }

    #[test]
    fn civil_conversion_round_trips_every_day_in_range() {
        let first = i64::MIN.div_euclid(NANOS_PER_SEC).div_euclid(SECS_PER_DAY);
        let last = i64::MAX.div_euclid(NANOS_PER_SEC).div_euclid(SECS_PER_DAY);
        let mut expected = civil_from_days(first);
        for days in first..=last {
            let (y, m, d) = civil_from_days(days);
            assert_eq!((y, m, d), expected, "day {days}");
            assert_eq!(days_from_civil(y, m, d), days);
            // Step the expected date by hand to check the calendar itself.
            expected = if d < days_in_month(y, m) {
                (y, m, d + 1)
            } else if m < 12 {
                (y, m + 1, 1)
            } else {
                (y + 1, 1, 1)
            };
        }
    }
}
