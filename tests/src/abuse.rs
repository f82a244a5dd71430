//! The abuse table: each exploit test of `tests/tests/security.rs` reports the
//! attack it played, the refusal it expected and what it saw, as one tagged line
//! on stdout. `scripts/bench/abuse.sh` runs the suite and gathers those lines
//! into a table; the test's own assertions decide pass or fail.

/// Print one row of the abuse table: `ABUSE-ROW<TAB>attack<TAB>expected<TAB>seen`.
/// Tabs and newlines inside the fields are flattened so a row stays one line.
pub fn report(attack: &str, expected: &str, seen: &str) {
    println!(
        "ABUSE-ROW\t{}\t{}\t{}",
        flat(attack),
        flat(expected),
        flat(seen)
    );
}

/// A field with its tabs and line breaks turned into spaces.
fn flat(text: &str) -> String {
    text.replace(['\t', '\n', '\r'], " ")
}

#[cfg(test)]
mod tests {
    #[test]
    fn fields_are_flattened_to_one_line() {
        assert_eq!(super::flat("a\tb\nc\rd"), "a b c d");
    }
}
