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

/// The canonical text of a date/time literal, or 22007 if it is not one.
pub fn canonical(s: &str, ty: PgType) -> Result<String, CoordError> {
    let t = s.trim();
    match ty {
        PgType::Date => {
            let d = NaiveDate::parse_from_str(t, "%Y-%m-%d")
                .or_else(|_| {
                    NaiveDateTime::parse_from_str(t, "%Y-%m-%d %H:%M:%S").map(|x| x.date())
                })
                .map_err(|_| bad(ty, s))?;
            Ok(d.format("%Y-%m-%d").to_string())
        }
        PgType::Timestamp => {
            if let Ok(d) = NaiveDate::parse_from_str(t, "%Y-%m-%d") {
                return Ok(ts_text(d.and_hms_opt(0, 0, 0).ok_or_else(|| bad(ty, s))?));
            }
            TS_FORMATS
                .iter()
                .find_map(|f| NaiveDateTime::parse_from_str(t, f).ok())
                .map(ts_text)
                .ok_or_else(|| bad(ty, s))
        }
        PgType::Timestamptz => {
            for f in [
                "%Y-%m-%d %H:%M:%S%.f%#z",
                "%Y-%m-%dT%H:%M:%S%.f%#z",
                "%Y-%m-%d %H:%M:%S%#z",
                "%Y-%m-%dT%H:%M:%S%#z",
            ] {
                if let Ok(d) = DateTime::parse_from_str(t, f) {
                    return Ok(format!("{}+00", ts_text(d.naive_utc())));
                }
            }
            // Without an offset, the session time zone (UTC) applies.
            canonical(t, PgType::Timestamp)
                .map(|x| format!("{x}+00"))
                .map_err(|_| bad(ty, s))
        }
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
}
