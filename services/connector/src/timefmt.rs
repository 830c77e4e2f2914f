//! Timestamps as channels write them, to Unix milliseconds UTC. No clock is read here.

use omnifold_domain::calendar::{civil_from_days, days_from_civil};

/// Parses an RFC 3339 / ISO 8601 date-time: `2024-04-02T09:01:51-05:00`,
/// `2020-07-13T19:42:04.284Z`, or without an offset (`2017-03-22T19:28:02`, taken as UTC, as
/// WooCommerce's `*_gmt` fields are). A plain date (`2014-07-24`) is midnight UTC.
pub fn parse_ms(text: &str) -> Option<i64> {
    let text = text.trim();
    let (date, rest) = match text.find(['T', 't', ' ']) {
        Some(i) => (&text[..i], &text[i + 1..]),
        None => (text, ""),
    };
    let mut parts = date.splitn(3, '-');
    let year: i64 = parse_digits(parts.next()?, 4)?;
    let month: i64 = parse_digits(parts.next()?, 2)?;
    let day: i64 = parse_digits(parts.next()?, 2)?;
    if !(1..=12).contains(&month) || !(1..=days_in_month(year, month)).contains(&day) {
        return None;
    }
    let mut ms = days_from_civil(year, month as u32, day as u32) * 86_400_000;
    if rest.is_empty() {
        return Some(ms);
    }
    let (clock, offset_ms) = split_offset(rest)?;
    let mut hms = clock.splitn(3, ':');
    let hour: i64 = parse_digits(hms.next()?, 2)?;
    let minute: i64 = parse_digits(hms.next()?, 2)?;
    let (second, millis) = match hms.next() {
        None => (0, 0),
        Some(sec) => match sec.split_once(['.', ',']) {
            None => (parse_digits(sec, 2)?, 0),
            Some((whole, fraction)) => {
                if fraction.is_empty() || !fraction.bytes().all(|b| b.is_ascii_digit()) {
                    return None;
                }
                let padded: String = fraction.chars().chain("000".chars()).take(3).collect();
                (parse_digits(whole, 2)?, padded.parse::<i64>().ok()?)
            }
        },
    };
    if hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    ms += ((hour * 60 + minute) * 60 + second) * 1000 + millis;
    Some(ms - offset_ms)
}

/// Parses an X12 date, `CCYYMMDD`, as midnight UTC.
pub fn parse_yyyymmdd_ms(text: &str) -> Option<i64> {
    let text = text.trim();
    if text.len() != 8 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    parse_ms(&format!("{}-{}-{}", &text[..4], &text[4..6], &text[6..]))
}

fn split_offset(rest: &str) -> Option<(&str, i64)> {
    if let Some(clock) = rest.strip_suffix(['Z', 'z']) {
        return Some((clock, 0));
    }
    // a sign after the clock's first character starts the offset
    match rest.char_indices().skip(1).find(|(_, c)| *c == '+' || *c == '-') {
        None => Some((rest, 0)),
        Some((i, sign)) => {
            let offset = &rest[i + 1..];
            let (h, m) = match offset.split_once(':') {
                Some((h, m)) => (h, m),
                None if offset.len() == 4 => (&offset[..2], &offset[2..]),
                None => (offset, "00"),
            };
            let minutes = parse_digits(h, 2)? * 60 + parse_digits(m, 2)?;
            let sign = if sign == '-' { -1 } else { 1 };
            Some((&rest[..i], sign * minutes * 60_000))
        }
    }
}

fn parse_digits(text: &str, len: usize) -> Option<i64> {
    if text.len() != len || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Formats Unix milliseconds as ISO 8601 in UTC, `2020-07-13T19:42:04.284Z`: what SP-API's
/// date parameters take.
pub fn format_ms(ms: i64) -> String {
    let rest = ms.rem_euclid(86_400_000);
    let (year, month, day) = civil_from_days(ms.div_euclid(86_400_000));
    let (hour, minute) = (rest / 3_600_000, rest / 60_000 % 60);
    let (second, millis) = (rest / 1000 % 60, rest % 1000);
    format!("{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}.{millis:03}Z")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_channels_forms() {
        assert_eq!(parse_ms("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_ms("2020-07-13T19:42:04.284Z"), Some(1_594_669_324_284));
        assert_eq!(parse_ms("2024-04-02T09:01:51-05:00"), Some(1_712_066_511_000));
        assert_eq!(parse_ms("2024-04-02T14:01:51+00:00"), Some(1_712_066_511_000));
        assert_eq!(parse_ms("2017-03-22T19:28:02"), Some(1_490_210_882_000));
        assert_eq!(parse_yyyymmdd_ms("20140724"), Some(1_406_160_000_000));
        assert_eq!(parse_ms("2024-02-30T00:00:00Z"), None);
        assert_eq!(parse_ms("yesterday"), None);
    }

    #[test]
    fn formats_what_it_parses() {
        assert_eq!(format_ms(1_594_669_324_284), "2020-07-13T19:42:04.284Z");
        for ms in [0, 951_782_400_000, 1_709_164_800_999, 4_102_444_799_000, -86_400_001] {
            assert_eq!(parse_ms(&format_ms(ms)), Some(ms), "{}", format_ms(ms));
        }
    }
}
