//! Budgets the way people write them: memory sizes ([`ByteSize`]) and durations ([`Hours`]).
//!
//! Parsed once at the CLI boundary (style guide, "CLI"), carried as typed values afterwards.
//! A rejected value gets one message that repeats what was typed and lists the accepted forms;
//! through clap that message ends the process with exit code 2 (design §7).
//!
//! Units, case-insensitive:
//! * sizes: `B`; `kB MB GB TB` are powers of 1000 (as in the paper: its "GB" are 10⁹ bytes);
//!   `KiB MiB GiB TiB` powers of 1024; the single letters `k m g t` are powers of 1024, as in
//!   `docker --memory 80g` and `java -Xmx8g`. A space between number and unit is allowed.
//! * durations: `s`, `m`/`min`, `h`/`hr`, `d`/`day` (plural spellings too); a bare number means hours;
//!   several parts add up (`1h30m`).

use serde::Serialize;
use std::fmt;
use std::str::FromStr;

/// What the memory-budget parser accepts, repeated in every rejection.
pub const BYTESIZE_FORMS: &str = "write a positive size with a unit, e.g. 8GB, 8 GB, 8GiB, 512MB or 80g \
     (kB/MB/GB/TB are powers of 1000, KiB/MiB/GiB/TiB and k/m/g/t powers of 1024)";

/// What the time-budget parser accepts, repeated in every rejection.
pub const HOURS_FORMS: &str = "write a positive duration, e.g. 2h, 2 (hours), 90m, 1.5h, 1h30m or 2d \
     (units s, m/min, h, d)";

/// A number of bytes, strictly positive.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct ByteSize(pub u64);

impl ByteSize {
    pub fn bytes(self) -> u64 {
        self.0
    }
    /// In the paper's unit (10⁹ bytes).
    pub fn gb(self) -> f64 {
        self.0 as f64 / 1e9
    }
}

impl fmt::Display for ByteSize {
    /// Decimal units, three significant digits: `8.00 GB`, `937 MB`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0 as f64;
        let (v, u) = if b >= 1e12 {
            (b / 1e12, "TB")
        } else if b >= 1e9 {
            (b / 1e9, "GB")
        } else if b >= 1e6 {
            (b / 1e6, "MB")
        } else if b >= 1e3 {
            (b / 1e3, "kB")
        } else {
            return write!(f, "{} B", self.0);
        };
        if v >= 100.0 {
            write!(f, "{v:.0} {u}")
        } else if v >= 10.0 {
            write!(f, "{v:.1} {u}")
        } else {
            write!(f, "{v:.2} {u}")
        }
    }
}

/// Error of [`ByteSize::from_str`] and [`Hours::from_str`]: the value, the problem, the forms.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} {value:?}: {problem}; {forms}")]
pub struct BudgetError {
    what: &'static str,
    value: String,
    problem: String,
    forms: &'static str,
}

fn size_err(value: &str, problem: impl Into<String>) -> BudgetError {
    BudgetError { what: "memory budget", value: value.to_string(), problem: problem.into(), forms: BYTESIZE_FORMS }
}

fn time_err(value: &str, problem: impl Into<String>) -> BudgetError {
    BudgetError { what: "time budget", value: value.to_string(), problem: problem.into(), forms: HOURS_FORMS }
}

/// Splits `s` at the end of its leading decimal number (`12.5GB` → `("12.5", "GB")`).
fn split_number(s: &str) -> (&str, &str) {
    let end = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    s.split_at(end)
}

/// Parses a plain positive decimal (`8`, `1.5`, `.5`); rejects signs, exponents, `inf`, `NaN`.
fn parse_decimal(num: &str) -> Option<f64> {
    let only_digits_and_dot = num.chars().all(|c| c.is_ascii_digit() || c == '.');
    if !only_digits_and_dot || num.is_empty() || num == "." || num.matches('.').count() > 1 {
        return None;
    }
    num.parse::<f64>().ok().filter(|v| v.is_finite())
}

impl FromStr for ByteSize {
    type Err = BudgetError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let s = input.trim();
        if s.is_empty() {
            return Err(size_err(input, "it is empty"));
        }
        if s.starts_with('-') {
            return Err(size_err(input, "it is negative"));
        }
        let (num, unit) = split_number(s);
        let Some(value) = parse_decimal(num) else {
            return Err(size_err(input, "it does not start with a number"));
        };
        if value == 0.0 {
            return Err(size_err(input, "it is zero"));
        }
        let unit = unit.trim();
        let factor: u64 = match unit.to_ascii_lowercase().as_str() {
            "" => return Err(size_err(input, "the unit is missing")),
            "b" => 1,
            "kb" => 1_000,
            "mb" => 1_000_000,
            "gb" => 1_000_000_000,
            "tb" => 1_000_000_000_000,
            "kib" | "k" => 1 << 10,
            "mib" | "m" => 1 << 20,
            "gib" | "g" => 1 << 30,
            "tib" | "t" => 1 << 40,
            _ => return Err(size_err(input, format!("unknown unit {unit:?}"))),
        };
        let bytes = value * factor as f64;
        if bytes >= u64::MAX as f64 {
            return Err(size_err(input, "it is too large"));
        }
        let bytes = bytes.round() as u64;
        if bytes == 0 {
            return Err(size_err(input, "it is zero"));
        }
        Ok(ByteSize(bytes))
    }
}

/// A duration in hours, strictly positive and finite.
#[derive(Clone, Copy, Debug, PartialEq, PartialOrd, Serialize)]
#[serde(transparent)]
pub struct Hours(pub f64);

impl Hours {
    pub fn hours(self) -> f64 {
        self.0
    }
    pub fn seconds(self) -> f64 {
        self.0 * 3600.0
    }
}

impl fmt::Display for Hours {
    /// `2 h`, `1.5 h` from an hour up (at most two decimals), `9.4 min` and `30 s` below.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let trim = |s: String| s.trim_end_matches('0').trim_end_matches('.').to_string();
        if self.0 >= 1.0 {
            write!(f, "{} h", trim(format!("{:.2}", self.0)))
        } else if self.0 * 60.0 >= 1.0 {
            write!(f, "{} min", trim(format!("{:.1}", self.0 * 60.0)))
        } else {
            write!(f, "{:.0} s", self.0 * 3600.0)
        }
    }
}

impl FromStr for Hours {
    type Err = BudgetError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let s = input.trim();
        if s.is_empty() {
            return Err(time_err(input, "it is empty"));
        }
        if s.starts_with('-') {
            return Err(time_err(input, "it is negative"));
        }
        // A bare number means hours.
        if let Some(v) = parse_decimal(s) {
            return if v > 0.0 { Ok(Hours(v)) } else { Err(time_err(input, "it is zero")) };
        }
        let mut rest = s;
        let mut total = 0.0;
        while !rest.is_empty() {
            let (num, after) = split_number(rest);
            let Some(value) = parse_decimal(num) else {
                return Err(time_err(input, format!("expected a number at {rest:?}")));
            };
            let after = after.trim_start();
            let unit_len = after.find(|c: char| !c.is_ascii_alphabetic()).unwrap_or(after.len());
            let (unit, tail) = after.split_at(unit_len);
            let per_hour = match unit.to_ascii_lowercase().as_str() {
                "" => return Err(time_err(input, format!("the number {num} has no unit"))),
                "s" | "sec" | "secs" | "second" | "seconds" => 1.0 / 3600.0,
                "m" | "min" | "mins" | "minute" | "minutes" => 1.0 / 60.0,
                "h" | "hr" | "hrs" | "hour" | "hours" => 1.0,
                "d" | "day" | "days" => 24.0,
                _ => return Err(time_err(input, format!("unknown unit {unit:?}"))),
            };
            total += value * per_hour;
            rest = tail.trim_start();
        }
        if !total.is_finite() {
            return Err(time_err(input, "it is too large"));
        }
        if total <= 0.0 {
            return Err(time_err(input, "it is zero"));
        }
        Ok(Hours(total))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GB: u64 = 1_000_000_000;
    const GIB: u64 = 1 << 30;

    #[test]
    fn byte_sizes_people_write() {
        let cases: &[(&str, u64)] = &[
            ("8GB", 8 * GB),
            ("8 GB", 8 * GB),
            ("8gb", 8 * GB),
            ("8GiB", 8 * GIB),
            ("512MB", 512_000_000),
            ("80g", 80 * GIB),
            ("1.5GB", 1_500_000_000),
            (" 2 GiB ", 2 * GIB),
            ("100B", 100),
            ("1TB", 1_000 * GB),
            ("4k", 4096),
        ];
        for &(text, bytes) in cases {
            assert_eq!(text.parse::<ByteSize>(), Ok(ByteSize(bytes)), "{text}");
        }
    }

    #[test]
    fn byte_sizes_rejected_with_the_accepted_forms() {
        for text in ["", "  ", "0GB", "0", "-8GB", "8", "8 apples", "GB", "8GBB", "1.2.3GB", "inf GB", "NaN", "8e9B", "+8GB", "99999999999TB"] {
            let err = text.parse::<ByteSize>().expect_err(text).to_string();
            assert!(err.contains(&format!("{text:?}")) && err.contains("8GiB") && err.contains("80g"), "{text}: {err}");
        }
    }

    #[test]
    fn durations_people_write() {
        let cases: &[(&str, f64)] = &[
            ("2h", 2.0),
            ("2", 2.0),
            ("90m", 1.5),
            ("1.5h", 1.5),
            ("1h30m", 1.5),
            ("1h 30m", 1.5),
            ("2d", 48.0),
            ("2 hours", 2.0),
            ("45min", 0.75),
            ("3600s", 1.0),
            ("0.5", 0.5),
        ];
        for &(text, h) in cases {
            let got = text.parse::<Hours>().expect(text).hours();
            // Exact decimal fractions of small numbers: only the last bit may differ.
            assert!((got - h).abs() < 1e-12, "{text}: {got} vs {h}");
        }
    }

    #[test]
    fn durations_rejected_with_the_accepted_forms() {
        for text in ["", "0", "0h", "-2h", "-2", "2 apples", "h", "1h30", "2x", "1.5.2h", "inf", "NaN", "2h-30m", "1e3h", "0m0s"] {
            let err = text.parse::<Hours>().expect_err(text).to_string();
            assert!(err.contains(&format!("{text:?}")) && err.contains("1h30m") && err.contains("90m"), "{text}: {err}");
        }
    }

    #[test]
    fn display_is_readable() {
        assert_eq!(ByteSize(8 * GB).to_string(), "8.00 GB");
        assert_eq!(ByteSize(937_200_000).to_string(), "937 MB");
        assert_eq!(Hours(1.5).to_string(), "1.5 h");
        assert_eq!(Hours(24.0).to_string(), "24 h");
        assert_eq!(Hours(0.25).to_string(), "15 min");
        assert_eq!(Hours(30.0 / 3600.0).to_string(), "30 s");
    }
}
