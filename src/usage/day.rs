//! Days as the number of UTC days since 1970-01-01, and their `YYYY-MM-DD` names. UTC so that
//! a day's totals do not move when the box's time zone or daylight saving time does.

use std::time::{SystemTime, UNIX_EPOCH};

pub const SECONDS: u64 = 86_400;

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

pub fn of(unix: u64) -> u32 {
    u32::try_from(unix / SECONDS).unwrap_or(u32::MAX)
}

pub fn today() -> u32 {
    of(unix_now())
}

/// Seconds from `unix` until the next UTC midnight (at least 1).
pub fn seconds_to_midnight(unix: u64) -> u64 {
    (SECONDS - unix % SECONDS).max(1)
}

/// `YYYY-MM-DD` (Howard Hinnant's civil-from-days).
pub fn name(day: u32) -> String {
    let (y, m, d) = civil(i64::from(day));
    format!("{y:04}-{m:02}-{d:02}")
}

/// The day a `YYYY-MM-DD` names.
pub fn parse(text: &str) -> Option<u32> {
    let mut parts = text.splitn(3, '-');
    let y: i64 = parts.next()?.parse().ok()?;
    let m: i64 = parts.next()?.parse().ok()?;
    let d: i64 = parts.next()?.parse().ok()?;
    if text.len() != 10 || !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    let (y, m) = if m <= 2 { (y - 1, m + 9) } else { (y, m - 3) };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let day = u32::try_from(days).ok()?;
    (name(day) == text).then_some(day)
}

/// The first day of `day`'s month.
pub fn month_start(day: u32) -> u32 {
    let (_, _, d) = civil(i64::from(day));
    day - (d - 1)
}

fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_parses_days() {
        assert_eq!(name(0), "1970-01-01");
        assert_eq!(name(20_424), "2025-12-02");
        assert_eq!(name(19_782), "2024-02-29");
        for day in [0, 59, 60, 19_782, 20_424, 30_000] {
            assert_eq!(parse(&name(day)), Some(day));
        }
        assert_eq!(parse("2025-02-30"), None);
        assert_eq!(parse("2025-2-3"), None);
        assert_eq!(parse("garbage"), None);
        assert_eq!(name(month_start(20_424)), "2025-12-01");
        assert_eq!(seconds_to_midnight(SECONDS * 3), SECONDS);
        assert_eq!(seconds_to_midnight(SECONDS * 3 - 1), 1);
    }
}
