//! Date and timestamp literals in Postgres' canonical text form, as stored in SQLite and printed back.

use crate::error::CoordError;
use chrono::{DateTime, NaiveDate, NaiveDateTime};
use tessera_shared::PgType;

const TS_FORMATS: [&str; 6] = [
    "%Y-%m-%d %H:%M:%S%.f",
    "%Y-%m-%dT%H:%M:%S%.f",
    "%Y-%m-%d %H:%M",
    "%Y-%m-%dT%H:%M",
    "%Y-%m-%d %H:%M:%S",
    "%Y-%m-%dT%H:%M:%S",
];

fn bad(ty: PgType, s: &str) -> CoordError {
    CoordError::Storage {
        sqlstate: "22007".into(),
        message: format!("invalid input syntax for type {}: \"{s}\"", ty.name()),
    }
}

fn ts_text(t: NaiveDateTime) -> String {
    let s = t.format("%Y-%m-%d %H:%M:%S%.6f").to_string();
    // Postgres prints no fractional part when it is zero, and no trailing zeros.
    let s = s.trim_end_matches('0');
    s.trim_end_matches('.').to_string()
}

/// A timestamp with a UTC offset, as UTC.
fn with_offset(t: &str) -> Option<NaiveDateTime> {
    [
        "%Y-%m-%d %H:%M:%S%.f%#z",
        "%Y-%m-%dT%H:%M:%S%.f%#z",
        "%Y-%m-%d %H:%M:%S%#z",
        "%Y-%m-%dT%H:%M:%S%#z",
    ]
    .iter()
    .find_map(|f| DateTime::parse_from_str(t, f).ok())
    .map(|d| d.naive_utc())
}

/// The canonical text of a date/time literal, or 22007 if it is not one.
pub fn canonical(s: &str, ty: PgType) -> Result<String, CoordError> {
    let t = s.trim();
    let naive = || -> Option<NaiveDateTime> {
        NaiveDate::parse_from_str(t, "%Y-%m-%d")
            .ok()
            .and_then(|d| d.and_hms_opt(0, 0, 0))
            .or_else(|| {
                TS_FORMATS
                    .iter()
                    .find_map(|f| NaiveDateTime::parse_from_str(t, f).ok())
            })
    };
    match ty {
        PgType::Date => {
            let d = NaiveDate::parse_from_str(t, "%Y-%m-%d")
                .ok()
                .or_else(|| naive().map(|x| x.date()))
                .or_else(|| with_offset(t).map(|x| x.date()))
                .ok_or_else(|| bad(ty, s))?;
            Ok(d.format("%Y-%m-%d").to_string())
        }
        // A value with a time zone (now(), a timestamptz literal) loses it, as in Postgres.
        PgType::Timestamp => naive()
            .or_else(|| with_offset(t))
            .map(ts_text)
            .ok_or_else(|| bad(ty, s)),
        // Without an offset, the session time zone (UTC) applies.
        PgType::Timestamptz => with_offset(t)
            .or_else(naive)
            .map(|x| format!("{}+00", ts_text(x)))
            .ok_or_else(|| bad(ty, s)),
        _ => Ok(s.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_forms() {
        assert_eq!(
            canonical("2024-02-29", PgType::Date).expect("date"),
            "2024-02-29"
        );
        assert_eq!(
            canonical("2024-02-29T12:34:56", PgType::Timestamp).expect("ts"),
            "2024-02-29 12:34:56"
        );
        assert_eq!(
            canonical("2024-02-29 12:34:56.500", PgType::Timestamp).expect("ts"),
            "2024-02-29 12:34:56.5"
        );
        assert_eq!(
            canonical("2024-02-29", PgType::Timestamp).expect("ts"),
            "2024-02-29 00:00:00"
        );
        assert_eq!(
            canonical("2024-02-29 12:00:00+02", PgType::Timestamptz).expect("tz"),
            "2024-02-29 10:00:00+00"
        );
        assert_eq!(
            canonical("2024-02-29 12:00:00", PgType::Timestamptz).expect("tz"),
            "2024-02-29 12:00:00+00"
        );
        assert_eq!(
            canonical("2023-02-29", PgType::Date)
                .expect_err("bad")
                .sqlstate(),
            "22007"
        );
        assert_eq!(
            canonical("soon", PgType::Timestamp)
                .expect_err("bad")
                .sqlstate(),
            "22007"
        );
    }

    #[test]
    fn values_with_a_time_zone_into_timestamp_and_date() {
        assert_eq!(
            canonical("2026-11-27 12:00:38.097680+00", PgType::Timestamp).expect("now()"),
            "2026-11-27 12:00:38.09768"
        );
        assert_eq!(
            canonical("2026-11-27 23:30:00+02", PgType::Date).expect("date"),
            "2026-11-27"
        );
    }
}
