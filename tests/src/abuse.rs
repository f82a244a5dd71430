//! The abuse table: each exploit test of `tests/tests/security.rs` reports the
//! attack it played, the refusal it expected and what it saw, as one tagged line
//! on stdout. `scripts/bench/abuse.sh` runs the suite and gathers those lines
//! into a table; the test's own assertions decide pass or fail.

/// Print one row of the abuse table: `ABUSE-ROW<TAB>attack<TAB>expected<TAB>seen`.
/// Tabs and newlines inside the fields are flattened so a row stays one line.
pub fn report(attack: &str, expected: &str, seen: &str) {
    let flat = |text: &str| text.replace(['\t', '\n', '\r'], " ");
    println!(
        "ABUSE-ROW\t{}\t{}\t{}",
        flat(attack),
        flat(expected),
        flat(seen)
    );
}

#[cfg(test)]
mod tests {
    #[test]
    fn fields_are_flattened_to_one_line() {
        let flat = |text: &str| text.replace(['\t', '\n', '\r'], " ");
        assert_eq!(flat("a\tb\nc"), "a b c");
    }
}
