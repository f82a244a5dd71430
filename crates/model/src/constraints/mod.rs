//! The market constraint language: LDAP-like filters such as
//! `(&(golem.inf.mem.gib>=0.5)(golem.runtime.name=vm))`, as used by yagna's
//! `core/market/resolver`. This module owns the syntax tree ([`Constraint`]),
//! its parser ([`parse`], with byte-positioned errors), its canonical printing
//! (`Display`, which [`parse`] reads back to the same tree) and the three-valued
//! evaluation against [`Properties`] used to match demands with offers.
//!
//! Evaluation rules, in short: a comparison on a missing property is
//! [`Truth::Undefined`], and only [`Truth::True`] counts as a match. `attr=*` is
//! a presence test and is simply true or false. Numbers compare numerically,
//! strings compare with `*` wildcards for `=` and lexicographically for ordering,
//! booleans only with `=`, arrays match when any element does, and a type
//! mismatch is false. The `$v`, `$t` and `$d` suffixes compare as versions,
//! RFC 3339 datetimes and exact decimals. Aspects (`attr[aspect]`) are parsed but
//! properties carry none, so a comparison on one is undefined and a presence
//! test on one is false, as in yagna.

mod compact;
mod compare;
mod eval;
mod parser;
mod value;

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;

use std::fmt;
use std::str::FromStr;

pub use compact::{CompiledConstraint, KeyTable, MatchForm};
pub use eval::{match_both_ways, matches, ConstraintSide, MatchOutcome, SideMismatch, Truth};
pub use parser::{parse, ConstraintParseError, ConstraintParseErrorKind, Found, MAX_NESTING_DEPTH};
pub use value::ConstraintValue;

/// A parsed constraint filter.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Constraint {
    /// `()` or an empty constraint string: always true.
    #[default]
    Empty,
    /// `(&f1 f2 ...)`: true when every child is; `(&)` is true.
    And(Vec<Constraint>),
    /// `(|f1 f2 ...)`: true when any child is; `(|)` is false.
    Or(Vec<Constraint>),
    /// `(!f)`.
    Not(Box<Constraint>),
    /// `(attr=*)`: the property exists.
    Present(Attribute),
    /// `(attr op value)`.
    Compare(Comparison),
}

/// How the property and the value of a comparison are interpreted, chosen by the
/// attribute's type suffix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ValueType {
    /// No suffix: numbers, strings (with wildcards) and booleans.
    #[default]
    Any,
    /// `$v`: dotted numeric versions with optional semver pre-release.
    Version,
    /// `$t`: RFC 3339 datetimes (a JSON integer property counts as Unix milliseconds).
    DateTime,
    /// `$d`: exact decimals.
    Decimal,
}

impl ValueType {
    fn suffix(self) -> &'static str {
        match self {
            ValueType::Any => "",
            ValueType::Version => "$v",
            ValueType::DateTime => "$t",
            ValueType::Decimal => "$d",
        }
    }
}

/// A property reference: `name`, optionally `name[aspect]`, optionally followed
/// by a type suffix (`name$v`, `name[aspect]$t`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Attribute {
    name: String,
    aspect: Option<String>,
    value_type: ValueType,
    /// The name's property-key hash, computed once so lookups need not.
    name_hash: u64,
}

impl Attribute {
    /// Parses an attribute reference as written in a filter (`golem.inf.mem.gib`,
    /// `golem.runtime.version$v`, `x[aspect]$d`).
    pub fn new(text: &str) -> Result<Attribute, ConstraintParseError> {
        parser::parse_attribute_only(text)
    }

    pub(crate) fn from_parts(name: String, aspect: Option<String>, value_type: ValueType) -> Self {
        let name_hash = crate::properties::key_hash(&name);
        Attribute {
            name,
            aspect,
            value_type,
            name_hash,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn aspect(&self) -> Option<&str> {
        self.aspect.as_deref()
    }

    pub fn value_type(&self) -> ValueType {
        self.value_type
    }
}

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ComparisonOperator {
    Equal,
    /// `<>`: the negation of `=` (still undefined on a missing property).
    NotEqual,
    Less,
    LessOrEqual,
    Greater,
    GreaterOrEqual,
}

impl ComparisonOperator {
    pub fn symbol(self) -> &'static str {
        match self {
            ComparisonOperator::Equal => "=",
            ComparisonOperator::NotEqual => "<>",
            ComparisonOperator::Less => "<",
            ComparisonOperator::LessOrEqual => "<=",
            ComparisonOperator::Greater => ">",
            ComparisonOperator::GreaterOrEqual => ">=",
        }
    }
}

/// `(attribute operator value)`.
#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    attribute: Attribute,
    operator: ComparisonOperator,
    value: ConstraintValue,
}

impl Comparison {
    /// Note `(attr=*)` is read back as [`Constraint::Present`], so an `Equal`
    /// comparison against a lone wildcard does not survive printing and parsing.
    pub fn new(attribute: Attribute, operator: ComparisonOperator, value: ConstraintValue) -> Self {
        Comparison {
            attribute,
            operator,
            value,
        }
    }

    pub fn attribute(&self) -> &Attribute {
        &self.attribute
    }

    pub fn operator(&self) -> ComparisonOperator {
        self.operator
    }

    pub fn value(&self) -> &ConstraintValue {
        &self.value
    }
}

impl Constraint {
    /// True for the leaves of the tree: presence tests and comparisons.
    pub fn is_leaf(&self) -> bool {
        matches!(self, Constraint::Present(_) | Constraint::Compare(_))
    }
}

impl FromStr for Constraint {
    type Err = ConstraintParseError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        parse(text)
    }
}

impl FromStr for Attribute {
    type Err = ConstraintParseError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Attribute::new(text)
    }
}

impl fmt::Display for Attribute {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.name)?;
        if let Some(aspect) = &self.aspect {
            write!(formatter, "[{aspect}]")?;
        }
        formatter.write_str(self.value_type.suffix())
    }
}

impl fmt::Display for ComparisonOperator {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.symbol())
    }
}

impl fmt::Display for Comparison {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            formatter,
            "({}{}{})",
            self.attribute, self.operator, self.value
        )
    }
}

/// The canonical form: no whitespace, `(&(a=b)(c>=1))`.
impl fmt::Display for Constraint {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Constraint::Empty => formatter.write_str("()"),
            Constraint::And(children) => write_composite(formatter, '&', children),
            Constraint::Or(children) => write_composite(formatter, '|', children),
            Constraint::Not(child) => write!(formatter, "(!{child})"),
            Constraint::Present(attribute) => write!(formatter, "({attribute}=*)"),
            Constraint::Compare(comparison) => fmt::Display::fmt(comparison, formatter),
        }
    }
}

fn write_composite(
    formatter: &mut fmt::Formatter<'_>,
    symbol: char,
    children: &[Constraint],
) -> fmt::Result {
    write!(formatter, "({symbol}")?;
    for child in children {
        fmt::Display::fmt(child, formatter)?;
    }
    formatter.write_str(")")
}

/// Serialized as its canonical text.
impl serde::Serialize for Constraint {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Constraint {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        parse(&text).map_err(serde::de::Error::custom)
    }
}
