//! The right-hand side of a comparison: the literal text split at its `*`
//! wildcards, plus what the evaluator needs pre-computed so that matching one
//! filter against many offers never re-parses or allocates (the number, boolean
//! and datetime the text reads as). Also its canonical escaped printing.

use std::fmt;
use std::fmt::Write;

use super::compare::{millis_to_nanos, parse_datetime_nanos, parse_numeric_text};

/// A comparison value such as `0.5`, `vm`, `hash://sha3:*` or `a\*b`.
#[derive(Debug, Clone, PartialEq)]
pub struct ConstraintValue {
    /// The literal pieces between unescaped `*` wildcards; one piece when there
    /// is no wildcard, never empty.
    segments: Vec<String>,
    /// The pieces joined with `*`: the text ordering operators compare against.
    text: String,
    /// Set when the value has no wildcard and reads as a finite number.
    number: Option<f64>,
    /// Set when the value has no wildcard and reads as an integer.
    integer: Option<i128>,
    /// Set for exactly `true` or `false`.
    boolean: Option<bool>,
    /// Set when the text is an RFC 3339 datetime or an integer (Unix milliseconds).
    datetime_nanos: Option<i128>,
}

impl ConstraintValue {
    /// A value without wildcards: `*` in `text` is an ordinary character.
    pub fn exact(text: impl Into<String>) -> Self {
        ConstraintValue::with_wildcards(vec![text.into()])
    }

    /// A value made of literal `segments` with a `*` wildcard between each two;
    /// `["hash://", ""]` is `hash://*`. An empty list means the empty value.
    pub fn with_wildcards(mut segments: Vec<String>) -> Self {
        if segments.is_empty() {
            segments.push(String::new());
        }
        let text = segments.join("*");
        let has_wildcards = segments.len() > 1;
        let numeric = if has_wildcards {
            None
        } else {
            parse_numeric_text(&text)
        };
        let integer = numeric.and_then(|numeric| numeric.integer);
        let boolean = match text.as_str() {
            "true" if !has_wildcards => Some(true),
            "false" if !has_wildcards => Some(false),
            _ => None,
        };
        let datetime_nanos = if has_wildcards {
            None
        } else {
            parse_datetime_nanos(&text).or_else(|| integer.map(millis_to_nanos))
        };
        ConstraintValue {
            segments,
            text,
            number: numeric.map(|numeric| numeric.float),
            integer,
            boolean,
            datetime_nanos,
        }
    }

    /// The literal pieces between wildcards.
    pub fn segments(&self) -> &[String] {
        &self.segments
    }

    /// The unescaped text, wildcards shown as `*`.
    pub fn text(&self) -> &str {
        &self.text
    }

    pub fn has_wildcards(&self) -> bool {
        self.segments.len() > 1
    }

    /// True for a value that is a single wildcard and nothing else (`*`).
    pub fn is_lone_wildcard(&self) -> bool {
        self.segments.len() == 2 && self.segments.iter().all(String::is_empty)
    }

    pub fn as_number(&self) -> Option<f64> {
        self.number
    }

    pub(crate) fn as_integer(&self) -> Option<i128> {
        self.integer
    }

    pub(crate) fn as_boolean(&self) -> Option<bool> {
        self.boolean
    }

    pub(crate) fn as_datetime_nanos(&self) -> Option<i128> {
        self.datetime_nanos
    }

    /// String equality where each wildcard matches any run of characters.
    pub(crate) fn matches_text(&self, candidate: &str) -> bool {
        let (first, rest) = match self.segments.split_first() {
            Some((first, rest)) if !rest.is_empty() => (first, rest),
            _ => return candidate == self.text,
        };
        let Some((last, middle)) = rest.split_last() else {
            return candidate == self.text;
        };
        if candidate.len() < first.len() + last.len() {
            return false;
        }
        if !candidate.starts_with(first.as_str()) || !candidate.ends_with(last.as_str()) {
            return false;
        }
        let mut remaining = &candidate[first.len()..candidate.len() - last.len()];
        for segment in middle {
            match remaining.find(segment.as_str()) {
                Some(index) => remaining = &remaining[index + segment.len()..],
                None => return false,
            }
        }
        true
    }
}

/// Whitespace the parser trims around tokens and values.
pub(crate) fn is_filter_whitespace(character: char) -> bool {
    matches!(character, ' ' | '\t' | '\n' | '\r')
}

fn must_escape(character: char) -> bool {
    matches!(character, '(' | ')' | '*' | '\\')
}

/// Prints the value so that the parser reads back the same segments: `(`, `)`,
/// `*` and `\` are escaped, as are whitespace the parser would trim and a
/// leading `=`, `<` or `>` that would merge into the operator.
impl fmt::Display for ConstraintValue {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let last_index = self.segments.len() - 1;
        for (index, segment) in self.segments.iter().enumerate() {
            if index > 0 {
                formatter.write_char('*')?;
            }
            let leading_whitespace_end = if index == 0 {
                segment.len() - segment.trim_start_matches(is_filter_whitespace).len()
            } else {
                0
            };
            let trailing_whitespace_start = if index == last_index {
                segment.trim_end_matches(is_filter_whitespace).len()
            } else {
                segment.len()
            };
            for (offset, character) in segment.char_indices() {
                let is_value_start = index == 0 && offset == 0;
                let escape = must_escape(character)
                    || offset < leading_whitespace_end
                    || offset >= trailing_whitespace_start
                    || (is_value_start && matches!(character, '=' | '<' | '>'));
                if escape {
                    formatter.write_char('\\')?;
                }
                formatter.write_char(character)?;
            }
        }
        Ok(())
    }
}
