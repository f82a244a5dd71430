//! Allocation-free comparison of value texts, shared by the parser (which
//! pre-computes what it can) and the evaluator: plain numbers, exact decimals,
//! semver-like versions and RFC 3339 datetimes. Every function returns `None`
//! when a text is not of the expected kind, which the evaluator treats as a
//! type mismatch.

use std::cmp::Ordering;
use std::fmt;

/// A text that reads as a finite number: `-1`, `0.5`, `2.`, `.5`, `1e-3`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct NumericText {
    pub float: f64,
    /// Set when the text is an integer, for exact comparison of large integers.
    pub integer: Option<i128>,
}

/// Reads `text` as a number, refusing `inf`, `NaN`, hex and surrounding spaces
/// (which Rust's `f64` parser would partly accept).
pub(crate) fn parse_numeric_text(text: &str) -> Option<NumericText> {
    let decimal = parse_decimal(text)?;
    let is_integer_text = decimal.exponent_text_is_absent && decimal.fraction_digits.is_empty();
    if is_integer_text && !text.ends_with('.') {
        // Integers skip the slower float parser; `as` rounds to nearest like it.
        if let Ok(integer) = text.parse::<i128>() {
            return Some(NumericText {
                float: integer as f64,
                integer: Some(integer),
            });
        }
    }
    let float: f64 = text.parse().ok()?;
    if !float.is_finite() {
        return None;
    }
    Some(NumericText {
        float,
        integer: None,
    })
}

/// A decimal number split into its parts: `[sign] digits [. digits] [e [sign] digits]`.
#[derive(Debug, Clone, Copy)]
struct DecimalText<'a> {
    negative: bool,
    integer_digits: &'a str,
    fraction_digits: &'a str,
    exponent: i64,
    exponent_text_is_absent: bool,
}

/// Exponents are limited so that position arithmetic can never overflow.
const MAX_EXPONENT_DIGITS: usize = 9;

fn all_ascii_digits(text: &str) -> bool {
    text.bytes().all(|byte| byte.is_ascii_digit())
}

fn parse_decimal(text: &str) -> Option<DecimalText<'_>> {
    let (negative, unsigned) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    let (mantissa, exponent, exponent_text_is_absent) = match unsigned.find(['e', 'E']) {
        Some(index) => (
            &unsigned[..index],
            parse_exponent(&unsigned[index + 1..])?,
            false,
        ),
        None => (unsigned, 0, true),
    };
    let (integer_digits, fraction_digits) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    if integer_digits.is_empty() && fraction_digits.is_empty() {
        return None;
    }
    if !all_ascii_digits(integer_digits) || !all_ascii_digits(fraction_digits) {
        return None;
    }
    Some(DecimalText {
        negative,
        integer_digits,
        fraction_digits,
        exponent,
        exponent_text_is_absent,
    })
}

fn parse_exponent(text: &str) -> Option<i64> {
    let digits = text.strip_prefix(['+', '-']).unwrap_or(text);
    if digits.is_empty() || digits.len() > MAX_EXPONENT_DIGITS || !all_ascii_digits(digits) {
        return None;
    }
    text.parse().ok()
}

impl DecimalText<'_> {
    fn digits(&self) -> impl Iterator<Item = u8> + '_ {
        self.integer_digits
            .bytes()
            .chain(self.fraction_digits.bytes())
    }

    fn digit_count(&self) -> usize {
        self.integer_digits.len() + self.fraction_digits.len()
    }

    fn leading_zero_count(&self) -> usize {
        self.digits().take_while(|digit| *digit == b'0').count()
    }

    /// -1, 0 or 1.
    fn signum(&self, leading_zero_count: usize) -> i8 {
        if leading_zero_count == self.digit_count() {
            return 0;
        }
        if self.negative {
            -1
        } else {
            1
        }
    }

    /// The power of ten just above the first significant digit: the value is
    /// `0.d1d2d3... * 10^position`.
    fn magnitude_position(&self, leading_zero_count: usize) -> i64 {
        // Digit counts of a `&str` always fit an i64.
        let integer_length = i64::try_from(self.integer_digits.len()).unwrap_or(i64::MAX / 4);
        let zeros = i64::try_from(leading_zero_count).unwrap_or(i64::MAX / 4);
        integer_length - zeros + self.exponent
    }
}

fn compare_decimals(left: &DecimalText<'_>, right: &DecimalText<'_>) -> Ordering {
    let left_zeros = left.leading_zero_count();
    let right_zeros = right.leading_zero_count();
    let left_sign = left.signum(left_zeros);
    let right_sign = right.signum(right_zeros);
    if left_sign != right_sign {
        return left_sign.cmp(&right_sign);
    }
    if left_sign == 0 {
        return Ordering::Equal;
    }
    let magnitude = compare_magnitudes(left, left_zeros, right, right_zeros);
    if left_sign < 0 {
        magnitude.reverse()
    } else {
        magnitude
    }
}

fn compare_magnitudes(
    left: &DecimalText<'_>,
    left_zeros: usize,
    right: &DecimalText<'_>,
    right_zeros: usize,
) -> Ordering {
    let position_order = left
        .magnitude_position(left_zeros)
        .cmp(&right.magnitude_position(right_zeros));
    if position_order != Ordering::Equal {
        return position_order;
    }
    let mut left_digits = left.digits().skip(left_zeros);
    let mut right_digits = right.digits().skip(right_zeros);
    loop {
        let (left_digit, right_digit) = match (left_digits.next(), right_digits.next()) {
            (None, None) => return Ordering::Equal,
            (left_digit, right_digit) => (left_digit.unwrap_or(b'0'), right_digit.unwrap_or(b'0')),
        };
        if left_digit != right_digit {
            return left_digit.cmp(&right_digit);
        }
    }
}

/// Exact comparison of two decimal texts (`0.10` equals `1e-1`).
pub(crate) fn compare_decimal_texts(left: &str, right: &str) -> Option<Ordering> {
    let left = parse_decimal(left)?;
    let right = parse_decimal(right)?;
    Some(compare_decimals(&left, &right))
}

/// A version `[v]1.2.3[-pre.release][+build]`; any number of numeric core
/// components, missing ones counting as zero.
#[derive(Debug, Clone, Copy)]
struct VersionText<'a> {
    core: &'a str,
    pre_release: Option<&'a str>,
}

fn is_numeric_identifier(text: &str) -> bool {
    !text.is_empty() && all_ascii_digits(text)
}

fn is_valid_identifier(text: &str) -> bool {
    !text.is_empty()
        && text
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-')
}

fn parse_version(text: &str) -> Option<VersionText<'_>> {
    let text = text.strip_prefix(['v', 'V']).unwrap_or(text);
    let without_build = match text.split_once('+') {
        Some((version, build)) if build.split('.').all(is_valid_identifier) => version,
        Some(_) => return None,
        None => text,
    };
    let (core, pre_release) = match without_build.split_once('-') {
        Some((core, pre_release)) => (core, Some(pre_release)),
        None => (without_build, None),
    };
    if !core.split('.').all(is_numeric_identifier) {
        return None;
    }
    if let Some(pre_release) = pre_release {
        if !pre_release.split('.').all(is_valid_identifier) {
            return None;
        }
    }
    Some(VersionText { core, pre_release })
}

/// Compares digit strings as unbounded unsigned integers.
fn compare_digit_strings(left: &str, right: &str) -> Ordering {
    let left = left.trim_start_matches('0');
    let right = right.trim_start_matches('0');
    left.len().cmp(&right.len()).then_with(|| left.cmp(right))
}

fn compare_version_cores(left: &str, right: &str) -> Ordering {
    let mut left_components = left.split('.');
    let mut right_components = right.split('.');
    loop {
        let (left_component, right_component) =
            match (left_components.next(), right_components.next()) {
                (None, None) => return Ordering::Equal,
                (left_component, right_component) => (
                    left_component.unwrap_or("0"),
                    right_component.unwrap_or("0"),
                ),
            };
        let order = compare_digit_strings(left_component, right_component);
        if order != Ordering::Equal {
            return order;
        }
    }
}

fn compare_pre_release_identifiers(left: &str, right: &str) -> Ordering {
    match (is_numeric_identifier(left), is_numeric_identifier(right)) {
        (true, true) => compare_digit_strings(left, right),
        (true, false) => Ordering::Less,
        (false, true) => Ordering::Greater,
        (false, false) => left.cmp(right),
    }
}

fn compare_pre_releases(left: Option<&str>, right: Option<&str>) -> Ordering {
    let (left, right) = match (left, right) {
        (None, None) => return Ordering::Equal,
        (None, Some(_)) => return Ordering::Greater,
        (Some(_), None) => return Ordering::Less,
        (Some(left), Some(right)) => (left, right),
    };
    let mut left_identifiers = left.split('.');
    let mut right_identifiers = right.split('.');
    loop {
        let order = match (left_identifiers.next(), right_identifiers.next()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(left), Some(right)) => compare_pre_release_identifiers(left, right),
        };
        if order != Ordering::Equal {
            return order;
        }
    }
}

/// Semver-like comparison: numeric core components, then pre-release (a
/// version with one is lower); build metadata is ignored.
pub(crate) fn compare_version_texts(left: &str, right: &str) -> Option<Ordering> {
    let left = parse_version(left)?;
    let right = parse_version(right)?;
    let order = compare_version_cores(left.core, right.core)
        .then_with(|| compare_pre_releases(left.pre_release, right.pre_release));
    Some(order)
}

const NANOS_PER_SECOND: i128 = 1_000_000_000;
const NANOS_PER_MILLI: i128 = 1_000_000;

/// An RFC 3339 datetime as nanoseconds since the Unix epoch.
pub(crate) fn parse_datetime_nanos(text: &str) -> Option<i128> {
    let datetime = chrono::DateTime::parse_from_rfc3339(text).ok()?;
    let seconds = i128::from(datetime.timestamp());
    Some(seconds * NANOS_PER_SECOND + i128::from(datetime.timestamp_subsec_nanos()))
}

pub(crate) fn millis_to_nanos(millis: i128) -> i128 {
    millis.saturating_mul(NANOS_PER_MILLI)
}

/// A small stack buffer to print a JSON number into without allocating.
pub(crate) struct StackText {
    bytes: [u8; 64],
    length: usize,
}

impl StackText {
    pub(crate) fn new() -> Self {
        StackText {
            bytes: [0; 64],
            length: 0,
        }
    }

    pub(crate) fn as_str(&self) -> &str {
        std::str::from_utf8(&self.bytes[..self.length]).unwrap_or("")
    }
}

impl fmt::Write for StackText {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        let end = self.length + text.len();
        if end > self.bytes.len() {
            return Err(fmt::Error);
        }
        self.bytes[self.length..end].copy_from_slice(text.as_bytes());
        self.length = end;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fmt::Write;

    #[test]
    fn numeric_text_accepts_decimal_forms_only() {
        for text in ["1", "-1", "+2", "0.5", ".5", "2.", "1e3", "1E-3", "007"] {
            assert!(
                parse_numeric_text(text).is_some(),
                "{text} should be numeric"
            );
        }
        for text in [
            "",
            "-",
            ".",
            "e5",
            "1e",
            "inf",
            "NaN",
            "infinity",
            "0x10",
            " 1",
            "1 ",
            "1.2.3",
            "1e9999999999",
        ] {
            assert!(
                parse_numeric_text(text).is_none(),
                "{text:?} should not be numeric"
            );
        }
        assert_eq!(
            parse_numeric_text("12").map(|number| number.integer),
            Some(Some(12))
        );
        assert_eq!(
            parse_numeric_text("12.0").map(|number| number.integer),
            Some(None)
        );
        assert_eq!(
            parse_numeric_text("1e2").map(|number| number.integer),
            Some(None)
        );
        assert_eq!(parse_numeric_text("1e999").map(|number| number.float), None);
        assert_eq!(
            parse_numeric_text("2.").map(|number| number.integer),
            Some(None)
        );
        assert_eq!(
            parse_numeric_text("-12").map(|number| number.float),
            Some(-12.0)
        );
        let huge = "1".repeat(45);
        assert_eq!(
            parse_numeric_text(&huge).map(|number| number.integer),
            Some(None)
        );
        assert_eq!(
            parse_numeric_text(&huge).map(|number| number.float),
            huge.parse::<f64>().ok()
        );
    }

    #[test]
    fn decimals_compare_exactly() {
        assert_eq!(compare_decimal_texts("0.10", "1e-1"), Some(Ordering::Equal));
        assert_eq!(
            compare_decimal_texts("0.1", "0.10000000000000000001"),
            Some(Ordering::Less)
        );
        assert_eq!(compare_decimal_texts("-0", "0.000"), Some(Ordering::Equal));
        assert_eq!(compare_decimal_texts("-2", "-10"), Some(Ordering::Greater));
        assert_eq!(compare_decimal_texts("-2", "1"), Some(Ordering::Less));
        assert_eq!(
            compare_decimal_texts("100", "99.999"),
            Some(Ordering::Greater)
        );
        assert_eq!(
            compare_decimal_texts("12345678901234567890123", "12345678901234567890124"),
            Some(Ordering::Less)
        );
        assert_eq!(
            compare_decimal_texts("1.5e3", "1500"),
            Some(Ordering::Equal)
        );
        assert_eq!(compare_decimal_texts("abc", "1"), None);
        assert_eq!(compare_decimal_texts("1", "1.2.3"), None);
    }

    #[test]
    fn versions_compare_like_semver() {
        assert_eq!(
            compare_version_texts("1.10.0", "1.5.0"),
            Some(Ordering::Greater)
        );
        assert_eq!(compare_version_texts("1.2", "1.2.0"), Some(Ordering::Equal));
        assert_eq!(
            compare_version_texts("v0.5.0", "0.5.0"),
            Some(Ordering::Equal)
        );
        assert_eq!(
            compare_version_texts("1.0.0-alpha", "1.0.0"),
            Some(Ordering::Less)
        );
        assert_eq!(
            compare_version_texts("1.0.0-alpha.1", "1.0.0-alpha"),
            Some(Ordering::Greater)
        );
        assert_eq!(
            compare_version_texts("1.0.0-alpha.2", "1.0.0-alpha.10"),
            Some(Ordering::Less)
        );
        assert_eq!(
            compare_version_texts("1.0.0-2", "1.0.0-beta"),
            Some(Ordering::Less)
        );
        assert_eq!(
            compare_version_texts("1.0.0+build.5", "1.0.0"),
            Some(Ordering::Equal)
        );
        assert_eq!(
            compare_version_texts("99999999999999999999999.0", "1.0"),
            Some(Ordering::Greater)
        );
        assert_eq!(compare_version_texts("1..0", "1.0"), None);
        assert_eq!(compare_version_texts("abc", "1.0"), None);
        assert_eq!(compare_version_texts("1.0-", "1.0"), None);
    }

    #[test]
    fn datetimes_parse_to_nanoseconds() {
        assert_eq!(
            parse_datetime_nanos("1970-01-01T00:00:01.5Z"),
            Some(1_500_000_000)
        );
        assert_eq!(parse_datetime_nanos("1970-01-01T01:00:00+01:00"), Some(0));
        assert_eq!(parse_datetime_nanos("1985-04-13"), None);
    }

    #[test]
    fn stack_text_holds_json_numbers() {
        let mut text = StackText::new();
        assert!(write!(text, "{}", serde_json::json!(1.5e300)).is_ok());
        assert_eq!(text.as_str(), "1.5e+300");
        assert_eq!(
            compare_decimal_texts(text.as_str(), "15e299"),
            Some(Ordering::Equal)
        );
        let mut overflowing = StackText::new();
        assert!(write!(overflowing, "{}", "x".repeat(65)).is_err());
    }
}
