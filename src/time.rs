//! Wall-clock instants as text. One conversion for the whole crate: reports, run records and the
//! run lock all write UTC times in RFC 3339, without pulling in a date crate for it; `prune`
//! reads them back (ACR's `lastUpdateTime`, an image config's `created`) and takes its ages
//! as short durations (`7d`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// `t` as RFC 3339 in UTC to the second, e.g. `2026-11-26T02:00:00Z`. Instants before 1970
/// (a clock set wrong) are written as the epoch.
pub fn rfc3339(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Howard Hinnant's days-to-civil: https://howardhinnant.github.io/date_algorithms.html#civil_from_days
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// Reads an RFC 3339 instant (`2026-11-26T02:00:00Z`, `…T02:00:00.1234567Z`,
/// `…T02:00:00+01:00`) as registries write them. `None` for anything else, and for instants
/// before 1970: an age that cannot be read is unknown, never a guess.
pub fn parse_rfc3339(text: &str) -> Option<SystemTime> {
    let t = text.trim();
    let num = |s: &str| -> Option<i64> { s.bytes().all(|b| b.is_ascii_digit()).then(|| s.parse().ok())? };
    if t.len() < 20 || t.as_bytes()[4] != b'-' || t.as_bytes()[7] != b'-' || !matches!(t.as_bytes()[10], b'T' | b't' | b' ')
    {
        return None;
    }
    let (y, m, d) = (num(t.get(0..4)?)?, num(t.get(5..7)?)?, num(t.get(8..10)?)?);
    let (hh, mm, ss) = (num(t.get(11..13)?)?, num(t.get(14..16)?)?, num(t.get(17..19)?)?);
    if t.as_bytes()[13] != b':' || t.as_bytes()[16] != b':' || !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    if hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    let mut rest = &t[19..];
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        rest = &frac[digits..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        _ if rest.len() == 6 && matches!(rest.as_bytes()[0], b'+' | b'-') && rest.as_bytes()[3] == b':' => {
            let sign = if rest.starts_with('-') { -1 } else { 1 };
            sign * (num(&rest[1..3])? * 3600 + num(&rest[4..6])? * 60)
        }
        _ => return None,
    };
    // Howard Hinnant's days-from-civil, the inverse of the conversion in `rfc3339`.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + hh * 3600 + mm * 60 + ss - offset;
    u64::try_from(secs).ok().map(|s| UNIX_EPOCH + Duration::from_secs(s))
}

/// Reads a duration as the config writes them: a whole number and one unit, `s`, `m`, `h` or
/// `d` (`90m`, `36h`, `7d`, `0s`).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let unit = t.chars().last().ok_or_else(|| "empty duration".to_string())?;
    let seconds = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86_400,
        _ => return Err(format!("{text:?} is not a duration: write a whole number and s, m, h or d (90m, 36h, 7d)")),
    };
    let n: u64 = t[..t.len() - 1].parse().map_err(|_| {
        format!("{text:?} is not a duration: write a whole number and s, m, h or d (90m, 36h, 7d)")
    })?;
    n.checked_mul(seconds).map(Duration::from_secs).ok_or_else(|| format!("{text:?} is too long"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn known_instants_convert() {
        // Checks the calendar arithmetic at the epoch, on a leap day and on a recent date; a
        // slip in the month/year shift of the algorithm breaks at least one of them.
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(UNIX_EPOCH + Duration::from_secs(951_782_400 + 3661)), "2000-02-29T01:01:01Z");
        assert_eq!(rfc3339(UNIX_EPOCH + Duration::from_secs(1_795_692_281)), "2026-11-26T11:24:41Z");
        assert_eq!(rfc3339(UNIX_EPOCH + Duration::from_secs(1_798_761_599)), "2026-12-31T23:59:59Z");
    }

    #[test]
    fn rfc3339_reads_back_what_registries_write() {
        // Checks the round trip with `rfc3339`, ACR's seven fractional digits, an offset, and
        // that text which is not an instant is unknown rather than misread.
        for secs in [0, 951_782_400 + 3661, 1_795_692_281, 1_798_761_599] {
            let t = UNIX_EPOCH + Duration::from_secs(secs);
            assert_eq!(parse_rfc3339(&rfc3339(t)), Some(t));
        }
        let acr = parse_rfc3339("2026-11-26T11:24:41.1234567Z").unwrap();
        assert_eq!(rfc3339(acr), "2026-11-26T11:24:41Z");
        assert_eq!(parse_rfc3339("2026-11-26T12:24:41+01:00"), Some(UNIX_EPOCH + Duration::from_secs(1_795_692_281)));
        for bad in ["", "yesterday", "2026-13-01T00:00:00Z", "2026-11-26T11:24:41", "2026-11-26T11:24:41.Z", "1960-01-01T00:00:00Z"] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }

    #[test]
    fn durations_take_one_unit() {
        // Checks the four units, zero, and that a missing unit, a fraction or a sign is refused.
        assert_eq!(parse_duration("90m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("36h"), Ok(Duration::from_secs(129_600)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(604_800)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        for bad in ["7", "1.5d", "-1d", "d", "", "7w"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
