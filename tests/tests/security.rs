//! Exploit tests (issue 16): each plays one attack of `docs/security.md`'s threat
//! model against real binaries and asserts the refusal. Every test also reports a
//! row of the abuse table (`golem_tests::abuse::report`), which
//! `scripts/bench/abuse.sh` prints. The cases are grouped by the boundary they
//! test, one file each under `tests/tests/security/`.
#![allow(clippy::unwrap_used)] // test helpers panic on setup failure by design

#[path = "security/daemon.rs"]
mod daemon;
#[path = "security/images.rs"]
mod images;
#[path = "security/money.rs"]
mod money;
#[path = "security/transfers.rs"]
mod transfers;
