//! Three-valued evaluation of a [`Constraint`] against [`Properties`], the
//! two-way demand/offer match built on it, and the naming of the clauses that
//! kept a match from happening. Evaluation does not allocate.

use std::cmp::Ordering;
use std::fmt::Write;

use serde_json::{Number, Value};

use super::compare::{
    compare_decimal_texts, compare_version_texts, millis_to_nanos, parse_datetime_nanos,
    parse_numeric_text, StackText,
};
use super::{Attribute, Comparison, ComparisonOperator, Constraint, ConstraintValue, ValueType};
use crate::properties::Properties;

/// The outcome of evaluating a filter. Only `True` is a match.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Truth {
    True,
    False,
    /// A referenced property (or aspect) is missing.
    Undefined,
}

impl Truth {
    pub fn from_bool(value: bool) -> Truth {
        if value {
            Truth::True
        } else {
            Truth::False
        }
    }

    pub fn is_true(self) -> bool {
        self == Truth::True
    }

    /// `!`: swaps true and false; undefined stays undefined.
    pub fn negate(self) -> Truth {
        match self {
            Truth::True => Truth::False,
            Truth::False => Truth::True,
            Truth::Undefined => Truth::Undefined,
        }
    }
}

impl Constraint {
    pub fn evaluate(&self, properties: &Properties) -> Truth {
        match self {
            Constraint::Empty => Truth::True,
            Constraint::And(children) => evaluate_and(children, properties),
            Constraint::Or(children) => evaluate_or(children, properties),
            Constraint::Not(child) => child.evaluate(properties).negate(),
            Constraint::Present(attribute) => evaluate_presence(attribute, properties),
            Constraint::Compare(comparison) => comparison.evaluate(properties),
        }
    }

    /// True only when the filter evaluates to [`Truth::True`].
    pub fn matches(&self, properties: &Properties) -> bool {
        self.evaluate(properties).is_true()
    }

    /// The printed clauses that keep this filter from being true: leaves that are
    /// false or undefined, and `(!...)` clauses whose operand is true. Empty when
    /// the filter matches.
    pub fn unmatched_clauses(&self, properties: &Properties) -> Vec<String> {
        let mut clauses = Vec::new();
        if !self.evaluate(properties).is_true() {
            self.collect_blocking_clauses(properties, &mut clauses);
        }
        clauses
    }

    /// Precondition: `self` does not evaluate to true.
    fn collect_blocking_clauses(&self, properties: &Properties, clauses: &mut Vec<String>) {
        match self {
            Constraint::Empty => {}
            Constraint::And(children) | Constraint::Or(children) if children.is_empty() => {
                clauses.push(self.to_string());
            }
            Constraint::And(children) | Constraint::Or(children) => {
                for child in children {
                    if !child.evaluate(properties).is_true() {
                        child.collect_blocking_clauses(properties, clauses);
                    }
                }
            }
            Constraint::Not(child) => {
                if child.evaluate(properties).is_true() {
                    clauses.push(self.to_string());
                } else {
                    child.collect_undefined_clauses(properties, clauses);
                }
            }
            Constraint::Present(_) | Constraint::Compare(_) => clauses.push(self.to_string()),
        }
    }

    /// Precondition: `self` evaluates to undefined.
    fn collect_undefined_clauses(&self, properties: &Properties, clauses: &mut Vec<String>) {
        match self {
            Constraint::Empty => {}
            Constraint::And(children) | Constraint::Or(children) => {
                for child in children {
                    if child.evaluate(properties) == Truth::Undefined {
                        child.collect_undefined_clauses(properties, clauses);
                    }
                }
            }
            Constraint::Not(child) => child.collect_undefined_clauses(properties, clauses),
            Constraint::Present(_) | Constraint::Compare(_) => clauses.push(self.to_string()),
        }
    }
}

fn evaluate_and(children: &[Constraint], properties: &Properties) -> Truth {
    let mut any_undefined = false;
    for child in children {
        match child.evaluate(properties) {
            Truth::False => return Truth::False,
            Truth::Undefined => any_undefined = true,
            Truth::True => {}
        }
    }
    if any_undefined {
        Truth::Undefined
    } else {
        Truth::True
    }
}

fn evaluate_or(children: &[Constraint], properties: &Properties) -> Truth {
    let mut any_undefined = false;
    for child in children {
        match child.evaluate(properties) {
            Truth::True => return Truth::True,
            Truth::Undefined => any_undefined = true,
            Truth::False => {}
        }
    }
    if any_undefined {
        Truth::Undefined
    } else {
        Truth::False
    }
}

/// Presence is never undefined: a missing property (and any aspect, since
/// properties carry none) is simply absent, as in yagna.
fn evaluate_presence(attribute: &Attribute, properties: &Properties) -> Truth {
    if attribute.aspect.is_some() {
        return Truth::False;
    }
    Truth::from_bool(
        properties
            .get_prehashed(&attribute.name, attribute.name_hash)
            .is_some(),
    )
}

impl Comparison {
    pub fn evaluate(&self, properties: &Properties) -> Truth {
        if self.attribute.aspect.is_some() {
            return Truth::Undefined;
        }
        let Some(property) =
            properties.get_prehashed(&self.attribute.name, self.attribute.name_hash)
        else {
            return Truth::Undefined;
        };
        match self.operator {
            ComparisonOperator::NotEqual => {
                Truth::from_bool(!self.property_satisfies(property, ComparisonOperator::Equal))
            }
            operator => Truth::from_bool(self.property_satisfies(property, operator)),
        }
    }

    /// An array satisfies the comparison when any of its elements does.
    fn property_satisfies(&self, property: &Value, operator: ComparisonOperator) -> bool {
        match property {
            Value::Array(items) => items
                .iter()
                .any(|item| self.property_satisfies(item, operator)),
            Value::Number(number) => self.scalar_satisfies(Scalar::Number(number), operator),
            Value::String(text) => self.scalar_satisfies(Scalar::String(text), operator),
            Value::Bool(flag) => self.scalar_satisfies(Scalar::Bool(*flag), operator),
            Value::Null | Value::Object(_) => self.scalar_satisfies(Scalar::Other, operator),
        }
    }

    /// `=`, `<>` and the orderings on one scalar (not an array) of a property;
    /// shared by the [`Properties`] evaluation and the market's compact
    /// [`super::compact::MatchForm`], so both follow the same rules.
    pub(crate) fn scalar_satisfies(
        &self,
        scalar: Scalar<'_>,
        operator: ComparisonOperator,
    ) -> bool {
        let value = &self.value;
        match self.attribute.value_type {
            ValueType::Any => untyped_scalar_satisfies(scalar, operator, value),
            ValueType::Version => {
                let Scalar::String(text) = scalar else {
                    return false;
                };
                accepts(operator, compare_version_texts(text, value.text()))
            }
            ValueType::DateTime => {
                let property_nanos = match scalar {
                    Scalar::String(text) => parse_datetime_nanos(text),
                    Scalar::Number(number) => json_integer(number).map(millis_to_nanos),
                    _ => None,
                };
                let ordering = property_nanos
                    .zip(value.as_datetime_nanos())
                    .map(|(property_nanos, value_nanos)| property_nanos.cmp(&value_nanos));
                accepts(operator, ordering)
            }
            ValueType::Decimal => match scalar {
                Scalar::String(text) => {
                    accepts(operator, compare_decimal_texts(text, value.text()))
                }
                Scalar::Number(number) => {
                    let mut text = StackText::new();
                    if write!(text, "{number}").is_err() {
                        return false;
                    }
                    accepts(operator, compare_decimal_texts(text.as_str(), value.text()))
                }
                _ => false,
            },
        }
    }
}

/// One scalar of a property, borrowed from a JSON [`Value`] or from a compact
/// [`super::compact::MatchForm`].
#[derive(Debug, Clone, Copy)]
pub(crate) enum Scalar<'a> {
    Number(&'a Number),
    String(&'a str),
    Bool(bool),
    /// `null` or an (empty) object: never satisfies a comparison.
    Other,
}

fn untyped_scalar_satisfies(
    scalar: Scalar<'_>,
    operator: ComparisonOperator,
    value: &ConstraintValue,
) -> bool {
    match scalar {
        Scalar::Number(number) => accepts(operator, compare_json_number(number, value)),
        Scalar::String(text) => string_satisfies(text, operator, value),
        Scalar::Bool(flag) => {
            operator == ComparisonOperator::Equal && value.as_boolean() == Some(flag)
        }
        Scalar::Other => false,
    }
}

fn string_satisfies(text: &str, operator: ComparisonOperator, value: &ConstraintValue) -> bool {
    if let Some(value_number) = value.as_number() {
        if let Some(property_number) = parse_numeric_text(text) {
            let ordering = match (property_number.integer, value.as_integer()) {
                (Some(property_integer), Some(value_integer)) => {
                    Some(property_integer.cmp(&value_integer))
                }
                _ => property_number.float.partial_cmp(&value_number),
            };
            return accepts(operator, ordering);
        }
    }
    if operator == ComparisonOperator::Equal {
        return value.matches_text(text);
    }
    if value.as_number().is_some() {
        // An ordering against a number on a text that is not one: type mismatch.
        return false;
    }
    accepts(operator, Some(text.cmp(value.text())))
}

fn json_integer(number: &Number) -> Option<i128> {
    number
        .as_i64()
        .map(i128::from)
        .or_else(|| number.as_u64().map(i128::from))
}

fn compare_json_number(number: &Number, value: &ConstraintValue) -> Option<Ordering> {
    if let (Some(property_integer), Some(value_integer)) =
        (json_integer(number), value.as_integer())
    {
        return Some(property_integer.cmp(&value_integer));
    }
    number.as_f64()?.partial_cmp(&value.as_number()?)
}

/// Whether `ordering` (property compared to value) satisfies `operator`; no
/// ordering means the two could not be compared, which never satisfies.
fn accepts(operator: ComparisonOperator, ordering: Option<Ordering>) -> bool {
    let Some(ordering) = ordering else {
        return false;
    };
    match operator {
        ComparisonOperator::Equal => ordering == Ordering::Equal,
        ComparisonOperator::NotEqual => ordering != Ordering::Equal,
        ComparisonOperator::Less => ordering == Ordering::Less,
        ComparisonOperator::LessOrEqual => ordering != Ordering::Greater,
        ComparisonOperator::Greater => ordering == Ordering::Greater,
        ComparisonOperator::GreaterOrEqual => ordering != Ordering::Less,
    }
}

/// Whether `constraint` is true for `properties`.
pub fn matches(constraint: &Constraint, properties: &Properties) -> bool {
    constraint.matches(properties)
}

/// Whose constraint failed in a two-way match.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConstraintSide {
    /// The demand's constraint, evaluated against the offer's properties.
    Demand,
    /// The offer's constraint, evaluated against the demand's properties.
    Offer,
}

/// One side of a failed two-way match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SideMismatch {
    pub side: ConstraintSide,
    /// `False` or `Undefined`.
    pub truth: Truth,
    /// See [`Constraint::unmatched_clauses`].
    pub unmatched_clauses: Vec<String>,
}

/// The result of matching a demand with an offer in both directions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MatchOutcome {
    /// Both constraints are true for the other side's properties.
    Matched,
    /// One or two sides failed (demand first when both did).
    Unmatched(Vec<SideMismatch>),
}

impl MatchOutcome {
    pub fn is_match(&self) -> bool {
        matches!(self, MatchOutcome::Matched)
    }

    /// The failed sides; empty when matched.
    pub fn mismatches(&self) -> &[SideMismatch] {
        match self {
            MatchOutcome::Matched => &[],
            MatchOutcome::Unmatched(mismatches) => mismatches,
        }
    }
}

/// Evaluates the demand's constraint against the offer's properties and the
/// offer's constraint against the demand's properties.
pub fn match_both_ways(
    demand_properties: &Properties,
    demand_constraint: &Constraint,
    offer_properties: &Properties,
    offer_constraint: &Constraint,
) -> MatchOutcome {
    let sides = [
        (ConstraintSide::Demand, demand_constraint, offer_properties),
        (ConstraintSide::Offer, offer_constraint, demand_properties),
    ];
    let mut mismatches = Vec::new();
    for (side, constraint, properties) in sides {
        let truth = constraint.evaluate(properties);
        if truth.is_true() {
            continue;
        }
        mismatches.push(SideMismatch {
            side,
            truth,
            unmatched_clauses: constraint.unmatched_clauses(properties),
        });
    }
    if mismatches.is_empty() {
        return MatchOutcome::Matched;
    }
    MatchOutcome::Unmatched(mismatches)
}
