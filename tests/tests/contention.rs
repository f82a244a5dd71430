//! End-to-end tests of contention: more requestors than providers can hold at
//! once. Real requestor and provider daemons over libp2p on loopback, the real
//! `golem-provider` with the WASM exe unit, the real `golem-requestor script`.
//! A provider that refused for capacity is asked again once it frees, every
//! task of every job is done, and a requestor that gives up names the busy
//! providers apart from the offers that do not match. `bench_contention`
//! (run by `scripts/bench/contention.sh`) measures 4 requestors × 150 tasks
//! over 3 providers against the same 600 tasks from one requestor.
#![allow(clippy::unwrap_used)] // test helpers panic on setup failure by design

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use golem_model::market::Reason;
use golem_tests::demands::{paid_demand, serve_hello_wasm};
use golem_tests::negotiation::negotiate_agreement;
use golem_tests::requestor::{demo_job, Network};
use serde_json::Value;

/// What one `golem-requestor script --json` run left behind.
struct JobRun {
    status: ExitStatus,
    events: Vec<Value>,
    stderr: String,
    wall: Duration,
}

impl JobRun {
    fn summary(&self) -> &Value {
        self.events
            .iter()
            .find(|event| event["event"] == "summary")
            .unwrap_or_else(|| panic!("no summary line; stderr:\n{}", self.stderr))
    }

    fn tasks_done(&self) -> usize {
        self.summary()["report"]["outcomes"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|outcome| outcome["ok"] == true)
            .count()
    }

    /// Whether it was refused for capacity (a non-empty `providers_busy`) and
    /// signed an agreement after that.
    fn signed_after_a_busy_refusal(&self) -> bool {
        let busy_at = self.events.iter().position(|event| {
            event["event"] == "providers_busy"
                && event["provider_names"]
                    .as_array()
                    .is_some_and(|names| !names.is_empty())
        });
        busy_at.is_some_and(|busy_at| {
            self.events[busy_at..]
                .iter()
                .any(|event| event["event"] == "agreement_signed")
        })
    }

    fn count(&self, kind: &str) -> usize {
        self.events
            .iter()
            .filter(|event| event["event"] == kind)
            .count()
    }
}

/// Start every command at once and wait for all (each bounded by `timeout`).
fn run_together(commands: Vec<Command>, timeout: Duration) -> Vec<JobRun> {
    let started = Instant::now();
    let children: Vec<_> = commands
        .into_iter()
        .map(|mut command| {
            command
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let waiters: Vec<_> = children
        .into_iter()
        .map(|mut child| {
            std::thread::spawn(move || {
                let mut stdout = child.stdout.take().unwrap();
                let mut stderr = child.stderr.take().unwrap();
                let err_reader = std::thread::spawn(move || {
                    let mut text = String::new();
                    let _ = stderr.read_to_string(&mut text);
                    text
                });
                let mut out = String::new();
                let _ = stdout.read_to_string(&mut out);
                let status = child.wait().unwrap();
                let wall = started.elapsed();
                let stderr = err_reader.join().unwrap();
                JobRun {
                    status,
                    events: out
                        .lines()
                        .filter_map(|line| serde_json::from_str(line).ok())
                        .collect(),
                    stderr,
                    wall,
                }
            })
        })
        .collect();
    let deadline = started + timeout;
    waiters
        .into_iter()
        .map(|waiter| {
            while !waiter.is_finished() {
                assert!(
                    Instant::now() < deadline,
                    "a job did not end within {timeout:?}"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
            waiter.join().unwrap()
        })
        .collect()
}

/// `script JOB --json --parallelism N` on requestor daemon `daemon`.
fn script(network: &mut Network, daemon: usize, job: &Path, parallelism: usize) -> Command {
    network.requestor_on(
        daemon,
        &[
            "script",
            job.to_str().unwrap(),
            "--json",
            "--parallelism",
            &parallelism.to_string(),
        ],
    )
}

/// A demo job of `tasks` tasks (at least 6) in `dir`, with `edit` applied to its text.
fn job_of(dir: &Path, tasks: usize, edit: impl Fn(String) -> String) -> PathBuf {
    let job = demo_job(dir, tasks.saturating_sub(6)).unwrap();
    let text = std::fs::read_to_string(&job).unwrap();
    std::fs::write(&job, edit(text)).unwrap();
    job
}

#[tokio::test]
async fn requestors_outnumbering_providers_all_finish_and_busy_providers_are_asked_again() {
    // Two providers of one thread each: one agreement at a time on each, for
    // three requestors that want two each.
    let mut network = Network::start_each(2, "e2e-contention", &["wasmtime"], |_, options| {
        options.config("threads = 1\n")
    })
    .unwrap();
    let mut commands = Vec::new();
    for index in 0..3 {
        let daemon = if index == 0 {
            0
        } else {
            network
                .add_requestor(&format!("requestor-{index}"))
                .unwrap()
        };
        let dir = network.sandbox.path().join(format!("job-{index}"));
        let job = job_of(&dir, 30, |text| text);
        commands.push(script(&mut network, daemon, &job, 2));
    }
    let runs = run_together(commands, Duration::from_secs(240));
    for (index, run) in runs.iter().enumerate() {
        assert!(run.status.success(), "requestor {index}: {}", run.stderr);
        assert_eq!(run.tasks_done(), 30, "requestor {index}: {}", run.stderr);
        let outputs = network.sandbox.path().join(format!("job-{index}/out"));
        assert_eq!(
            std::fs::read_dir(&outputs).unwrap().count(),
            30,
            "{outputs:?}"
        );
    }
    assert!(
        runs.iter().any(JobRun::signed_after_a_busy_refusal),
        "no requestor was refused for capacity and served later: {:?}",
        runs.iter()
            .map(|run| run.count("providers_busy"))
            .collect::<Vec<_>>()
    );
    let refusals: usize = network
        .providers
        .iter()
        .map(|agent| agent.log().matches("no free resources").count())
        .sum();
    assert!(refusals > 0, "the providers never refused for capacity");
}

#[tokio::test]
async fn a_requestor_waits_for_busy_providers_names_them_when_it_gives_up_and_is_served_once_they_free(
) {
    // provider-1 has 2 threads and matches; provider-2 has 1 and does not
    // (the job asks for 2 threads).
    let mut network =
        Network::start_each(2, "e2e-contention-busy", &["wasmtime"], |index, options| {
            if index == 2 {
                options.config("threads = 1\n")
            } else {
                options
            }
        })
        .unwrap();
    let subnet = network.subnet.clone();
    // Another requestor holds provider-1's 2 threads with an agreement.
    let holder = network.add_requestor("holder").unwrap();
    let holder_client = network.sandbox.daemons()[holder].client();
    let (_server, package) = serve_hello_wasm(&network.sandbox.path().join("hello")).await;
    let mut demand = paid_demand(&holder_client, &subnet, "wasmtime", &package).await;
    demand.constraints = format!("(&{}(golem.inf.cpu.threads>=2))", demand.constraints);
    let held = negotiate_agreement(&holder_client, &demand).await;

    let two_threads = |seconds: u64| {
        move |text: String| {
            text.replace("min_mem_gib = 0.1", "min_mem_gib = 0.1\nmin_threads = 2")
                .replace(
                    "offer_timeout_secs = 20",
                    &format!("offer_timeout_secs = {seconds}"),
                )
                .replace(
                    "busy_timeout_secs = 300",
                    &format!("busy_timeout_secs = {seconds}"),
                )
        }
    };
    // Gives up after 5 s: the error names the busy provider apart from the
    // offer that does not match.
    let dir = network.sandbox.path().join("gives-up");
    let job = job_of(&dir, 6, two_threads(5));
    let output = network
        .requestor(&["script", job.to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("waiting: 1 matching providers busy (provider-1)"),
        "{stderr}"
    );
    assert!(
        stderr.contains("1 matching provider(s) busy with other requestors: provider-1"),
        "{stderr}"
    );
    assert!(stderr.contains("no free resources"), "{stderr}");
    assert!(
        stderr.contains("1 do not: unmatched constraints: (golem.inf.cpu.threads>=2) fails on 1"),
        "{stderr}"
    );
    assert!(!stderr.contains("no offer matched"), "{stderr}");

    // Waits longer: refused first, served once the holder's agreement ends.
    let dir = network.sandbox.path().join("served");
    let job = job_of(&dir, 6, two_threads(60));
    let mut child = script(&mut network, 0, &job, 1)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let lines = golem_tests::lines_of(child.stdout.take().unwrap());
    let mut events: Vec<Value> = Vec::new();
    let busy_seen = |events: &[Value]| {
        events.iter().any(|event| {
            event["event"] == "providers_busy" && event["provider_names"][0] == "provider-1"
        })
    };
    while !busy_seen(&events) {
        let line = lines
            .recv_timeout(Duration::from_secs(30))
            .expect("the requestor reports the busy provider");
        events.extend(serde_json::from_str::<Value>(&line).ok());
    }
    // A fresh client: the holder's pooled connection has been idle since the
    // agreement was signed and the daemon may have closed it.
    let holder_client = network.sandbox.daemons()[holder].client();
    holder_client
        .terminate_agreement(&held, Some(&Reason::new("done holding")))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(90);
    while let Ok(line) = lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        events.extend(serde_json::from_str::<Value>(&line).ok());
    }
    let status = child.wait().unwrap();
    let run = JobRun {
        status,
        events,
        stderr: String::new(),
        wall: Duration::ZERO,
    };
    assert!(run.status.success(), "{:?}", run.events);
    assert!(run.signed_after_a_busy_refusal(), "{:?}", run.events);
    assert_eq!(run.tasks_done(), 6);
}

/// Benchmark (run by `scripts/bench/contention.sh`): 4 requestor daemons each
/// running a 150-task WASM job (`script`, parallelism 3) against 3 providers
/// started together, and the same 600 tasks from one requestor. Prints a
/// table; asserts only that every task was done.
#[tokio::test]
#[ignore = "benchmark: run with scripts/bench/contention.sh"]
async fn bench_contention() {
    let requestors = 4;
    let tasks = 150;
    let single = {
        let mut network =
            Network::start_each(3, "bench-contention-one", &["wasmtime"], |_, o| o).unwrap();
        let job = job_of(
            &network.sandbox.path().join("one"),
            requestors * tasks,
            |t| t,
        );
        let command = script(&mut network, 0, &job, 3);
        run_together(vec![command], Duration::from_secs(900)).remove(0)
    };
    assert!(single.status.success(), "{}", single.stderr);
    let mut network =
        Network::start_each(3, "bench-contention-many", &["wasmtime"], |_, o| o).unwrap();
    let mut commands = Vec::new();
    for index in 0..requestors {
        let daemon = if index == 0 {
            0
        } else {
            network
                .add_requestor(&format!("requestor-{index}"))
                .unwrap()
        };
        let job = job_of(
            &network.sandbox.path().join(format!("job-{index}")),
            tasks,
            |t| t,
        );
        commands.push(script(&mut network, daemon, &job, 3));
    }
    let many = run_together(commands, Duration::from_secs(900));
    let done: usize = many.iter().map(JobRun::tasks_done).sum();
    let total = many.iter().map(|run| run.wall).max().unwrap_or_default();
    let refused = many
        .iter()
        .filter(|run| run.count("providers_busy") > 0)
        .count();
    let failed: Vec<String> = many
        .iter()
        .filter(|run| !run.status.success())
        .map(|run| run.stderr.lines().last().unwrap_or("").to_string())
        .collect();
    println!("\n| Measure | Result | Goal |\n|---|---|---|");
    println!(
        "| 1 requestor, {} tasks (parallelism 3) over 3 providers | {} done in {:.2} s | – |",
        requestors * tasks,
        single.tasks_done(),
        single.wall.as_secs_f64()
    );
    println!(
        "| {requestors} requestors × {tasks} tasks (parallelism 3) over 3 providers, started together | {done} of {} done, all in {:.2} s (each: {}) | every task done |",
        requestors * tasks,
        total.as_secs_f64(),
        many.iter()
            .map(|run| format!("{:.1} s", run.wall.as_secs_f64()))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "| … total vs the single requestor | {:.2}× | ≤ 2× |",
        total.as_secs_f64() / single.wall.as_secs_f64()
    );
    println!(
        "| … requestors refused for capacity at least once, then served | {refused} of {requestors} | – |"
    );
    println!(
        "| … agreements signed (4 runs) | {} | – |",
        many.iter()
            .map(|run| run.count("agreement_signed"))
            .sum::<usize>()
    );
    assert!(failed.is_empty(), "jobs failed: {failed:?}");
    assert_eq!(done, requestors * tasks);
}
