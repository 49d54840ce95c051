//! Deadlines and durations as an owner types them on a phone: `2026-11-25
//! 18:00` (the server's local time), RFC 3339, and `90m` / `2h` / `7d`.
//! Pure: the time zone is a parameter; only `now_utc` and `now_local` read
//! the clock, and every part of portlocker reads it through them.

use std::time::{SystemTime, UNIX_EPOCH};

use chrono::{DateTime, FixedOffset, Local, LocalResult, NaiveDateTime, TimeDelta, TimeZone, Utc};

/// Now, in UTC. A clock set before 1970 (a dead clock battery) reads as
/// 1970 itself: chrono's own `now` panics there, and a boot run that
/// panics enforces nothing.
pub fn now_utc() -> DateTime<Utc> {
    utc_at(SystemTime::now())
}

/// Now, in the zone portlocker runs in, as `now_utc` reads it.
pub fn now_local() -> DateTime<FixedOffset> {
    now_utc().with_timezone(&Local).fixed_offset()
}

/// `time` in UTC, a time before 1970 as 1970.
fn utc_at(time: SystemTime) -> DateTime<Utc> {
    match time.duration_since(UNIX_EPOCH) {
        Ok(since) => DateTime::UNIX_EPOCH + since,
        Err(_) => DateTime::UNIX_EPOCH,
    }
}

/// The longest duration accepted anywhere: ten years.
const MAX_DAYS: i64 = 3650;

/// Parses `N` followed by `m`, `h` or `d`, N from 1 up to ten years.
pub fn parse_duration(text: &str) -> Result<TimeDelta, String> {
    let bad = || format!("`{text}` is not a duration like 90m, 2h or 7d");
    let unit = text.chars().last().ok_or_else(bad)?;
    let digits = &text[..text.len() - unit.len_utf8()];
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) || digits.len() > 7 {
        return Err(bad());
    }
    let count: i64 = digits.parse().map_err(|_| bad())?;
    let duration = match unit {
        'm' => TimeDelta::minutes(count),
        'h' => TimeDelta::hours(count),
        'd' => TimeDelta::days(count),
        _ => return Err(bad()),
    };
    if count == 0 || duration > TimeDelta::days(MAX_DAYS) {
        return Err(format!(
            "`{text}` must be more than 0 and at most {MAX_DAYS}d"
        ));
    }
    Ok(duration)
}

/// A duration as the owner would write it back: `90m`, `2h`, `7d`.
pub fn show_duration(duration: TimeDelta) -> String {
    let minutes = duration.num_minutes();
    if minutes % (24 * 60) == 0 {
        format!("{}d", minutes / (24 * 60))
    } else if minutes % 60 == 0 {
        format!("{}h", minutes / 60)
    } else {
        format!("{minutes}m")
    }
}

/// Parses `YYYY-MM-DD HH:MM` in `zone` (strictly: `8:00` or `2026-1-5` are
/// refused), or one RFC 3339 word with its own offset.
pub fn parse_deadline<Tz: TimeZone>(
    words: &[&str],
    zone: &Tz,
) -> Result<DateTime<FixedOffset>, String> {
    match words {
        [rfc3339] => DateTime::parse_from_rfc3339(rfc3339).map_err(|_| {
            format!("`{rfc3339}` is not a time like 2026-11-25 18:00 or 2026-11-25T18:00:00+01:00")
        }),
        [date, time] => {
            let text = format!("{date} {time}");
            let naive = NaiveDateTime::parse_from_str(&text, "%Y-%m-%d %H:%M")
                .ok()
                // chrono is lenient about widths and signs; the owner's text must be exact.
                .filter(|naive| naive.format("%Y-%m-%d %H:%M").to_string() == text)
                .ok_or_else(|| format!("`{text}` is not a time like 2026-11-25 18:00"))?;
            match zone.from_local_datetime(&naive) {
                LocalResult::Single(time) => Ok(time.fixed_offset()),
                // A clock change repeats this hour: take the earlier moment.
                LocalResult::Ambiguous(a, b) => Ok(a.fixed_offset().min(b.fixed_offset())),
                LocalResult::None => {
                    // The offset in force before the clocks skipped, to write instead.
                    let before = zone
                        .from_local_datetime(&(naive - chrono::TimeDelta::hours(3)))
                        .earliest()
                        .map_or("+01:00".to_owned(), |t| {
                            t.fixed_offset().format("%:z").to_string()
                        });
                    Err(format!(
                        "`{text}` does not exist here (the clocks skip it); write the offset, like {date}T{time}:00{before}"
                    ))
                }
            }
        }
        _ => Err("a deadline is a date and a time, like 2026-11-25 18:00".into()),
    }
}

/// Whether `word` starts a `YYYY-MM-DD HH:MM` deadline (as opposed to RFC 3339).
pub fn is_bare_date(word: &str) -> bool {
    word.len() == 10 && !word.contains('T')
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{FixedOffset, Utc};

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90m"), Ok(TimeDelta::minutes(90)));
        assert_eq!(parse_duration("2h"), Ok(TimeDelta::hours(2)));
        assert_eq!(parse_duration("7d"), Ok(TimeDelta::days(7)));
        for bad in [
            "",
            "h",
            "2",
            "2x",
            "-2h",
            "+2h",
            "2.5h",
            "0h",
            "3651d",
            "99999999m",
            "2 h",
            "2H",
            "٣h",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
        assert_eq!(show_duration(TimeDelta::minutes(90)), "90m");
        assert_eq!(show_duration(TimeDelta::hours(2)), "2h");
        assert_eq!(show_duration(TimeDelta::days(7)), "7d");
    }

    #[test]
    fn deadlines_in_a_fixed_zone_and_rfc3339() {
        let cet = FixedOffset::east_opt(3600).unwrap();
        let expected = DateTime::parse_from_rfc3339("2026-11-25T18:00:00+01:00").unwrap();
        assert_eq!(parse_deadline(&["2026-11-25", "18:00"], &cet), Ok(expected));
        assert_eq!(
            parse_deadline(&["2026-11-25T18:00:00+01:00"], &Utc),
            Ok(expected)
        );
        assert_eq!(
            parse_deadline(&["2026-11-25T17:00:00Z"], &cet),
            Ok(expected)
        );
        for bad in [
            &["2026-11-25", "8:00"][..],
            &["2026-1-25", "18:00"],
            &["2026-11-25", "18:00:00"],
            &["2026-11-31", "18:00"],
            &["2026-11-25", "24:00"],
            &["2026-11-25T18:00:00"],
            &["tomorrow"],
            &["2026-11-25"],
            &[],
        ] {
            assert!(parse_deadline(bad, &cet).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_clock_before_1970_reads_as_1970() {
        let day = std::time::Duration::from_secs(86_400);
        assert_eq!(utc_at(UNIX_EPOCH - day), DateTime::UNIX_EPOCH);
        assert_eq!(utc_at(UNIX_EPOCH + day).timestamp(), 86_400);
        let now = SystemTime::now();
        assert_eq!(
            utc_at(now).timestamp_micros(),
            DateTime::<Utc>::from(now).timestamp_micros()
        );
    }
}
