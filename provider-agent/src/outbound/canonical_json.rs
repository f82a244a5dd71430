//! Canonical JSON (JCS, RFC 8785): the bytes Golem certificates and node
//! descriptors are signed and fingerprinted over. Object members sorted by
//! their names' UTF-16 code units, no whitespace, strings escaped as
//! ECMAScript's `JSON.stringify` does, numbers as ECMAScript's
//! `Number.prototype.toString` prints the nearest double. It only encodes a
//! parsed `serde_json::Value`; it never reads or writes files.

use serde_json::Value;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CanonicalJsonError {
    #[error("the number {0} has no canonical form (not a finite double)")]
    NotFinite(String),
}

/// The canonical (JCS) bytes of `value`.
pub fn to_canonical_bytes(value: &Value) -> Result<Vec<u8>, CanonicalJsonError> {
    let mut out = String::new();
    write_value(&mut out, value)?;
    Ok(out.into_bytes())
}

fn write_value(out: &mut String, value: &Value) -> Result<(), CanonicalJsonError> {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(true) => out.push_str("true"),
        Value::Bool(false) => out.push_str("false"),
        Value::Number(number) => {
            let double = number
                .as_f64()
                .filter(|double| double.is_finite())
                .ok_or_else(|| CanonicalJsonError::NotFinite(number.to_string()))?;
            out.push_str(&ecmascript_number(double));
        }
        Value::String(text) => write_string(out, text),
        Value::Array(items) => {
            out.push('[');
            for (index, item) in items.iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                write_value(out, item)?;
            }
            out.push(']');
        }
        Value::Object(members) => {
            let mut sorted: Vec<(&String, &Value)> = members.iter().collect();
            sorted.sort_by(|(left, _), (right, _)| left.encode_utf16().cmp(right.encode_utf16()));
            out.push('{');
            for (index, (name, member)) in sorted.into_iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                write_string(out, name);
                out.push(':');
                write_value(out, member)?;
            }
            out.push('}');
        }
    }
    Ok(())
}

fn write_string(out: &mut String, text: &str) {
    out.push('"');
    for character in text.chars() {
        match character {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{08}' => out.push_str("\\b"),
            '\u{09}' => out.push_str("\\t"),
            '\u{0a}' => out.push_str("\\n"),
            '\u{0c}' => out.push_str("\\f"),
            '\u{0d}' => out.push_str("\\r"),
            control if (control as u32) < 0x20 => {
                out.push_str(&format!("\\u{:04x}", control as u32));
            }
            other => out.push(other),
        }
    }
    out.push('"');
}

/// ECMAScript's `Number.prototype.toString` of a finite double.
fn ecmascript_number(double: f64) -> String {
    if double == 0.0 {
        return "0".into(); // -0 too
    }
    if double < 0.0 {
        return format!("-{}", ecmascript_number(-double));
    }
    // Rust's `{:e}` prints the shortest digits that round-trip: "d.ddde±x".
    let scientific = format!("{double:e}");
    let (mantissa, exponent) = scientific
        .split_once('e')
        .unwrap_or((scientific.as_str(), "0"));
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let exponent: i32 = exponent.parse().unwrap_or(0);
    // The value is 0.digits × 10^point.
    let count = digits.len() as i32;
    let point = exponent + 1;
    if count <= point && point <= 21 {
        format!("{digits}{}", "0".repeat((point - count) as usize))
    } else if 0 < point && point <= 21 {
        let (whole, fraction) = digits.split_at(point as usize);
        format!("{whole}.{fraction}")
    } else if -6 < point && point <= 0 {
        format!("0.{}{digits}", "0".repeat((-point) as usize))
    } else {
        let sign = if point - 1 < 0 { '-' } else { '+' };
        let shown = (point - 1).abs();
        match digits.split_at(1) {
            (first, "") => format!("{first}e{sign}{shown}"),
            (first, rest) => format!("{first}.{rest}e{sign}{shown}"),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn canonical(text: &str) -> String {
        let value: Value = serde_json::from_str(text).unwrap();
        String::from_utf8(to_canonical_bytes(&value).unwrap()).unwrap()
    }

    #[test]
    fn members_are_sorted_by_utf16_code_units_without_whitespace() {
        // RFC 8785 section 3.2.3's sorting example.
        let sorted = canonical(
            r#"{"\u20ac": "Euro Sign", "\r": "Carriage Return", "\ufb33": "Hebrew Letter Dalet With Dagesh",
                "1": "One", "\ud83d\ude00": "Emoji: Grinning Face", "\u0080": "Control", "\u00f6": "Latin Small Letter O With Diaeresis"}"#,
        );
        assert_eq!(
            sorted,
            "{\"\\r\":\"Carriage Return\",\"1\":\"One\",\"\u{80}\":\"Control\",\
             \"\u{f6}\":\"Latin Small Letter O With Diaeresis\",\"\u{20ac}\":\"Euro Sign\",\
             \"\u{1f600}\":\"Emoji: Grinning Face\",\"\u{fb33}\":\"Hebrew Letter Dalet With Dagesh\"}"
        );
        assert_eq!(
            canonical(r#"{ "b" : [1, {"d": true, "c": null}], "a": "x" }"#),
            r#"{"a":"x","b":[1,{"c":null,"d":true}]}"#
        );
    }

    #[test]
    fn numbers_print_as_ecmascript_does() {
        // RFC 8785 section 3.2.2.3 and appendix B.
        for (input, expected) in [
            ("333333333.33333329", "333333333.3333333"),
            ("1E30", "1e+30"),
            ("4.50", "4.5"),
            ("2e-3", "0.002"),
            ("0.000000000000000000000000001", "1e-27"),
            ("-0", "0"),
            ("0.0", "0"),
            ("1", "1"),
            ("-1.5", "-1.5"),
            ("9007199254740992", "9007199254740992"),
            ("-1e-7", "-1e-7"),
            ("295147905179352830000", "295147905179352830000"),
            ("1e21", "1e+21"),
            ("0.000001", "0.000001"),
            ("1e-7", "1e-7"),
            ("123e-20", "1.23e-18"),
        ] {
            // Parsed by the standard library (correctly rounded; serde_json's
            // fast float parsing may miss by one unit in the last place).
            let double: f64 = input.parse().unwrap();
            let value = serde_json::Number::from_f64(double).map_or(Value::Null, Value::Number);
            assert_eq!(
                String::from_utf8(to_canonical_bytes(&value).unwrap()).unwrap(),
                expected,
                "{input}"
            );
        }
    }

    #[test]
    fn strings_are_escaped_as_json_stringify_does() {
        assert_eq!(
            canonical(r#""\u0041\b\t\n\f\r\u001f\"\\/\u2028é€""#),
            "\"A\\b\\t\\n\\f\\r\\u001f\\\"\\\\/\u{2028}é€\""
        );
    }
}
