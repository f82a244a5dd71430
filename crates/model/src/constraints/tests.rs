//! Unit tests of parsing, printing and evaluating constraints.

use serde_json::{json, Value};

use super::*;
use crate::properties::Properties;

const YAPAPI_DEMAND: &str = "(&(golem.node.debug.subnet=public)\n\t(golem.com.payment.platform.erc20-holesky-tglm.address=*)\n\t(golem.com.payment.protocol.version>1)\n\t(golem.com.pricing.model=linear)\n\t(&(golem.inf.mem.gib>=0.5)\n\t(golem.inf.storage.gib>=2.0)\n\t(golem.inf.cpu.threads>=1)\n\t(golem.runtime.name=vm)))";

fn parsed(text: &str) -> Constraint {
    match parse(text) {
        Ok(constraint) => constraint,
        Err(error) => panic!("{text:?} should parse: {error}"),
    }
}

fn parse_error(text: &str) -> String {
    match parse(text) {
        Ok(constraint) => panic!("{text:?} should not parse, got {constraint}"),
        Err(error) => error.to_string(),
    }
}

fn properties(value: Value) -> Properties {
    match Properties::from_json(value) {
        Ok(properties) => properties,
        Err(error) => panic!("bad test properties: {error}"),
    }
}

fn truth(filter: &str, props: Value) -> Truth {
    parsed(filter).evaluate(&properties(props))
}

fn realistic_offer() -> Properties {
    properties(json!({
        "golem.inf.mem.gib": 1.0,
        "golem.inf.storage.gib": 10.0,
        "golem.inf.cpu.threads": 2,
        "golem.runtime.name": "vm",
        "golem.com.pricing.model": "linear",
        "golem.node.debug.subnet": "public",
        "golem.com.payment.platform.erc20-holesky-tglm.address": "0x1234567890abcdef1234567890abcdef12345678",
        "golem.com.payment.protocol.version": "3",
        "golem.com.usage.vector": ["golem.usage.cpu_sec", "golem.usage.duration_sec"],
        "golem.srv.comp.expiration": 1_700_000_000_000_i64,
    }))
}

// ---- parsing and printing ----

#[test]
fn empty_text_and_empty_filter_are_always_true() {
    assert_eq!(parsed(""), Constraint::Empty);
    assert_eq!(parsed("  \n\t"), Constraint::Empty);
    assert_eq!(parsed("()"), Constraint::Empty);
    assert_eq!(parsed(" ( ) "), Constraint::Empty);
    assert_eq!(truth("", json!({})), Truth::True);
    assert_eq!(truth("()", json!({})), Truth::True);
}

#[test]
fn parses_the_tree_shape() {
    let constraint = parsed("(&(a=b)(|(c>=1)(!(d<2)))(e=*))");
    let Constraint::And(children) = &constraint else {
        panic!("expected and, got {constraint:?}")
    };
    assert_eq!(children.len(), 3);
    let Constraint::Compare(first) = &children[0] else {
        panic!("expected comparison")
    };
    assert_eq!(first.attribute().name(), "a");
    assert_eq!(first.operator(), ComparisonOperator::Equal);
    assert_eq!(first.value().text(), "b");
    let Constraint::Or(alternatives) = &children[1] else {
        panic!("expected or")
    };
    assert!(matches!(&alternatives[1], Constraint::Not(inner) if inner.is_leaf()));
    let Constraint::Present(attribute) = &children[2] else {
        panic!("expected presence")
    };
    assert_eq!(attribute.name(), "e");
}

#[test]
fn parses_every_operator() {
    let cases = [
        ("(a=1)", ComparisonOperator::Equal),
        ("(a<>1)", ComparisonOperator::NotEqual),
        ("(a<1)", ComparisonOperator::Less),
        ("(a<=1)", ComparisonOperator::LessOrEqual),
        ("(a>1)", ComparisonOperator::Greater),
        ("(a>=1)", ComparisonOperator::GreaterOrEqual),
    ];
    for (text, operator) in cases {
        let constraint = parsed(text);
        let Constraint::Compare(comparison) = &constraint else {
            panic!("{text}: {constraint:?}")
        };
        assert_eq!(comparison.operator(), operator, "{text}");
        assert_eq!(comparison.value().as_number(), Some(1.0), "{text}");
        assert_eq!(constraint.to_string(), text);
    }
}

#[test]
fn prints_the_canonical_form_without_whitespace() {
    let constraint = parsed(" ( & ( a = b ) \n\t( c >= 1 ) ) ");
    assert_eq!(constraint.to_string(), "(&(a=b)(c>=1))");
    assert_eq!(parsed(&constraint.to_string()), constraint);
    assert_eq!(parsed("(| )").to_string(), "(|)");
    assert_eq!(parsed("(!\n(x=*))").to_string(), "(!(x=*))");
}

#[test]
fn yapapi_demand_parses_and_prints_canonically() {
    let constraint = parsed(YAPAPI_DEMAND);
    assert_eq!(
        constraint.to_string(),
        "(&(golem.node.debug.subnet=public)(golem.com.payment.platform.erc20-holesky-tglm.address=*)(golem.com.payment.protocol.version>1)(golem.com.pricing.model=linear)(&(golem.inf.mem.gib>=0.5)(golem.inf.storage.gib>=2.0)(golem.inf.cpu.threads>=1)(golem.runtime.name=vm)))"
    );
    assert_eq!(parsed(&constraint.to_string()), constraint);
}

#[test]
fn attribute_names_keep_odd_characters_type_suffixes_and_aspects() {
    let constraint = parsed("(golem.!exp.gap-31.v0.node.descriptor_x?=1)");
    let Constraint::Compare(comparison) = &constraint else {
        panic!("{constraint:?}")
    };
    assert_eq!(
        comparison.attribute().name(),
        "golem.!exp.gap-31.v0.node.descriptor_x?"
    );

    for (text, value_type) in [
        ("(a$v>=1.0)", ValueType::Version),
        ("(a$t<2020-01-01T00:00:00Z)", ValueType::DateTime),
        ("(a$d=0.1)", ValueType::Decimal),
    ] {
        let constraint = parsed(text);
        let Constraint::Compare(comparison) = &constraint else {
            panic!("{constraint:?}")
        };
        assert_eq!(comparison.attribute().value_type(), value_type);
        assert_eq!(comparison.attribute().aspect(), None);
        assert_eq!(constraint.to_string(), text);
    }

    let with_aspect = parsed("(a.b[price]$d>=1)");
    let Constraint::Compare(comparison) = &with_aspect else {
        panic!("{with_aspect:?}")
    };
    assert_eq!(comparison.attribute().name(), "a.b");
    assert_eq!(comparison.attribute().aspect(), Some("price"));
    assert_eq!(comparison.attribute().value_type(), ValueType::Decimal);
    assert_eq!(parsed("(a.b$d[price]>=1)"), with_aspect);
    assert_eq!(with_aspect.to_string(), "(a.b[price]$d>=1)");
}

#[test]
fn attribute_starting_with_bang_is_an_attribute_not_a_negation() {
    let constraint = parsed("(!x=1)");
    let Constraint::Compare(comparison) = &constraint else {
        panic!("{constraint:?}")
    };
    assert_eq!(comparison.attribute().name(), "!x");
    assert!(matches!(parsed("(! (x=1))"), Constraint::Not(_)));
}

#[test]
fn attribute_new_parses_a_reference() {
    let attribute = Attribute::new("golem.runtime.version$v");
    assert_eq!(
        attribute.as_ref().map(|attribute| attribute.value_type()),
        Ok(ValueType::Version)
    );
    assert_eq!(
        attribute
            .map(|attribute| attribute.to_string())
            .ok()
            .as_deref(),
        Some("golem.runtime.version$v")
    );
    let error = Attribute::new("a b").err().map(|error| error.to_string());
    assert_eq!(
        error.as_deref(),
        Some("at position 1: expected end of attribute but found ' '")
    );
}

#[test]
fn values_keep_inner_whitespace_unescape_and_trim_the_ends() {
    let constraint = parsed("(cn=  Babs  Jensen \t)");
    let Constraint::Compare(comparison) = &constraint else {
        panic!("{constraint:?}")
    };
    assert_eq!(comparison.value().text(), "Babs  Jensen");
    assert_eq!(constraint.to_string(), "(cn=Babs  Jensen)");

    let constraint = parsed(r"(a=x\(1\)\*\\\ )");
    let Constraint::Compare(comparison) = &constraint else {
        panic!("{constraint:?}")
    };
    assert_eq!(comparison.value().text(), r"x(1)*\ ");
    assert!(!comparison.value().has_wildcards());
    assert_eq!(constraint.to_string(), r"(a=x\(1\)\*\\\ )");
    assert_eq!(parsed(&constraint.to_string()), constraint);
}

#[test]
fn values_that_would_merge_with_the_operator_are_escaped_when_printed() {
    let less_than_equals_sign = Constraint::Compare(Comparison::new(
        Attribute::new("a").unwrap_or_else(|error| panic!("{error}")),
        ComparisonOperator::Less,
        ConstraintValue::exact("=b"),
    ));
    assert_eq!(less_than_equals_sign.to_string(), r"(a<\=b)");
    assert_eq!(
        parsed(&less_than_equals_sign.to_string()),
        less_than_equals_sign
    );
    let double_equals = parsed("(a==b)");
    let Constraint::Compare(comparison) = &double_equals else {
        panic!("{double_equals:?}")
    };
    assert_eq!(comparison.value().text(), "=b");
}

#[test]
fn wildcards_are_split_out_of_values() {
    let constraint = parsed("(a=*x*y\\*z*)");
    let Constraint::Compare(comparison) = &constraint else {
        panic!("{constraint:?}")
    };
    assert_eq!(comparison.value().segments(), ["", "x", "y*z", ""]);
    assert_eq!(constraint.to_string(), "(a=*x*y\\*z*)");
    assert!(matches!(parsed("(a= * )"), Constraint::Present(_)));
    assert!(matches!(parsed("(a<>*)"), Constraint::Compare(_)));
}

#[test]
fn serde_uses_the_canonical_text() {
    let constraint = parsed("(&(a=b) (c>1))");
    let text = serde_json::to_string(&constraint).ok();
    assert_eq!(text.as_deref(), Some(r#""(&(a=b)(c>1))""#));
    let back: Result<Constraint, _> = serde_json::from_str(r#""(&(a=b)(c>1))""#);
    assert_eq!(back.ok(), Some(constraint));
    assert!(serde_json::from_str::<Constraint>(r#""(a""#).is_err());
}

// ---- parse errors ----

#[test]
fn unbalanced_parentheses_report_the_position() {
    assert_eq!(parse_error("(golem.inf.mem.gib"), "at position 18: expected a comparison operator ('=', '<>', '<', '<=', '>' or '>=') but found end of input");
    assert_eq!(
        parse_error("(golem.inf.mem.gib>1"),
        "at position 20: expected ')' but found end of input"
    );
    assert_eq!(
        parse_error("(&(a=b)"),
        "at position 7: expected '(' or ')' but found end of input"
    );
    assert_eq!(
        parse_error("((a=b)"),
        "at position 1: expected '&', '|', '!', ')' or an attribute name but found '('"
    );
    assert_eq!(
        parse_error("(&(a=b(c=d))"),
        "at position 6: expected ')' or an escaped '\\(' but found '('"
    );
    assert_eq!(
        parse_error("(a=b))"),
        "at position 5: expected end of input but found ')'"
    );
}

#[test]
fn missing_operator_is_reported() {
    assert_eq!(parse_error("(abc)"), "at position 4: expected a comparison operator ('=', '<>', '<', '<=', '>' or '>=') but found ')'");
    assert_eq!(parse_error("(a~=b)"), "at position 2: expected a comparison operator ('=', '<>', '<', '<=', '>' or '>=') but found '~'");
    assert_eq!(parse_error("(a b=c)"), "at position 3: expected a comparison operator ('=', '<>', '<', '<=', '>' or '>=') but found 'b'");
}

#[test]
fn empty_attribute_is_reported() {
    assert_eq!(
        parse_error("(=b)"),
        "at position 1: expected '&', '|', '!', ')' or an attribute name but found '='"
    );
    assert_eq!(
        parse_error("(&( >=1))"),
        "at position 4: expected '&', '|', '!', ')' or an attribute name but found '>'"
    );
    assert_eq!(
        parse_error("(a[]=1)"),
        "at position 3: expected an aspect name but found ']'"
    );
    assert_eq!(
        parse_error("(a$x=1)"),
        "at position 3: expected a type suffix 'v', 't' or 'd' but found 'x'"
    );
}

#[test]
fn trailing_garbage_is_reported() {
    assert_eq!(
        parse_error("(a=b)x"),
        "at position 5: expected end of input but found 'x'"
    );
    assert_eq!(
        parse_error("(a=b) \n (c=d)"),
        "at position 8: expected end of input but found '('"
    );
    assert_eq!(
        parse_error("a=b"),
        "at position 0: expected '(' but found 'a'"
    );
}

#[test]
fn truncated_composites_are_reported() {
    assert_eq!(
        parse_error("(&"),
        "at position 2: expected '(' or ')' but found end of input"
    );
    assert_eq!(
        parse_error("(|\n"),
        "at position 3: expected '(' or ')' but found end of input"
    );
    assert_eq!(
        parse_error("(!"),
        "at position 2: expected '(' but found end of input"
    );
    assert_eq!(
        parse_error("(!)"),
        "at position 2: expected '(' but found ')'"
    );
    assert_eq!(
        parse_error("(!(a=1)(b=2))"),
        "at position 7: expected ')' but found '('"
    );
    assert_eq!(
        parse_error("("),
        "at position 1: expected '&', '|', '!', ')' or an attribute name but found end of input"
    );
    assert_eq!(
        parse_error("(a=b\\"),
        "at position 5: expected a character after '\\' but found end of input"
    );
}

#[test]
fn error_positions_are_byte_offsets_and_errors_are_structured() {
    let error = parse("(a=é(").err();
    assert_eq!(error.as_ref().map(ConstraintParseError::position), Some(5));
    assert_eq!(
        error.map(|error| error.kind),
        Some(ConstraintParseErrorKind::Unexpected {
            expected: "')' or an escaped '\\('",
            found: Found::Character('(')
        })
    );
    assert_eq!(
        parse_error("(é=1)"),
        "at position 1: expected '&', '|', '!', ')' or an attribute name but found 'é'"
    );
}

#[test]
fn nesting_depth_is_limited() {
    let depth_ok = format!(
        "{}(a=1){}",
        "(!".repeat(MAX_NESTING_DEPTH - 1),
        ")".repeat(MAX_NESTING_DEPTH - 1)
    );
    assert!(parse(&depth_ok).is_ok());
    let too_deep = format!(
        "{}(a=1){}",
        "(&".repeat(MAX_NESTING_DEPTH),
        ")".repeat(MAX_NESTING_DEPTH)
    );
    assert_eq!(
        parse(&too_deep).err().map(|error| error.kind),
        Some(ConstraintParseErrorKind::TooDeeplyNested {
            limit: MAX_NESTING_DEPTH
        })
    );
    let hostile = "(&".repeat(100_000);
    assert_eq!(
        parse(&hostile).err().map(|error| error.kind),
        Some(ConstraintParseErrorKind::TooDeeplyNested {
            limit: MAX_NESTING_DEPTH
        })
    );
}

// ---- evaluation: operators on numbers ----

#[test]
fn numeric_operators_compare_numbers() {
    let props = json!({"n": 2});
    let expectations = [
        ("(n=2)", Truth::True),
        ("(n=2.0)", Truth::True),
        ("(n=3)", Truth::False),
        ("(n<>3)", Truth::True),
        ("(n<>2)", Truth::False),
        ("(n<3)", Truth::True),
        ("(n<2)", Truth::False),
        ("(n<=2)", Truth::True),
        ("(n<=1.5)", Truth::False),
        ("(n>1.5)", Truth::True),
        ("(n>2)", Truth::False),
        ("(n>=2)", Truth::True),
        ("(n>=10)", Truth::False),
    ];
    for (filter, expected) in expectations {
        assert_eq!(truth(filter, props.clone()), expected, "{filter}");
    }
}

#[test]
fn numbers_compare_numerically_not_lexically() {
    assert_eq!(truth("(n>9)", json!({"n": 10})), Truth::True);
    assert_eq!(truth("(n>=0.5)", json!({"n": 0.25})), Truth::False);
    assert_eq!(truth("(n<-1)", json!({"n": -2.5})), Truth::True);
    // Large integers are compared exactly, beyond f64 precision.
    assert_eq!(
        truth(
            "(n>9007199254740992)",
            json!({"n": 9_007_199_254_740_993_u64})
        ),
        Truth::True
    );
}

#[test]
fn numeric_strings_compare_numerically() {
    assert_eq!(truth("(v>1)", json!({"v": "3"})), Truth::True);
    assert_eq!(truth("(v>9)", json!({"v": "10"})), Truth::True);
    assert_eq!(truth("(v=3.0)", json!({"v": "3"})), Truth::True);
    assert_eq!(truth("(v<2)", json!({"v": "10"})), Truth::False);
}

#[test]
fn type_mismatches_are_false_not_undefined() {
    assert_eq!(truth("(v>=1)", json!({"v": "abc"})), Truth::False);
    assert_eq!(truth("(v=1)", json!({"v": "abc"})), Truth::False);
    assert_eq!(truth("(n>=abc)", json!({"n": 1})), Truth::False);
    assert_eq!(truth("(n=abc)", json!({"n": 1})), Truth::False);
    assert_eq!(truth("(n=1*)", json!({"n": 1})), Truth::False);
    assert_eq!(truth("(n=true)", json!({"n": 1})), Truth::False);
    assert_eq!(truth("(x=1)", json!({"x": null})), Truth::False);
    assert_eq!(truth("(x=1)", json!({"x": {}})), Truth::False);
    assert_eq!(truth("(n=inf)", json!({"n": 1})), Truth::False);
}

// ---- evaluation: strings ----

#[test]
fn strings_compare_exactly_and_lexicographically() {
    let props = json!({"s": "vm"});
    assert_eq!(truth("(s=vm)", props.clone()), Truth::True);
    assert_eq!(truth("(s=VM)", props.clone()), Truth::False);
    assert_eq!(truth("(s=v)", props.clone()), Truth::False);
    assert_eq!(truth("(s<>wasmtime)", props.clone()), Truth::True);
    assert_eq!(truth("(s<wasm)", props.clone()), Truth::True);
    assert_eq!(truth("(s>wasm)", props.clone()), Truth::False);
    assert_eq!(truth("(s<=vm)", props.clone()), Truth::True);
    assert_eq!(truth("(s>=vn)", props), Truth::False);
    assert_eq!(
        truth("(cn=Babs Jensen)", json!({"cn": "Babs Jensen"})),
        Truth::True
    );
}

#[test]
fn wildcards_match_anywhere_and_repeatedly() {
    let props = json!({"p": "hash://sha3:D5E31B:http://12.34.56.78:8000/rust-wasi-tutorial.zip"});
    let expectations = [
        ("(p=hash://*)", Truth::True),
        ("(p=*.zip)", Truth::True),
        ("(p=*sha3*8000*)", Truth::True),
        ("(p=hash*sha3*tutorial.zip)", Truth::True),
        ("(p=*8000*sha3*)", Truth::False),
        ("(p=http*)", Truth::False),
        ("(p=*.tar)", Truth::False),
        ("(p=**)", Truth::True),
    ];
    for (filter, expected) in expectations {
        assert_eq!(truth(filter, props.clone()), expected, "{filter}");
    }
    assert_eq!(truth("(x=a*a)", json!({"x": "a"})), Truth::False);
    assert_eq!(truth("(x=a*a)", json!({"x": "aa"})), Truth::True);
    assert_eq!(truth("(x=a\\*b)", json!({"x": "a*b"})), Truth::True);
    assert_eq!(truth("(x=a\\*b)", json!({"x": "axb"})), Truth::False);
    assert_eq!(truth("(x=a*b)", json!({"x": "axxb"})), Truth::True);
    assert_eq!(truth("(x<>a*)", json!({"x": "abc"})), Truth::False);
    assert_eq!(truth("(x<>a*)", json!({"x": "cba"})), Truth::True);
}

#[test]
fn presence_is_true_or_false_never_undefined() {
    assert_eq!(truth("(a=*)", json!({"a": 0})), Truth::True);
    assert_eq!(truth("(a=*)", json!({"a": null})), Truth::True);
    assert_eq!(truth("(a=*)", json!({"a": []})), Truth::True);
    assert_eq!(truth("(a=*)", json!({"b": 1})), Truth::False);
    assert_eq!(truth("(!(a=*))", json!({"b": 1})), Truth::True);
    assert_eq!(truth("(a.b=*)", json!({"a": {"b": "x"}})), Truth::True);
}

// ---- evaluation: booleans ----

#[test]
fn booleans_compare_only_for_equality() {
    let props = json!({"b": true});
    assert_eq!(truth("(b=true)", props.clone()), Truth::True);
    assert_eq!(truth("(b=false)", props.clone()), Truth::False);
    assert_eq!(truth("(b<>false)", props.clone()), Truth::True);
    assert_eq!(truth("(b>false)", props.clone()), Truth::False);
    assert_eq!(truth("(b>=true)", props.clone()), Truth::False);
    assert_eq!(truth("(b=1)", props.clone()), Truth::False);
    assert_eq!(truth("(b=tru*)", props), Truth::False);
    assert_eq!(truth("(b=false)", json!({"b": false})), Truth::True);
}

// ---- evaluation: lists ----

#[test]
fn lists_match_when_any_element_does() {
    let props = json!({"v": ["golem.usage.cpu_sec", "golem.usage.duration_sec"], "n": [1, 5, 9]});
    assert_eq!(truth("(v=golem.usage.cpu_sec)", props.clone()), Truth::True);
    assert_eq!(
        truth("(v=golem.usage.duration_sec)", props.clone()),
        Truth::True
    );
    assert_eq!(
        truth("(v=golem.usage.gpu_sec)", props.clone()),
        Truth::False
    );
    assert_eq!(truth("(v=*duration*)", props.clone()), Truth::True);
    assert_eq!(
        truth("(v<>golem.usage.cpu_sec)", props.clone()),
        Truth::False
    );
    assert_eq!(
        truth("(v<>golem.usage.gpu_sec)", props.clone()),
        Truth::True
    );
    assert_eq!(truth("(n>8)", props.clone()), Truth::True);
    assert_eq!(truth("(n>9)", props.clone()), Truth::False);
    assert_eq!(truth("(n<=1)", props.clone()), Truth::True);
    assert_eq!(truth("(n=5)", props.clone()), Truth::True);
    assert_eq!(truth("(n=4)", props), Truth::False);
    assert_eq!(truth("(e=x)", json!({"e": []})), Truth::False);
    assert_eq!(truth("(m=x)", json!({"m": [["y", "x"]]})), Truth::True);
}

// ---- evaluation: typed comparisons ----

#[test]
fn version_suffix_compares_versions() {
    let props = json!({"cn": "1.10.0", "pre": "1.0.0-rc.1", "num": 1});
    assert_eq!(truth("(cn$v>=1.5.0)", props.clone()), Truth::True);
    assert_eq!(
        truth("(cn>=1.5.0)", props.clone()),
        Truth::False,
        "plain strings compare lexically"
    );
    assert_eq!(truth("(cn$v=1.10)", props.clone()), Truth::True);
    assert_eq!(truth("(cn$v<1.9.9)", props.clone()), Truth::False);
    assert_eq!(truth("(cn$v<>1.10.0)", props.clone()), Truth::False);
    assert_eq!(truth("(pre$v<1.0.0)", props.clone()), Truth::True);
    assert_eq!(truth("(cn$v>=x.y)", props.clone()), Truth::False);
    assert_eq!(truth("(num$v>=1.0)", props.clone()), Truth::False);
    assert_eq!(truth("(missing$v>=1.0)", props), Truth::Undefined);
}

#[test]
fn datetime_suffix_compares_instants() {
    let props = json!({"t": "1985-04-12T23:20:50.52Z", "ms": 1_700_000_000_000_i64});
    assert_eq!(
        truth("(t$t<=1985-04-12T23:20:50.52Z)", props.clone()),
        Truth::True
    );
    assert_eq!(
        truth("(t$t<1985-04-12T23:20:50.52Z)", props.clone()),
        Truth::False
    );
    assert_eq!(
        truth("(t$t=1985-04-13T00:20:50.52+01:00)", props.clone()),
        Truth::True
    );
    assert_eq!(
        truth("(t$t>1985-04-12T23:20:50Z)", props.clone()),
        Truth::True
    );
    assert_eq!(truth("(t$t<=1985-04-13)", props.clone()), Truth::False);
    assert_eq!(
        truth("(ms$t>2023-11-14T22:13:19Z)", props.clone()),
        Truth::True
    );
    assert_eq!(
        truth("(ms$t>2023-11-14T22:13:20Z)", props.clone()),
        Truth::False
    );
    assert_eq!(truth("(ms$t=1700000000000)", props), Truth::True);
}

#[test]
fn decimal_suffix_compares_exactly() {
    let props = json!({"price": "0.10000000000000000001", "n": 0.1, "big": "123456789012345678901234567890"});
    assert_eq!(truth("(price$d>0.1)", props.clone()), Truth::True);
    assert_eq!(
        truth("(price>0.1)", props.clone()),
        Truth::False,
        "as f64 they are equal"
    );
    assert_eq!(truth("(n$d=0.1)", props.clone()), Truth::True);
    assert_eq!(truth("(n$d=0.10)", props.clone()), Truth::True);
    assert_eq!(truth("(n$d<0.2)", props.clone()), Truth::True);
    assert_eq!(
        truth("(big$d>123456789012345678901234567889)", props.clone()),
        Truth::True
    );
    assert_eq!(truth("(price$d>abc)", props), Truth::False);
}

#[test]
fn aspects_are_undefined_for_comparisons_and_absent_for_presence() {
    let props = json!({"a": 1});
    assert_eq!(truth("(a[price]=1)", props.clone()), Truth::Undefined);
    assert_eq!(truth("(a[price]=*)", props), Truth::False);
}

// ---- evaluation: three-valued logic ----

#[test]
fn missing_properties_are_undefined_and_never_match() {
    let props = properties(json!({"a": 1}));
    let missing = parsed("(b=1)");
    assert_eq!(missing.evaluate(&props), Truth::Undefined);
    assert!(!missing.matches(&props));
    let negated = parsed("(!(b=1))");
    assert_eq!(negated.evaluate(&props), Truth::Undefined);
    assert!(!matches(&negated, &props));
    assert_eq!(truth("(b<>1)", json!({"a": 1})), Truth::Undefined);
}

#[test]
fn and_or_not_follow_three_valued_logic() {
    let props = json!({"t": 1, "f": 0});
    let expectations = [
        ("(&(t=1)(t=1))", Truth::True),
        ("(&(t=1)(f=1))", Truth::False),
        ("(&(t=1)(u=1))", Truth::Undefined),
        ("(&(u=1)(f=1))", Truth::False),
        ("(&)", Truth::True),
        ("(|(f=1)(t=1))", Truth::True),
        ("(|(f=1)(f=2))", Truth::False),
        ("(|(f=1)(u=1))", Truth::Undefined),
        ("(|(u=1)(t=1))", Truth::True),
        ("(|)", Truth::False),
        ("(!(t=1))", Truth::False),
        ("(!(f=1))", Truth::True),
        ("(!(u=1))", Truth::Undefined),
        ("(!(!(t=1)))", Truth::True),
        ("(!())", Truth::False),
        (
            "(&(|(f=1)(t=1))(!(f=1))(|(u=1)(&(t=1)(!(u=*)))))",
            Truth::True,
        ),
        ("(|(&(t=1)(u=1))(!(|(f=0)(u=2))))", Truth::Undefined),
        ("(&()(t=1))", Truth::True),
    ];
    for (filter, expected) in expectations {
        assert_eq!(truth(filter, props.clone()), expected, "{filter}");
    }
}

// ---- the captured yapapi demand ----

#[test]
fn yapapi_demand_matches_a_realistic_offer() {
    let demand = parsed(YAPAPI_DEMAND);
    let offer = realistic_offer();
    assert_eq!(demand.evaluate(&offer), Truth::True);
    assert!(demand.unmatched_clauses(&offer).is_empty());
}

#[test]
fn yapapi_demand_rejects_the_offer_when_one_property_changes() {
    let demand = parsed(YAPAPI_DEMAND);
    let changes = [
        ("golem.inf.mem.gib", json!(0.25), "(golem.inf.mem.gib>=0.5)"),
        (
            "golem.inf.storage.gib",
            json!(1.5),
            "(golem.inf.storage.gib>=2.0)",
        ),
        (
            "golem.inf.cpu.threads",
            json!(0),
            "(golem.inf.cpu.threads>=1)",
        ),
        (
            "golem.runtime.name",
            json!("wasmtime"),
            "(golem.runtime.name=vm)",
        ),
        (
            "golem.node.debug.subnet",
            json!("devnet-beta"),
            "(golem.node.debug.subnet=public)",
        ),
        (
            "golem.com.pricing.model",
            json!("fixed"),
            "(golem.com.pricing.model=linear)",
        ),
        (
            "golem.com.payment.protocol.version",
            json!("1"),
            "(golem.com.payment.protocol.version>1)",
        ),
    ];
    for (key, value, clause) in changes {
        let mut offer = realistic_offer();
        offer.insert(key, value);
        assert_eq!(demand.evaluate(&offer), Truth::False, "{key}");
        assert_eq!(demand.unmatched_clauses(&offer), [clause], "{key}");
    }

    let mut without_address = realistic_offer();
    without_address.remove("golem.com.payment.platform.erc20-holesky-tglm.address");
    assert_eq!(demand.evaluate(&without_address), Truth::False);

    let mut without_memory = realistic_offer();
    without_memory.remove("golem.inf.mem.gib");
    assert_eq!(demand.evaluate(&without_memory), Truth::Undefined);
    assert!(!demand.matches(&without_memory));
    assert_eq!(
        demand.unmatched_clauses(&without_memory),
        ["(golem.inf.mem.gib>=0.5)"]
    );
}

// ---- unmatched clauses and two-way matching ----

#[test]
fn unmatched_clauses_name_false_and_undefined_leaves_and_true_negations() {
    let props = properties(json!({"a": 1, "b": 2}));
    let constraint = parsed("(&(a=1)(b=3)(c=1)(!(a=1))(|(b=0)(d=0))(!(e=1)))");
    assert_eq!(
        constraint.unmatched_clauses(&props),
        ["(b=3)", "(c=1)", "(!(a=1))", "(b=0)", "(d=0)", "(e=1)"]
    );
    assert!(parsed("(a=1)").unmatched_clauses(&props).is_empty());
    assert_eq!(parsed("(|)").unmatched_clauses(&props), ["(|)"]);
}

#[test]
fn match_both_ways_reports_each_failing_side() {
    let demand_properties = properties(
        json!({"golem.srv.comp.expiration": 1_700_000_000_000_i64, "golem.node.id.name": "requestor"}),
    );
    let offer_properties = realistic_offer();
    let demand_constraint = parsed(YAPAPI_DEMAND);
    let offer_constraint = parsed("(golem.srv.comp.expiration>0)");

    let outcome = match_both_ways(
        &demand_properties,
        &demand_constraint,
        &offer_properties,
        &offer_constraint,
    );
    assert_eq!(outcome, MatchOutcome::Matched);
    assert!(outcome.is_match());
    assert!(outcome.mismatches().is_empty());

    let strict_offer_constraint =
        parsed("(&(golem.node.id.name=requestor)(golem.srv.caps.multi-activity=true))");
    let outcome = match_both_ways(
        &demand_properties,
        &demand_constraint,
        &offer_properties,
        &strict_offer_constraint,
    );
    assert_eq!(
        outcome,
        MatchOutcome::Unmatched(vec![SideMismatch {
            side: ConstraintSide::Offer,
            truth: Truth::Undefined,
            unmatched_clauses: vec!["(golem.srv.caps.multi-activity=true)".to_owned()],
        }])
    );

    let mut small_offer = realistic_offer();
    small_offer.insert("golem.inf.mem.gib", json!(0.1));
    let outcome = match_both_ways(
        &demand_properties,
        &demand_constraint,
        &small_offer,
        &parsed("(x=1)"),
    );
    let sides: Vec<(ConstraintSide, Truth)> = outcome
        .mismatches()
        .iter()
        .map(|mismatch| (mismatch.side, mismatch.truth))
        .collect();
    assert_eq!(
        sides,
        [
            (ConstraintSide::Demand, Truth::False),
            (ConstraintSide::Offer, Truth::Undefined)
        ]
    );
    assert_eq!(
        outcome.mismatches()[0].unmatched_clauses,
        ["(golem.inf.mem.gib>=0.5)"]
    );
    assert!(!outcome.is_match());
}
