//! The compact matching form of the market's hot path: one demand against every
//! offer in the store. It owns [`KeyTable`] (property keys numbered by whoever
//! owns the table: the market service, never the process), [`MatchForm`] (an
//! offer's properties as a key-id-sorted array of ids, an array of small values
//! and one text buffer, so matching touches three short contiguous blocks per
//! offer instead of a pointer per key and string) and [`CompiledConstraint`] (a
//! filter whose attributes are resolved to key ids once).
//!
//! Evaluating a [`CompiledConstraint`] on a [`MatchForm`] gives exactly what
//! [`Constraint::evaluate`] gives on the [`Properties`] the form was built from:
//! the scalar comparisons are the same code ([`Comparison::scalar_satisfies`]).

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{Number, Value};

use super::eval::{Scalar, Truth};
use super::{Comparison, ComparisonOperator, Constraint};
use crate::properties::Properties;

/// Property keys numbered `0..len`, owned by one market (no process-wide table).
/// Ids are never reused, so forms and compiled constraints built against the
/// same table stay valid as it grows.
#[derive(Debug, Default, Clone)]
pub struct KeyTable {
    ids: HashMap<Arc<str>, u32>,
}

impl KeyTable {
    pub fn new() -> Self {
        KeyTable::default()
    }

    /// The id of `key`, numbering it when new.
    pub fn intern(&mut self, key: &str) -> u32 {
        if let Some(id) = self.ids.get(key) {
            return *id;
        }
        let id = u32::try_from(self.ids.len()).unwrap_or(u32::MAX);
        self.ids.insert(Arc::from(key), id);
        id
    }

    /// The id of `key` if it was ever interned.
    pub fn get(&self, key: &str) -> Option<u32> {
        self.ids.get(key).copied()
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

/// One value of a [`MatchForm`]; strings and array elements live in the form's
/// shared buffers.
#[derive(Debug, Clone, PartialEq)]
enum CompactValue {
    Number(Number),
    Bool(bool),
    /// `text[start..start + len]`.
    String {
        start: u32,
        len: u32,
    },
    /// `values[start..start + len]`.
    Array {
        start: u32,
        len: u32,
    },
    /// `null` or an empty object.
    Other,
}

/// An offer's (or demand's) properties laid out for matching.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct MatchForm {
    /// Key ids of the top-level properties, ascending.
    keys: Box<[u32]>,
    /// `values[i]` is the value of `keys[i]`; array elements follow after
    /// `keys.len()`.
    values: Box<[CompactValue]>,
    text: Box<str>,
}

impl MatchForm {
    /// Lays `properties` out, numbering new keys in `table`.
    pub fn new(properties: &Properties, table: &mut KeyTable) -> MatchForm {
        let mut top: Vec<(u32, &Value)> = properties
            .iter()
            .map(|(key, value)| (table.intern(key), value))
            .collect();
        top.sort_unstable_by_key(|(id, _)| *id);
        let mut builder = Builder {
            values: Vec::with_capacity(top.len()),
            text: String::new(),
        };
        builder.values.resize(top.len(), CompactValue::Other);
        for (index, (_, value)) in top.iter().enumerate() {
            let compact = builder.push_value(value);
            builder.values[index] = compact;
        }
        MatchForm {
            keys: top.iter().map(|(id, _)| *id).collect(),
            values: builder.values.into_boxed_slice(),
            text: builder.text.into_boxed_str(),
        }
    }

    fn get(&self, key: u32) -> Option<&CompactValue> {
        let index = self.keys.binary_search(&key).ok()?;
        self.values.get(index)
    }

    fn scalar<'a>(&'a self, value: &'a CompactValue) -> Scalar<'a> {
        match value {
            CompactValue::Number(number) => Scalar::Number(number),
            CompactValue::Bool(flag) => Scalar::Bool(*flag),
            CompactValue::String { start, len } => {
                let start = *start as usize;
                Scalar::String(self.text.get(start..start + *len as usize).unwrap_or(""))
            }
            CompactValue::Array { .. } | CompactValue::Other => Scalar::Other,
        }
    }

    fn elements(&self, start: u32, len: u32) -> &[CompactValue] {
        let start = start as usize;
        self.values.get(start..start + len as usize).unwrap_or(&[])
    }

    /// An array satisfies a comparison when any element does (as in eval.rs).
    fn satisfies(
        &self,
        value: &CompactValue,
        comparison: &Comparison,
        operator: ComparisonOperator,
    ) -> bool {
        match value {
            CompactValue::Array { start, len } => self
                .elements(*start, *len)
                .iter()
                .any(|element| self.satisfies(element, comparison, operator)),
            scalar => comparison.scalar_satisfies(self.scalar(scalar), operator),
        }
    }
}

struct Builder {
    values: Vec<CompactValue>,
    text: String,
}

impl Builder {
    fn push_text(&mut self, text: &str) -> CompactValue {
        let start = u32::try_from(self.text.len()).unwrap_or(u32::MAX);
        self.text.push_str(text);
        CompactValue::String {
            start,
            len: u32::try_from(text.len()).unwrap_or(0),
        }
    }

    fn push_value(&mut self, value: &Value) -> CompactValue {
        match value {
            Value::Number(number) => CompactValue::Number(number.clone()),
            Value::Bool(flag) => CompactValue::Bool(*flag),
            Value::String(text) => self.push_text(text),
            Value::Null | Value::Object(_) => CompactValue::Other,
            Value::Array(items) => {
                let start = self.values.len();
                self.values.resize(start + items.len(), CompactValue::Other);
                for (offset, item) in items.iter().enumerate() {
                    let compact = self.push_value(item);
                    self.values[start + offset] = compact;
                }
                CompactValue::Array {
                    start: u32::try_from(start).unwrap_or(u32::MAX),
                    len: u32::try_from(items.len()).unwrap_or(0),
                }
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Node {
    Empty,
    And(Vec<Node>),
    Or(Vec<Node>),
    Not(Box<Node>),
    /// `None`: a key no form can have, or an aspect (never present).
    Present(Option<u32>),
    /// `key` `None`: the property is missing everywhere (or has an aspect).
    Compare {
        key: Option<u32>,
        comparison: Box<Comparison>,
    },
}

/// A [`Constraint`] with its attributes resolved to key ids of one [`KeyTable`].
#[derive(Debug, Clone, PartialEq)]
pub struct CompiledConstraint {
    root: Node,
}

impl Default for CompiledConstraint {
    fn default() -> Self {
        CompiledConstraint { root: Node::Empty }
    }
}

impl CompiledConstraint {
    /// Resolves `constraint` against `table`, numbering its attributes so the
    /// result stays valid for forms built later with the same table.
    pub fn compile(constraint: &Constraint, table: &mut KeyTable) -> CompiledConstraint {
        CompiledConstraint {
            root: compile_node(constraint, table),
        }
    }

    pub fn evaluate(&self, form: &MatchForm) -> Truth {
        evaluate_node(&self.root, form)
    }

    /// True only when the filter evaluates to [`Truth::True`].
    pub fn matches(&self, form: &MatchForm) -> bool {
        self.evaluate(form).is_true()
    }
}

fn compile_node(constraint: &Constraint, table: &mut KeyTable) -> Node {
    match constraint {
        Constraint::Empty => Node::Empty,
        Constraint::And(children) => Node::And(
            children
                .iter()
                .map(|child| compile_node(child, table))
                .collect(),
        ),
        Constraint::Or(children) => Node::Or(
            children
                .iter()
                .map(|child| compile_node(child, table))
                .collect(),
        ),
        Constraint::Not(child) => Node::Not(Box::new(compile_node(child, table))),
        Constraint::Present(attribute) => Node::Present(
            attribute
                .aspect
                .is_none()
                .then(|| table.intern(&attribute.name)),
        ),
        Constraint::Compare(comparison) => Node::Compare {
            key: comparison
                .attribute
                .aspect
                .is_none()
                .then(|| table.intern(&comparison.attribute.name)),
            comparison: Box::new(comparison.clone()),
        },
    }
}

fn evaluate_node(node: &Node, form: &MatchForm) -> Truth {
    match node {
        Node::Empty => Truth::True,
        Node::And(children) => {
            let mut any_undefined = false;
            for child in children {
                match evaluate_node(child, form) {
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
        Node::Or(children) => {
            let mut any_undefined = false;
            for child in children {
                match evaluate_node(child, form) {
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
        Node::Not(child) => evaluate_node(child, form).negate(),
        Node::Present(key) => Truth::from_bool(key.is_some_and(|key| form.get(key).is_some())),
        Node::Compare { key, comparison } => {
            let Some(value) = key.and_then(|key| form.get(key)) else {
                return Truth::Undefined;
            };
            match comparison.operator {
                ComparisonOperator::NotEqual => {
                    Truth::from_bool(!form.satisfies(value, comparison, ComparisonOperator::Equal))
                }
                operator => Truth::from_bool(form.satisfies(value, comparison, operator)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::constraints::parse;
    use proptest::prelude::*;
    use serde_json::json;

    fn offer() -> Properties {
        Properties::from_json(json!({
            "golem.inf.mem.gib": 4.0,
            "golem.inf.cpu.threads": 4,
            "golem.runtime.name": "vm",
            "golem.runtime.version": "0.4.2",
            "golem.runtime.capabilities": ["inet", "vpn", ["nested", 7]],
            "golem.node.debug.subnet": "public",
            "golem.srv.caps.multi-activity": true,
            "golem.com.payment.protocol.version": "3",
            "golem.empty": {},
            "golem.null": null,
            "golem.srv.comp.expiration": 1_700_000_000_000_i64,
            "golem.price$d": "0.10",
        }))
        .unwrap_or_default()
    }

    const FILTERS: &[&str] = &[
        "()",
        "(&)",
        "(|)",
        "(golem.inf.mem.gib>=0.5)",
        "(golem.inf.mem.gib<0.5)",
        "(golem.inf.cpu.threads=4)",
        "(golem.inf.cpu.threads<>4)",
        "(golem.runtime.name=v*)",
        "(golem.runtime.name=wasm*)",
        "(golem.runtime.version$v>=0.4.0)",
        "(golem.runtime.capabilities=vpn)",
        "(golem.runtime.capabilities=nested)",
        "(golem.runtime.capabilities=7)",
        "(golem.runtime.capabilities<>vpn)",
        "(golem.srv.caps.multi-activity=true)",
        "(golem.com.payment.protocol.version>1)",
        "(golem.missing=1)",
        "(golem.missing=*)",
        "(!(golem.missing=1))",
        "(golem.runtime.name=*)",
        "(golem.runtime.name[aspect]=vm)",
        "(golem.runtime.name[aspect]=*)",
        "(golem.empty=*)",
        "(golem.empty={})",
        "(golem.null=null)",
        "(golem.srv.comp.expiration$t>2020-01-01T00:00:00Z)",
        "(golem.inf.mem.gib$d=4.0)",
        "(&(golem.inf.mem.gib>=0.5)(golem.missing=1))",
        "(|(golem.inf.mem.gib<0.5)(golem.missing=1))",
        "(|(golem.inf.mem.gib<0.5)(golem.runtime.name=vm))",
        "(&(golem.node.debug.subnet=public)(!(golem.runtime.name=wasmtime))(golem.inf.cpu.threads>=1))",
    ];

    #[test]
    fn compiled_evaluation_equals_the_tree_evaluation() {
        let properties = offer();
        let mut table = KeyTable::new();
        let form = MatchForm::new(&properties, &mut table);
        for text in FILTERS {
            let constraint = parse(text).unwrap_or_else(|error| panic!("{text}: {error}"));
            let compiled = CompiledConstraint::compile(&constraint, &mut table);
            assert_eq!(
                compiled.evaluate(&form),
                constraint.evaluate(&properties),
                "{text}"
            );
        }
    }

    #[test]
    fn forms_built_after_compiling_still_resolve_keys() {
        let mut table = KeyTable::new();
        let constraint = parse("(&(late.key=1)(other=*))").unwrap_or_default();
        let compiled = CompiledConstraint::compile(&constraint, &mut table);
        let properties =
            Properties::from_json(json!({"late.key": 1, "other": "x"})).unwrap_or_default();
        let form = MatchForm::new(&properties, &mut table);
        assert_eq!(compiled.evaluate(&form), Truth::True);
        let without = MatchForm::new(&Properties::new(), &mut table);
        assert_eq!(compiled.evaluate(&without), Truth::False);
    }

    fn leaf_value() -> impl Strategy<Value = Value> {
        prop_oneof![
            any::<i64>().prop_map(Value::from),
            (-10.0f64..10.0).prop_map(Value::from),
            any::<bool>().prop_map(Value::from),
            "[a-c0-9.]{0,4}".prop_map(Value::from),
            Just(Value::Null),
        ]
    }

    proptest! {
        #[test]
        fn compact_and_tree_agree_on_random_properties(
            values in proptest::collection::vec(
                prop_oneof![leaf_value(), proptest::collection::vec(leaf_value(), 0..3).prop_map(Value::from)],
                4,
            ),
            operand in "[a-c0-9.*]{0,3}",
            operator in prop_oneof![Just("="), Just("<>"), Just("<"), Just("<="), Just(">"), Just(">=")],
            suffix in prop_oneof![Just(""), Just("$v"), Just("$d"), Just("$t")],
        ) {
            let mut members = serde_json::Map::new();
            for (index, value) in values.into_iter().enumerate() {
                members.insert(format!("k{index}"), value);
            }
            let properties = Properties::from_json(Value::Object(members)).unwrap_or_default();
            let mut table = KeyTable::new();
            let form = MatchForm::new(&properties, &mut table);
            for key in ["k0", "k1", "k2", "k3", "k9"] {
                let text = format!("({key}{suffix}{operator}{operand})");
                let Ok(constraint) = parse(&text) else { continue };
                let compiled = CompiledConstraint::compile(&constraint, &mut table);
                prop_assert_eq!(compiled.evaluate(&form), constraint.evaluate(&properties), "{}", text);
            }
        }
    }
}
