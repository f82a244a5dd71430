//! The API fuzz run (tier `fuzz_`): `tests/fuzz/run.sh` drives schemathesis
//! over ya-client's OpenAPI specs against a live `golem-daemon` and fails on
//! any 5xx other than the documented 501s, or a dropped connection
//! (`docs/fuzz.md`). Needs `tests/fuzz/setup.sh` (schemathesis from PyPI).
#![allow(clippy::unwrap_used)] // test helpers panic on setup failure by design

use std::path::Path;
use std::process::Command;

use golem_tests::binary;

#[test]
#[ignore = "needs schemathesis (GOLEM_TEST_FUZZ=1 after tests/fuzz/setup.sh); takes about 3 minutes"]
fn fuzz_api_answers_no_server_error_but_the_documented_501s() {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/run.sh");
    let output = Command::new("bash")
        .arg(&script)
        .arg(binary("golem-daemon"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "tests/fuzz/run.sh failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    assert!(stdout.contains("fuzz: passed"), "{stdout}");
}
