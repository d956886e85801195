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
//!
//! One duration grammar everywhere: `recommend --hours`, `budgets --hours` and the pipeline key
//! `budgets.hours` all read [`Hours`]; lists ([`HoursList`], [`de_hours_list`]) are separated by
//! commas, or by spaces between bare numbers (`2 10 24`, as `--help` prints defaults).

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

/// Several durations: `2,10,24`, `2 10 24`, `90min, 1h30m`. Commas always separate. Within a
/// comma-free piece, spaces separate only bare numbers (`2 10 24`: three budgets in hours);
/// otherwise the piece is one [`Hours`], whose parts add up (`1h 30m` is 1.5 h, `2 hours` is 2 h).
#[derive(Clone, Debug, PartialEq)]
pub struct HoursList(pub Vec<Hours>);

impl HoursList {
    /// The durations in hours.
    pub fn hours(&self) -> Vec<f64> {
        self.0.iter().map(|h| h.hours()).collect()
    }
}

impl FromStr for HoursList {
    type Err = BudgetError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let mut out = Vec::new();
        for piece in input.split(',') {
            let words: Vec<&str> = piece.split_whitespace().collect();
            if words.len() > 1 && words.iter().all(|w| parse_decimal(w).is_some()) {
                for w in words {
                    out.push(w.parse::<Hours>()?);
                }
            } else {
                out.push(piece.parse::<Hours>().map_err(|e| BudgetError { value: input.to_string(), ..e })?);
            }
        }
        Ok(HoursList(out))
    }
}

impl<'de> serde::Deserialize<'de> for Hours {
    /// A YAML/JSON number (hours) or a string in the [`Hours`] grammar.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(DurationVisitor).and_then(|list| match list.0.as_slice() {
            [one] => Ok(*one),
            _ => Err(serde::de::Error::custom(format!("expected one duration; {HOURS_FORMS}"))),
        })
    }
}

/// Reads a number, a string ([`HoursList`] grammar) or a sequence of numbers and strings.
struct DurationVisitor;

impl<'de> serde::de::Visitor<'de> for DurationVisitor {
    type Value = HoursList;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "a duration or a list of durations ({HOURS_FORMS})")
    }
    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<HoursList, E> {
        v.to_string().parse::<Hours>().map(|h| HoursList(vec![h])).map_err(E::custom)
    }
    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<HoursList, E> {
        self.visit_f64(v as f64)
    }
    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<HoursList, E> {
        // Negative: the parser's message says so.
        v.to_string().parse::<Hours>().map(|h| HoursList(vec![h])).map_err(E::custom)
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<HoursList, E> {
        v.parse::<HoursList>().map_err(E::custom)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<HoursList, A::Error> {
        let mut out = Vec::new();
        while let Some(h) = seq.next_element::<Hours>()? {
            out.push(h);
        }
        Ok(HoursList(out))
    }
}

/// `deserialize_with` for a list of durations in hours (the pipeline key `budgets.hours`): a
/// sequence of numbers and duration strings (`[2, 10h, 1h30m]`), or one string (`"2 10 24"`).
pub fn de_hours_list<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<f64>, D::Error> {
    d.deserialize_any(DurationVisitor).map(|list| list.hours())
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

    #[test]
    fn duration_lists_people_write() {
        let cases: &[(&str, &[f64])] = &[
            ("2 10 24", &[2.0, 10.0, 24.0]),
            ("2,10,24", &[2.0, 10.0, 24.0]),
            ("2, 10, 24", &[2.0, 10.0, 24.0]),
            ("90min", &[1.5]),
            ("5400s", &[1.5]),
            ("1h30m", &[1.5]),
            ("1h 30m", &[1.5]),
            ("2 hours", &[2.0]),
            ("90min,1h30m, 2", &[1.5, 1.5, 2.0]),
            ("0.05", &[0.05]),
        ];
        for &(text, want) in cases {
            assert_eq!(text.parse::<HoursList>().expect(text).hours(), want, "{text}");
        }
        for text in ["", "2,,10", "2 x", "2 10 -3", "abc"] {
            let err = text.parse::<HoursList>().expect_err(text).to_string();
            assert!(err.contains("1h30m") && err.contains("90m"), "{text}: {err}");
        }
    }

    #[test]
    fn durations_in_yaml_are_numbers_or_strings() {
        #[derive(serde::Deserialize)]
        struct B {
            #[serde(deserialize_with = "de_hours_list")]
            hours: Vec<f64>,
        }
        let read = |y: &str| serde_yaml::from_str::<B>(y).map(|b| b.hours).map_err(|e| e.to_string());
        assert_eq!(read("hours: [2, 10, 24]").unwrap(), [2.0, 10.0, 24.0]);
        assert_eq!(read("hours: [90min, 1h30m, 0.05, 5400s]").unwrap(), [1.5, 1.5, 0.05, 1.5]);
        assert_eq!(read("hours: 2 10 24").unwrap(), [2.0, 10.0, 24.0]);
        assert_eq!(read("hours: 1.5").unwrap(), [1.5]);
        let err = read("hours: [2, 90 apples]").unwrap_err();
        assert!(err.contains("\"90 apples\"") && err.contains("1h30m") && err.contains("line 1"), "{err}");
        let err = read("hours: [-2]").unwrap_err();
        assert!(err.contains("negative"), "{err}");
    }
}
