//! Running a node as a service: the systemd units under `packaging/systemd/`
//! pass `systemd-analyze verify` (tier `systemd_`), and a real `golem-daemon`
//! sends `READY=1` on the `NOTIFY_SOCKET` a test binds once its REST API
//! answers, and `STOPPING=1` when it is told to stop.
#![allow(clippy::unwrap_used)] // test helpers panic on setup failure by design

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use golem_tests::{binary, DaemonProcess};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Copy the units of `flavour` into `into`, their `ExecStart` binaries
/// pointed at the ones this test run built (verify checks they exist).
fn units_with_built_binaries(flavour: &str, into: &Path) -> Vec<PathBuf> {
    let source = repo_root().join("packaging/systemd").join(flavour);
    let bin_dir = binary("golem-daemon").parent().unwrap().to_path_buf();
    let mut units = Vec::new();
    for entry in std::fs::read_dir(&source).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("service") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let text = text
            .replace("/usr/local/bin/", &format!("{}/", bin_dir.display()))
            .replace("%h/.local/bin/", &format!("{}/", bin_dir.display()));
        let target = into.join(path.file_name().unwrap());
        std::fs::write(&target, text).unwrap();
        units.push(target);
    }
    units.sort();
    units
}

/// `systemd-analyze verify` exits 0 even on unknown keys and bad values,
/// which it reports on stderr: any line there fails the test.
fn verify(units: &[PathBuf], user: bool) {
    let runtime_dir = tempfile::tempdir().unwrap();
    let mut command = Command::new("systemd-analyze");
    if user {
        command
            .arg("--user")
            .env("XDG_RUNTIME_DIR", runtime_dir.path());
    }
    let output = command
        .arg("verify")
        .args(units)
        .output()
        .expect("systemd-analyze runs (install the systemd package)");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && stderr.trim().is_empty(),
        "systemd-analyze verify {units:?} (user: {user}): {}\n{stderr}",
        output.status
    );
}

#[test]
#[ignore = "needs systemd-analyze (GOLEM_TEST_SYSTEMD=1; scripts/test.sh turns it on when installed)"]
fn systemd_units_of_both_flavours_pass_verify() {
    for (flavour, user) in [("system", false), ("user", true)] {
        let dir = tempfile::tempdir().unwrap();
        let units = units_with_built_binaries(flavour, dir.path());
        let names: Vec<_> = units
            .iter()
            .map(|unit| unit.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            ["golem-daemon.service", "golem-provider.service"],
            "{flavour}"
        );
        for unit in &units {
            let text = std::fs::read_to_string(unit).unwrap();
            for directive in ["Restart=on-failure", "NoNewPrivileges=yes"] {
                assert!(text.contains(directive), "{unit:?} lacks {directive}");
            }
        }
        let daemon = std::fs::read_to_string(&units[0]).unwrap();
        assert!(daemon.contains("Type=notify"), "{flavour} daemon unit");
        verify(&units, user);
    }
    // The check can fail: a unit with a typo is reported.
    let dir = tempfile::tempdir().unwrap();
    let units = units_with_built_binaries("system", dir.path());
    let text = std::fs::read_to_string(&units[0])
        .unwrap()
        .replace("Type=notify", "Type=notifyy");
    std::fs::write(&units[0], text).unwrap();
    let output = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&units[0])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("notifyy"),
        "a bad value is reported"
    );
}

/// Receive one datagram within `timeout`, as text.
fn receive(socket: &UnixDatagram, timeout: Duration) -> String {
    socket.set_read_timeout(Some(timeout)).unwrap();
    let mut buffer = [0u8; 4096];
    let length = socket.recv(&mut buffer).expect("a notification in time");
    String::from_utf8_lossy(&buffer[..length]).into_owned()
}

#[test]
fn daemon_sends_ready_on_notify_socket_once_its_api_listens() {
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    let mut daemon = DaemonProcess::start_with_env(
        "notified",
        &dir.path().join("daemon"),
        &[],
        &[("NOTIFY_SOCKET", socket_path.to_str().unwrap())],
    )
    .unwrap();
    let ready = receive(&socket, Duration::from_secs(10));
    assert!(ready.lines().any(|line| line == "READY=1"), "{ready}");
    let api_host = daemon
        .api_url
        .trim_start_matches("http://")
        .trim_end_matches('/');
    assert!(
        ready.contains(&format!("STATUS=REST API listening on {api_host}")),
        "{ready} names {api_host}"
    );
    let pid = daemon.pid().unwrap();
    assert!(
        ready.contains(&format!("MAINPID={pid}")),
        "{ready} names pid {pid}"
    );
    assert_eq!(daemon.stop().unwrap(), 0, "a clean stop on SIGTERM");
    let stopping = receive(&socket, Duration::from_secs(1));
    assert!(stopping.starts_with("STOPPING=1"), "{stopping}");
}
