//! Property tests: random syntax trees survive printing and parsing unchanged,
//! arbitrary text never makes the parser panic, and evaluation is consistent.

use proptest::prelude::*;
use serde_json::Value;

use super::*;
use crate::properties::Properties;

fn value_type_strategy() -> impl Strategy<Value = ValueType> {
    prop_oneof![
        4 => Just(ValueType::Any),
        1 => Just(ValueType::Version),
        1 => Just(ValueType::DateTime),
        1 => Just(ValueType::Decimal),
    ]
}

fn attribute_strategy() -> impl Strategy<Value = Attribute> {
    let name = prop_oneof![3 => "[a-c]", 1 => "[a-zA-Z0-9._?!-]{1,16}"];
    let aspect = proptest::option::weighted(0.1, "[a-z0-9._?!-]{1,8}");
    (name, aspect, value_type_strategy())
        .prop_map(|(name, aspect, value_type)| Attribute::from_parts(name, aspect, value_type))
}

fn operator_strategy() -> impl Strategy<Value = ComparisonOperator> {
    prop_oneof![
        Just(ComparisonOperator::Equal),
        Just(ComparisonOperator::NotEqual),
        Just(ComparisonOperator::Less),
        Just(ComparisonOperator::LessOrEqual),
        Just(ComparisonOperator::Greater),
        Just(ComparisonOperator::GreaterOrEqual),
    ]
}

/// Segments full of characters that need escaping, whitespace and operators.
fn value_strategy() -> impl Strategy<Value = ConstraintValue> {
    let segment = prop_oneof![
        2 => "[a-z0-9 ()*\\\\=<>!&|\t\n\r.:é-]{0,6}",
        1 => "-?[0-9]{1,4}(\\.[0-9]{1,3})?",
        1 => "\\PC{0,5}",
    ];
    proptest::collection::vec(segment, 1..4).prop_map(ConstraintValue::with_wildcards)
}

fn comparison_strategy() -> impl Strategy<Value = Comparison> {
    (attribute_strategy(), operator_strategy(), value_strategy())
        .prop_filter(
            "(a=*) reads back as a presence test",
            |(_, operator, value)| {
                !(*operator == ComparisonOperator::Equal && value.is_lone_wildcard())
            },
        )
        .prop_map(|(attribute, operator, value)| Comparison::new(attribute, operator, value))
}

fn constraint_strategy() -> impl Strategy<Value = Constraint> {
    let leaf = prop_oneof![
        1 => Just(Constraint::Empty),
        2 => attribute_strategy().prop_map(Constraint::Present),
        6 => comparison_strategy().prop_map(Constraint::Compare),
    ];
    leaf.prop_recursive(6, 48, 5, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..5).prop_map(Constraint::And),
            proptest::collection::vec(inner.clone(), 0..5).prop_map(Constraint::Or),
            inner.prop_map(|child| Constraint::Not(Box::new(child))),
        ]
    })
}

fn json_leaf_strategy() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        (-1.0e6..1.0e6f64).prop_map(Value::from),
        "[a-z0-9 .*-]{0,6}".prop_map(Value::String),
        "-?[0-9]{1,3}(\\.[0-9]{1,2}){0,2}".prop_map(Value::String),
        Just(Value::String("2020-01-01T00:00:00Z".to_owned())),
        Just(Value::Null),
    ]
}

fn properties_strategy() -> impl Strategy<Value = Properties> {
    let value = prop_oneof![
        4 => json_leaf_strategy(),
        1 => proptest::collection::vec(json_leaf_strategy(), 0..3).prop_map(Value::Array),
    ];
    proptest::collection::btree_map("[a-c]", value, 0..4)
        .prop_map(|entries| entries.into_iter().collect::<Properties>())
}

/// Text built from the filter alphabet, so that the parser gets deep into it.
fn filter_like_text_strategy() -> impl Strategy<Value = String> {
    "[()&|!=<>*\\\\ \t\nab.$vtd\\[\\]é-]{0,48}"
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn printed_trees_parse_back_to_the_same_tree(constraint in constraint_strategy()) {
        let printed = constraint.to_string();
        prop_assert_eq!(parse(&printed), Ok(constraint.clone()), "printed: {}", printed);
        let padded = format!(" \n\t{printed}\t\n ");
        prop_assert_eq!(parse(&padded), Ok(constraint));
    }

    #[test]
    fn arbitrary_text_never_panics(text in any::<String>()) {
        if let Ok(constraint) = parse(&text) {
            prop_assert_eq!(parse(&constraint.to_string()), Ok(constraint));
        }
    }

    #[test]
    fn filter_like_text_never_panics_and_reprints_stably(text in filter_like_text_strategy()) {
        match parse(&text) {
            Ok(constraint) => prop_assert_eq!(parse(&constraint.to_string()), Ok(constraint)),
            Err(error) => prop_assert!(error.position() <= text.len()),
        }
    }

    #[test]
    fn unmatched_clauses_are_empty_exactly_when_true(
        constraint in constraint_strategy(),
        properties in properties_strategy(),
    ) {
        let truth = constraint.evaluate(&properties);
        let negated = Constraint::Not(Box::new(constraint.clone()));
        prop_assert_eq!(negated.evaluate(&properties), truth.negate());
        let clauses = constraint.unmatched_clauses(&properties);
        prop_assert_eq!(clauses.is_empty(), truth == Truth::True, "clauses: {:?}", clauses);
        for clause in &clauses {
            prop_assert!(parse(clause).is_ok(), "clause {} should parse", clause);
        }
    }
}
