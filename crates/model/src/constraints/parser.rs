//! The constraint parser: a hand-written recursive descent over the filter text
//! that reports the byte position and what it expected on every error.
//!
//! ```text
//! constraint := ws* [ filter ws* ]              (empty text means always true)
//! filter     := "(" ws* content ")"
//! content    := ""                              (the "()" filter, always true)
//!             | "&" (ws* filter)* ws* | "|" (ws* filter)* ws*
//!             | "!" ws* filter ws*
//!             | attribute ws* operator value     (value ends at an unescaped ")")
//! attribute  := name ( "[" name "]" )? ( "$" ("v" | "t" | "d") )?
//! name       := [A-Za-z0-9._?!-]+
//! operator   := "=" | "<>" | "<=" | "<" | ">=" | ">"
//! ```
//!
//! Values keep inner whitespace but lose unescaped whitespace at either end; `\`
//! makes the next character literal (needed for `(`, `)`, `*` and `\`). An
//! unescaped `(` inside a value is an error, which catches a missing `)`.

use std::fmt;

use super::value::is_filter_whitespace;
use super::{Attribute, Comparison, ComparisonOperator, Constraint, ConstraintValue, ValueType};

/// Filters nested deeper than this are refused, so hostile input can not
/// exhaust the stack of the parser or the evaluator.
pub const MAX_NESTING_DEPTH: usize = 64;

/// What the parser ran into instead of what it expected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    EndOfInput,
    Character(char),
}

impl fmt::Display for Found {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Found::EndOfInput => formatter.write_str("end of input"),
            Found::Character(character) => write!(formatter, "{character:?}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConstraintParseErrorKind {
    #[error("expected {expected} but found {found}")]
    Unexpected {
        expected: &'static str,
        found: Found,
    },
    #[error("filters are nested deeper than {limit} levels")]
    TooDeeplyNested { limit: usize },
}

/// A constraint that could not be parsed, e.g.
/// `at position 17: expected ')' but found end of input`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("at position {position}: {kind}")]
pub struct ConstraintParseError {
    /// Byte offset into the parsed text.
    pub position: usize,
    pub kind: ConstraintParseErrorKind,
}

impl ConstraintParseError {
    pub fn position(&self) -> usize {
        self.position
    }

    pub fn kind(&self) -> &ConstraintParseErrorKind {
        &self.kind
    }
}

/// Parses a constraint. The empty (or all-whitespace) text and `()` are
/// [`Constraint::Empty`], which is always true.
pub fn parse(text: &str) -> Result<Constraint, ConstraintParseError> {
    let mut parser = Parser { text, position: 0 };
    parser.skip_whitespace();
    if parser.at_end() {
        return Ok(Constraint::Empty);
    }
    let constraint = parser.parse_filter(1)?;
    parser.skip_whitespace();
    if !parser.at_end() {
        return Err(parser.unexpected("end of input"));
    }
    Ok(constraint)
}

pub(crate) fn parse_attribute_only(text: &str) -> Result<Attribute, ConstraintParseError> {
    let mut parser = Parser { text, position: 0 };
    let attribute = parser.parse_attribute()?;
    if !parser.at_end() {
        return Err(parser.unexpected("end of attribute"));
    }
    Ok(attribute)
}

fn is_name_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'-' | b'_' | b'?' | b'!')
}

struct Parser<'a> {
    text: &'a str,
    /// Byte offset; always on a character boundary.
    position: usize,
}

impl Parser<'_> {
    fn at_end(&self) -> bool {
        self.position >= self.text.len()
    }

    fn peek_byte(&self) -> Option<u8> {
        self.text.as_bytes().get(self.position).copied()
    }

    fn peek_char(&self) -> Option<char> {
        self.text
            .get(self.position..)
            .and_then(|rest| rest.chars().next())
    }

    fn found(&self) -> Found {
        match self.peek_char() {
            Some(character) => Found::Character(character),
            None => Found::EndOfInput,
        }
    }

    fn unexpected(&self, expected: &'static str) -> ConstraintParseError {
        ConstraintParseError {
            position: self.position,
            kind: ConstraintParseErrorKind::Unexpected {
                expected,
                found: self.found(),
            },
        }
    }

    fn skip_whitespace(&mut self) {
        while let Some(byte) = self.peek_byte() {
            if !is_filter_whitespace(char::from(byte)) {
                return;
            }
            self.position += 1;
        }
    }

    fn expect_byte(
        &mut self,
        byte: u8,
        expected: &'static str,
    ) -> Result<(), ConstraintParseError> {
        if self.peek_byte() != Some(byte) {
            return Err(self.unexpected(expected));
        }
        self.position += 1;
        Ok(())
    }

    /// `"(" ws* content ")"`; `depth` counts this filter.
    fn parse_filter(&mut self, depth: usize) -> Result<Constraint, ConstraintParseError> {
        if depth > MAX_NESTING_DEPTH {
            return Err(ConstraintParseError {
                position: self.position,
                kind: ConstraintParseErrorKind::TooDeeplyNested {
                    limit: MAX_NESTING_DEPTH,
                },
            });
        }
        self.expect_byte(b'(', "'('")?;
        self.skip_whitespace();
        match self.peek_byte() {
            Some(b')') => {
                self.position += 1;
                Ok(Constraint::Empty)
            }
            Some(b'&') => {
                self.position += 1;
                Ok(Constraint::And(self.parse_filter_list(depth)?))
            }
            Some(b'|') => {
                self.position += 1;
                Ok(Constraint::Or(self.parse_filter_list(depth)?))
            }
            Some(b'!') if self.negation_follows() => {
                self.position += 1;
                self.skip_whitespace();
                let child = self.parse_filter(depth + 1)?;
                self.skip_whitespace();
                self.expect_byte(b')', "')'")?;
                Ok(Constraint::Not(Box::new(child)))
            }
            Some(byte) if is_name_byte(byte) => self.parse_item(),
            _ => Err(self.unexpected("'&', '|', '!', ')' or an attribute name")),
        }
    }

    /// At a `!`: a negation unless an attribute name goes on right after it
    /// (`(!x=1)` compares the attribute `!x`, as in yagna).
    fn negation_follows(&self) -> bool {
        let next = self.text.as_bytes().get(self.position + 1).copied();
        !matches!(next, Some(byte) if is_name_byte(byte) || matches!(byte, b'=' | b'<' | b'>' | b'[' | b'$'))
    }

    /// `(ws* filter)* ws* ")"` after `&` or `|`.
    fn parse_filter_list(&mut self, depth: usize) -> Result<Vec<Constraint>, ConstraintParseError> {
        let mut children = Vec::new();
        loop {
            self.skip_whitespace();
            match self.peek_byte() {
                Some(b'(') => children.push(self.parse_filter(depth + 1)?),
                Some(b')') => {
                    self.position += 1;
                    return Ok(children);
                }
                _ => return Err(self.unexpected("'(' or ')'")),
            }
        }
    }

    /// `attribute ws* operator value ")"`.
    fn parse_item(&mut self) -> Result<Constraint, ConstraintParseError> {
        let attribute = self.parse_attribute()?;
        self.skip_whitespace();
        let operator = self.parse_operator()?;
        let value = self.parse_value()?;
        if operator == ComparisonOperator::Equal && value.is_lone_wildcard() {
            return Ok(Constraint::Present(attribute));
        }
        Ok(Constraint::Compare(Comparison::new(
            attribute, operator, value,
        )))
    }

    fn parse_name(&mut self, expected: &'static str) -> Result<&str, ConstraintParseError> {
        let start = self.position;
        while self.peek_byte().is_some_and(is_name_byte) {
            self.position += 1;
        }
        if self.position == start {
            return Err(self.unexpected(expected));
        }
        Ok(&self.text[start..self.position])
    }

    fn parse_attribute(&mut self) -> Result<Attribute, ConstraintParseError> {
        let name = self.parse_name("an attribute name")?.to_owned();
        let mut aspect = None;
        let mut value_type = ValueType::Any;
        if self.peek_byte() == Some(b'[') {
            self.position += 1;
            aspect = Some(self.parse_name("an aspect name")?.to_owned());
            self.expect_byte(b']', "']'")?;
        }
        if self.peek_byte() == Some(b'$') {
            self.position += 1;
            value_type = match self.peek_byte() {
                Some(b'v') => ValueType::Version,
                Some(b't') => ValueType::DateTime,
                Some(b'd') => ValueType::Decimal,
                _ => return Err(self.unexpected("a type suffix 'v', 't' or 'd'")),
            };
            self.position += 1;
        }
        // Also accept the aspect after the type suffix: `name$v[aspect]`.
        if aspect.is_none() && value_type != ValueType::Any && self.peek_byte() == Some(b'[') {
            self.position += 1;
            aspect = Some(self.parse_name("an aspect name")?.to_owned());
            self.expect_byte(b']', "']'")?;
        }
        Ok(Attribute::from_parts(name, aspect, value_type))
    }

    fn parse_operator(&mut self) -> Result<ComparisonOperator, ConstraintParseError> {
        let next = self.text.as_bytes().get(self.position + 1).copied();
        let (operator, length) = match (self.peek_byte(), next) {
            (Some(b'='), _) => (ComparisonOperator::Equal, 1),
            (Some(b'<'), Some(b'>')) => (ComparisonOperator::NotEqual, 2),
            (Some(b'<'), Some(b'=')) => (ComparisonOperator::LessOrEqual, 2),
            (Some(b'<'), _) => (ComparisonOperator::Less, 1),
            (Some(b'>'), Some(b'=')) => (ComparisonOperator::GreaterOrEqual, 2),
            (Some(b'>'), _) => (ComparisonOperator::Greater, 1),
            _ => {
                return Err(
                    self.unexpected("a comparison operator ('=', '<>', '<', '<=', '>' or '>=')")
                )
            }
        };
        self.position += length;
        Ok(operator)
    }

    /// Everything up to the closing `)`, which it consumes.
    fn parse_value(&mut self) -> Result<ConstraintValue, ConstraintParseError> {
        self.skip_whitespace();
        let mut segments = Vec::new();
        let mut current = String::new();
        // Bytes at the end of `current` that are unescaped whitespace, trimmed
        // when the value turns out to end there.
        let mut trailing_whitespace_length = 0;
        loop {
            let Some(character) = self.peek_char() else {
                return Err(self.unexpected("')'"));
            };
            match character {
                ')' => {
                    self.position += 1;
                    current.truncate(current.len() - trailing_whitespace_length);
                    segments.push(current);
                    return Ok(ConstraintValue::with_wildcards(segments));
                }
                '(' => return Err(self.unexpected("')' or an escaped '\\('")),
                '*' => {
                    self.position += 1;
                    segments.push(std::mem::take(&mut current));
                    trailing_whitespace_length = 0;
                }
                '\\' => {
                    self.position += 1;
                    let Some(escaped) = self.peek_char() else {
                        return Err(self.unexpected("a character after '\\'"));
                    };
                    self.position += escaped.len_utf8();
                    current.push(escaped);
                    trailing_whitespace_length = 0;
                }
                other => {
                    self.position += other.len_utf8();
                    current.push(other);
                    if is_filter_whitespace(other) {
                        trailing_whitespace_length += 1;
                    } else {
                        trailing_whitespace_length = 0;
                    }
                }
            }
        }
    }
}
