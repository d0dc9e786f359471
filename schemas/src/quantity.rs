//! Kubernetes-style resource quantities (`500m`, `1.5`, `128Mi`, `1Gi`): parsing into typed values
//! and the canonical spelling used in the canonical form.

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why a quantity string could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    #[error("empty quantity")]
    Empty,
    #[error("{0:?} is not a number with an optional suffix")]
    Malformed(String),
    #[error("unknown suffix {suffix:?} in {text:?}")]
    UnknownSuffix { text: String, suffix: String },
    #[error("{0:?} is too large")]
    Overflow(String),
    #[error("{0:?} is finer than the smallest unit ({1})")]
    TooPrecise(String, &'static str),
    #[error("{0:?} must be greater than zero")]
    NotPositive(String),
}

/// A quantity exactly as the user wrote it: a string (`"500m"`) or a YAML number (`2`, `0.5`).
/// Parsing happens in validation so that every bad quantity is reported with its location.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RawQuantity(pub String);

impl Serialize for RawQuantity {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for RawQuantity {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Either {
            S(String),
            U(u64),
            I(i64),
            F(f64),
        }
        Ok(RawQuantity(match Either::deserialize(d)? {
            Either::S(s) => s,
            Either::U(u) => u.to_string(),
            Either::I(i) => i.to_string(),
            Either::F(f) => f.to_string(),
        }))
    }
}

impl JsonSchema for RawQuantity {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Quantity".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": ["string", "number"],
            "description": "A Kubernetes-style quantity: a decimal number with an optional suffix (m, k, M, G, T, Ki, Mi, Gi, Ti)."
        })
    }
}

impl fmt::Display for RawQuantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Splits `text` into a decimal number and a suffix and returns the exact integer count of the
/// smallest unit (each suffix says how many smallest units one of it is).
fn parse_scaled(
    text: &str,
    suffixes: &[(&str, u128)],
    unit_name: &'static str,
) -> Result<u64, QuantityError> {
    let t = text.trim();
    if t.is_empty() {
        return Err(QuantityError::Empty);
    }
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, suffix) = t.split_at(split);
    if num.is_empty() || num == "." || num.matches('.').count() > 1 {
        return Err(QuantityError::Malformed(text.to_string()));
    }
    let mult = suffixes
        .iter()
        .find(|(s, _)| *s == suffix)
        .map(|(_, m)| *m)
        .ok_or_else(|| {
            if suffix
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic())
            {
                QuantityError::UnknownSuffix {
                    text: text.to_string(),
                    suffix: suffix.to_string(),
                }
            } else {
                QuantityError::Malformed(text.to_string())
            }
        })?;
    let (int_part, frac_part) = num.split_once('.').unwrap_or((num, ""));
    if frac_part.len() > 18 || int_part.len() > 20 {
        return Err(QuantityError::Overflow(text.to_string()));
    }
    let int: u128 = if int_part.is_empty() {
        0
    } else {
        int_part
            .parse()
            .map_err(|_| QuantityError::Malformed(text.to_string()))?
    };
    let frac: u128 = if frac_part.is_empty() {
        0
    } else {
        frac_part
            .parse()
            .map_err(|_| QuantityError::Malformed(text.to_string()))?
    };
    let denom = 10u128.pow(frac_part.len() as u32);
    let whole = int
        .checked_mul(mult)
        .ok_or_else(|| QuantityError::Overflow(text.to_string()))?;
    let frac_units_num = frac
        .checked_mul(mult)
        .ok_or_else(|| QuantityError::Overflow(text.to_string()))?;
    if frac_units_num % denom != 0 {
        return Err(QuantityError::TooPrecise(text.to_string(), unit_name));
    }
    let total = whole + frac_units_num / denom;
    u64::try_from(total).map_err(|_| QuantityError::Overflow(text.to_string()))
}

/// CPU in millicores (`1` = 1000, `500m` = 500, `0.25` = 250).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
pub struct Millicores(pub u64);

impl Millicores {
    /// Parses `"500m"`, `"2"`, `"1.5"`; zero is allowed here (callers decide whether it is valid).
    pub fn parse(text: &str) -> Result<Self, QuantityError> {
        parse_scaled(text, &[("", 1000), ("m", 1)], "1m").map(Millicores)
    }

    /// The canonical spelling: whole cores as an integer, otherwise millicores with `m`.
    pub fn canonical(self) -> String {
        if self.0.is_multiple_of(1000) {
            (self.0 / 1000).to_string()
        } else {
            format!("{}m", self.0)
        }
    }
}

impl fmt::Display for Millicores {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.canonical())
    }
}

const KI: u128 = 1024;
const MEMORY_SUFFIXES: &[(&str, u128)] = &[
    ("", 1),
    ("k", 1000),
    ("M", 1000 * 1000),
    ("G", 1000 * 1000 * 1000),
    ("T", 1000 * 1000 * 1000 * 1000),
    ("Ki", KI),
    ("Mi", KI * KI),
    ("Gi", KI * KI * KI),
    ("Ti", KI * KI * KI * KI),
];

/// Memory in bytes (`128Mi`, `1Gi`, `500M`, `1000000`).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
pub struct Bytes(pub u64);

impl Bytes {
    /// Parses a memory quantity into bytes.
    pub fn parse(text: &str) -> Result<Self, QuantityError> {
        parse_scaled(text, MEMORY_SUFFIXES, "1 byte").map(Bytes)
    }

    /// The canonical spelling: the largest binary suffix that divides exactly, else the largest
    /// decimal one, else plain bytes.
    pub fn canonical(self) -> String {
        if self.0 == 0 {
            return "0".into();
        }
        for (suffix, mult) in MEMORY_SUFFIXES.iter().rev() {
            let m = *mult as u64;
            if m > 1 && suffix.ends_with('i') && self.0.is_multiple_of(m) {
                return format!("{}{}", self.0 / m, suffix);
            }
        }
        for (suffix, mult) in MEMORY_SUFFIXES.iter().rev() {
            let m = *mult as u64;
            if m > 1 && !suffix.ends_with('i') && self.0.is_multiple_of(m) {
                return format!("{}{}", self.0 / m, suffix);
            }
        }
        self.0.to_string()
    }
}

impl fmt::Display for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.canonical())
    }
}

/// Parses durations such as `10s`, `1m30s`, `500ms`, `2h` into milliseconds.
pub fn parse_duration_ms(text: &str) -> Result<u64, QuantityError> {
    let t = text.trim();
    if t.is_empty() {
        return Err(QuantityError::Empty);
    }
    let mut total: u64 = 0;
    let mut rest = t;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(QuantityError::Malformed(text.to_string()));
        }
        let n: u64 = rest[..digits]
            .parse()
            .map_err(|_| QuantityError::Overflow(text.to_string()))?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let mult = match unit {
            "ms" => 1,
            "s" => 1000,
            "m" => 60_000,
            "h" => 3_600_000,
            "" => return Err(QuantityError::Malformed(text.to_string())),
            other => {
                return Err(QuantityError::UnknownSuffix {
                    text: text.to_string(),
                    suffix: other.to_string(),
                });
            }
        };
        total = n
            .checked_mul(mult)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(|| QuantityError::Overflow(text.to_string()))?;
    }
    Ok(total)
}

/// The canonical spelling of a duration in milliseconds (`1m30s`, `500ms`).
pub fn canonical_duration(ms: u64) -> String {
    if ms == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    let mut rest = ms;
    for (unit, size) in [("h", 3_600_000u64), ("m", 60_000), ("s", 1000), ("ms", 1)] {
        if rest >= size {
            out.push_str(&format!("{}{}", rest / size, unit));
            rest %= size;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_table() {
        let cases = [
            ("500m", Ok(500)),
            ("1", Ok(1000)),
            ("1.5", Ok(1500)),
            ("0.25", Ok(250)),
            ("2", Ok(2000)),
            ("0", Ok(0)),
        ];
        for (text, want) in cases {
            assert_eq!(Millicores::parse(text).map(|m| m.0), want, "{text}");
        }
        assert!(matches!(
            Millicores::parse("1.0005"),
            Err(QuantityError::TooPrecise(..))
        ));
        assert!(matches!(
            Millicores::parse("12X"),
            Err(QuantityError::UnknownSuffix { .. })
        ));
        assert!(matches!(
            Millicores::parse("-1"),
            Err(QuantityError::Malformed(_))
        ));
        assert!(matches!(Millicores::parse(""), Err(QuantityError::Empty)));
        assert!(matches!(
            Millicores::parse("1.2.3"),
            Err(QuantityError::Malformed(_))
        ));
        assert_eq!(Millicores(1500).canonical(), "1500m");
        assert_eq!(Millicores(2000).canonical(), "2");
    }

    #[test]
    fn memory_table() {
        let cases = [
            ("128Mi", 128 << 20),
            ("1Gi", 1 << 30),
            ("1.5Gi", 3 << 29),
            ("500M", 500_000_000),
            ("1000", 1000),
            ("1k", 1000),
        ];
        for (text, want) in cases {
            assert_eq!(Bytes::parse(text), Ok(Bytes(want)), "{text}");
        }
        assert!(matches!(
            Bytes::parse("1.5"),
            Err(QuantityError::TooPrecise(..))
        ));
        assert!(matches!(
            Bytes::parse("10Q"),
            Err(QuantityError::UnknownSuffix { .. })
        ));
        assert!(matches!(
            Bytes::parse("99999999999999999999Ti"),
            Err(QuantityError::Overflow(_))
        ));
        assert_eq!(Bytes(1 << 30).canonical(), "1Gi");
        assert_eq!(Bytes(1536 << 20).canonical(), "1536Mi");
        assert_eq!(Bytes(500_000_000).canonical(), "500M");
        assert_eq!(Bytes(1001).canonical(), "1001");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration_ms("10s"), Ok(10_000));
        assert_eq!(parse_duration_ms("1m30s"), Ok(90_000));
        assert_eq!(parse_duration_ms("250ms"), Ok(250));
        assert!(parse_duration_ms("10").is_err());
        assert!(parse_duration_ms("10x").is_err());
        assert_eq!(canonical_duration(90_000), "1m30s");
        assert_eq!(canonical_duration(10_000), "10s");
    }
}
