//! End-to-end test of the provider's dashboard in a real browser: a requestor
//! daemon and a provider daemon with the real `golem-provider run --dashboard`
//! (set through provider.toml), the real `golem-requestor` running the demo
//! WASM job, and headless Chromium (tier `browser_`) reading the page. It
//! asserts the page shows the agreement while the job runs, the paid earning
//! afterwards, updates without reloading, fits a phone's width, and that the
//! API answers 401 without a session or with a wrong key; logged out, the page
//! refuses a wrong app-key and opens with the right one. Screenshots go to
//! `<target>/tmp/dashboard/` (printed). Without a browser, a second test drives
//! the buttons' API against the agent and compares `status` with the page.
#![allow(clippy::unwrap_used)] // test helpers panic on setup failure by design

use std::process::Stdio;
use std::time::{Duration, Instant};

use golem_model::payment::DocumentStatus;
use golem_tests::bench::{row, rss_kib};
use golem_tests::browser::{self, Browser};
use golem_tests::provider::Preset;
use golem_tests::requestor::{demo_job, Network};
use serde_json::{json, Value};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The one-time link the agent logged at start.
fn login_url(network: &Network) -> String {
    let line = network.providers[0]
        .wait_for_log("dashboard ready", Duration::from_secs(10))
        .unwrap();
    let line: Value = serde_json::from_str(&line).unwrap();
    line["login_url"].as_str().unwrap().to_string()
}

/// `golem-requestor script JOB --json --parallelism 1 --output-dir OUT`: the
/// job one task at a time, so its agreement lives a while.
fn one_task_at_a_time(
    network: &mut Network,
    job: &std::path::Path,
    output_dir: &std::path::Path,
) -> std::process::Command {
    network.requestor(&[
        "script",
        job.to_str().unwrap(),
        "--json",
        "--parallelism",
        "1",
        "--output-dir",
        output_dir.to_str().unwrap(),
    ])
}

fn artifacts() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dashboard")
}

#[tokio::test]
#[ignore = "tier browser: needs chromium and chromium-driver (Debian); scripts/test.sh runs it when they are installed (GOLEM_TEST_BROWSER=1)"]
async fn browser_dashboard_shows_the_running_job_and_its_paid_invoice_live() {
    browser::enabled("browser_dashboard_shows_the_running_job_and_its_paid_invoice_live").unwrap();
    let port = free_port();
    let config = format!("debit-note-interval-sec = 1\ndashboard = \"127.0.0.1:{port}\"\n");
    let preset = Preset::new("dash-wasm", "wasmtime", "0.01", "0.1", "0.001");
    let mut network = Network::start(1, "e2e-dashboard", Some(preset), &config).unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let link = login_url(&network);
    assert!(link.starts_with(&format!("{base}/login?token=")), "{link}");

    // Without a session, with a forged one, or with a wrong key: 401.
    let http = reqwest::Client::new();
    for path in [
        "/api/dashboard",
        "/api/agreements",
        "/api/earnings",
        "/api/events",
    ] {
        let response = http.get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(response.status(), 401, "{path} without a session");
        let forged = http
            .get(format!("{base}{path}"))
            .header("Cookie", "golem_dashboard_session=0123")
            .send()
            .await
            .unwrap();
        assert_eq!(forged.status(), 401, "{path} with a forged session");
    }
    let wrong = http
        .post(format!("{base}/api/session"))
        .json(&json!({"appKey": "not-the-app-key"}))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401, "a wrong app-key");

    let browser = Browser::start(1280, 900).await.unwrap();
    browser.goto(&link).await.unwrap();
    browser
        .wait_for(
            "first render",
            Duration::from_secs(10),
            "return document.body.dataset.rendered === '1' && location.pathname === '/'",
        )
        .await
        .unwrap();
    // A marker that a reload would wipe.
    browser
        .execute(
            "window.golemNoReload = 'still here'; return true;",
            json!([]),
        )
        .await
        .unwrap();
    let online = browser
        .execute(
            "return document.getElementById('online').textContent",
            json!([]),
        )
        .await
        .unwrap();
    assert_eq!(online, "online", "the daemon is reachable");
    let published = browser
        .execute(
            "return document.querySelector('#offers-table tbody').textContent",
            json!([]),
        )
        .await
        .unwrap();
    assert!(
        published.as_str().unwrap().contains("dash-wasm"),
        "{published}"
    );

    // The demo job with more tasks, one at a time, so the agreement lives a while.
    let job_dir = tempfile::tempdir().unwrap();
    let job = demo_job(job_dir.path(), 60).unwrap();
    let mut requestor = one_task_at_a_time(&mut network, &job, &job_dir.path().join("out"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let agreement_on_page = browser
        .wait_for(
            "the running agreement on the page",
            Duration::from_secs(60),
            "const live = document.querySelector('.agreement.live'); \
             return live ? live.dataset.agreementId : null;",
        )
        .await
        .unwrap();
    let agreement_id = agreement_on_page.as_str().unwrap().to_string();
    let still_running = requestor.try_wait().unwrap().is_none();
    assert!(
        still_running,
        "the page showed the agreement only after the job ended"
    );
    browser
        .screenshot(&artifacts().join("dashboard-running.png"))
        .await
        .unwrap();

    let started = Instant::now();
    let output = loop {
        if let Some(_status) = requestor.try_wait().unwrap() {
            break requestor.wait_with_output().unwrap();
        }
        assert!(
            started.elapsed() < Duration::from_secs(180),
            "the job did not end"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    // The provider daemon's view of the invoice, once paid.
    let provider_daemon = network.sandbox.daemons()[1].client();
    let started = Instant::now();
    let invoice = loop {
        let invoices = provider_daemon.invoices().await.unwrap();
        let paid = invoices
            .into_iter()
            .find(|i| i.agreement_id == agreement_id && i.status == DocumentStatus::Settled);
        if let Some(invoice) = paid {
            break invoice;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the invoice was not paid"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // The page shows it by itself: no reload, events keep coming.
    let paid_text = browser
        .wait_for(
            "the paid earning on the page",
            Duration::from_secs(20),
            "const paid = document.querySelector('#earn-paid span'); \
             return paid && !paid.textContent.startsWith('Paid · 0 ') \
                 ? document.querySelector('#earn-paid b').textContent : null;",
        )
        .await
        .unwrap();
    let shown: f64 = paid_text
        .as_str()
        .unwrap()
        .trim_end_matches(" GLM")
        .parse()
        .unwrap();
    let amount: f64 = invoice.amount.to_string().parse().unwrap();
    assert!(amount > 0.0, "the job cost something: {invoice:?}");
    assert!(
        (shown - amount).abs() <= amount * 1e-3,
        "the page shows {shown} GLM paid, the invoice is {amount}"
    );
    let after = browser
        .execute(
            "return [window.golemNoReload, Number(document.body.dataset.events || 0), \
             performance.getEntriesByType('navigation').length, \
             document.querySelector('#invoices-table tbody').textContent]",
            json!([]),
        )
        .await
        .unwrap();
    assert_eq!(after[0], "still here", "the page was not reloaded");
    assert!(
        after[1].as_u64().unwrap() >= 2,
        "server-sent events updated it: {after}"
    );
    assert!(after[3].as_str().unwrap().contains("paid"), "{after}");
    browser
        .execute(
            "document.getElementById('earnings').scrollIntoView(); return true;",
            json!([]),
        )
        .await
        .unwrap();
    browser
        .screenshot(&artifacts().join("dashboard-paid.png"))
        .await
        .unwrap();

    // A phone's width: nothing wider than the screen.
    browser.set_window_size(390, 844).await.unwrap();
    let overflow = browser
        .wait_for(
            "the layout at a phone's width",
            Duration::from_secs(5),
            "return window.innerWidth <= 420 \
                 ? [document.documentElement.scrollWidth, window.innerWidth] : null;",
        )
        .await
        .unwrap();
    assert!(
        overflow[0].as_u64().unwrap() <= overflow[1].as_u64().unwrap(),
        "the page is wider than a phone: {overflow}"
    );
    let phone = artifacts().join("dashboard-phone.png");
    browser.screenshot(&phone).await.unwrap();

    // Logged out, the page asks for the app-key: a wrong one is refused, the right one opens it.
    browser
        .execute(
            "return fetch('/api/session', {method: 'DELETE'}).then(r => r.status)",
            json!([]),
        )
        .await
        .unwrap();
    browser.goto(&base).await.unwrap();
    browser
        .wait_for(
            "the login form",
            Duration::from_secs(10),
            "return !document.getElementById('login').hidden && document.getElementById('main').hidden",
        )
        .await
        .unwrap();
    let submit = "document.getElementById('app-key').value = arguments[0]; \
                  document.getElementById('login-form').requestSubmit(); return true;";
    browser
        .execute(submit, json!(["not-the-app-key"]))
        .await
        .unwrap();
    let refused = browser
        .wait_for(
            "the wrong key refused",
            Duration::from_secs(10),
            "return document.getElementById('login-error').textContent",
        )
        .await
        .unwrap();
    assert_eq!(refused, "Wrong app-key.");
    let app_key = network.providers[0].app_key.clone();
    browser.execute(submit, json!([app_key])).await.unwrap();
    browser
        .wait_for(
            "the page after logging in with the app-key",
            Duration::from_secs(10),
            "return !document.getElementById('main').hidden && \
                    document.getElementById('online').textContent === 'online'",
        )
        .await
        .unwrap();
    println!("screenshots: {}", artifacts().display());
}

/// The dashboard session of `network`'s agent, logged in with its app-key.
async fn session_cookie(http: &reqwest::Client, base: &str, app_key: &str) -> String {
    let login = http
        .post(format!("{base}/api/session"))
        .json(&json!({ "appKey": app_key }))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 204);
    login.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string()
}

/// The pause and preset buttons' operations withdraw the agent's offer from
/// its daemon and publish it again (the preset's by the `active` flag in
/// `presets.toml`, as `golem-provider preset deactivate` does); after a paid
/// job, `golem-provider status` and the dashboard's earnings say the same (a
/// settled invoice is accepted and paid).
#[tokio::test]
async fn dashboard_buttons_withdraw_and_publish_offers_and_status_agrees_on_earnings() {
    let port = free_port();
    let config = format!("dashboard = \"127.0.0.1:{port}\"\n");
    // Only presets.toml's presets can be (de)activated.
    let preset = Preset::new("dash", "wasmtime", "0.01", "0.1", "0.001");
    let mut network = Network::start(1, "e2e-dashboard-buttons", Some(preset), &config).unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let cookie = session_cookie(&http, &base, &network.providers[0].app_key).await;
    let provider_daemon = network.sandbox.daemons()[1].client();
    let post = |path: &str, body: Value| {
        http.post(format!("{base}{path}"))
            .header("Cookie", &cookie)
            .json(&body)
            .send()
    };
    let offers_become = |count: usize| {
        let provider_daemon = provider_daemon.clone();
        async move {
            let what = format!("{count} offers at the provider daemon");
            golem_tests::eventually(Duration::from_secs(15), &what, || {
                let provider_daemon = provider_daemon.clone();
                async move {
                    let offers = provider_daemon.offers().await.ok()?;
                    (offers.len() == count).then_some(())
                }
            })
            .await
        }
    };
    offers_become(1).await.unwrap();
    let refused = post("/api/presets/nope/active", json!({"active": false}))
        .await
        .unwrap();
    assert_eq!(refused.status(), 404, "an unknown preset is refused");
    for (path, off, on) in [
        (
            "/api/offers/pause",
            json!({"paused": true}),
            json!({"paused": false}),
        ),
        (
            "/api/presets/dash/active",
            json!({"active": false}),
            json!({"active": true}),
        ),
    ] {
        assert_eq!(post(path, off).await.unwrap().status(), 200, "{path}");
        offers_become(0).await.unwrap();
        if path == "/api/offers/pause" {
            // A presets.toml change while paused subscribes nothing.
            let updated = network.providers[0]
                .cli(&["preset", "update", "--name", "dash", "--cpu-sec", "0.2"])
                .unwrap();
            assert!(updated.status.success(), "{updated:?}");
            network.providers[0]
                .wait_for_log("not re-subscribing them", Duration::from_secs(10))
                .unwrap();
            assert_eq!(
                provider_daemon.offers().await.unwrap().len(),
                0,
                "still paused"
            );
        }
        let offers: Value = http
            .get(format!("{base}/api/offers"))
            .header("Cookie", &cookie)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let published = offers["offers"][0]["published"].as_bool().unwrap_or(false);
        assert!(!published, "{offers}");
        assert_eq!(post(path, on).await.unwrap().status(), 200, "{path}");
        offers_become(1).await.unwrap();
    }
    network.providers[0]
        .wait_for_log("offers paused", Duration::from_secs(1))
        .unwrap();

    // A paid job: status and the page's earnings agree.
    let hello = golem_tests::requestor::repo_root().join("exe-unit-wasm/tests/modules/hello.wat");
    let output = network
        .requestor(&[
            "run",
            "--package",
            hello.to_str().unwrap(),
            "--",
            "hello",
            "paid",
        ])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let agent = &network.providers[0];
    let status = golem_tests::eventually(
        Duration::from_secs(30),
        "a settled invoice in status",
        || async {
            let status = agent.status().ok()?;
            (status["earnings"]["counts"]["paid"] == 1).then_some(status)
        },
    )
    .await
    .unwrap();
    let earnings = &status["earnings"];
    assert_ne!(earnings["paid"], "0", "{status}");
    assert_eq!(
        earnings["accepted"], earnings["paid"],
        "a paid invoice was accepted: {status}"
    );
    assert_eq!(earnings["invoiced"], earnings["paid"], "{status}");
    let page: Value = http
        .get(format!("{base}/api/earnings"))
        .header("Cookie", &cookie)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        page["totals"], *earnings,
        "the page and status share one definition"
    );
}

/// Benchmark (run by `scripts/bench/dashboard.sh` on release builds): page
/// load to first complete render in headless Chromium on loopback, the API's
/// whole document, and the agent's RSS without the dashboard, with it idle,
/// and with the page open and updating. Prints a table; asserts nothing about time.
#[tokio::test]
#[ignore = "benchmark: run with scripts/bench/dashboard.sh"]
async fn bench_dashboard() {
    browser::enabled("bench_dashboard").unwrap();
    // The agent without a dashboard, for comparison.
    let plain = Network::start(1, "e2e-dashboard-bench-off", None, "").unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_off = rss_kib(plain.providers[0].pid().unwrap());
    drop(plain);

    let port = free_port();
    let config = format!("debit-note-interval-sec = 1\ndashboard = \"127.0.0.1:{port}\"\n");
    let mut network = Network::start(1, "e2e-dashboard-bench", None, &config).unwrap();
    let pid = network.providers[0].pid().unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let link = login_url(&network);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_idle = rss_kib(pid);

    // Some history on the page: a few paid jobs.
    let job_dir = tempfile::tempdir().unwrap();
    let job = demo_job(job_dir.path(), 0).unwrap();
    for round in 0..3 {
        let output = network
            .requestor(&[
                "script",
                job.to_str().unwrap(),
                "--json",
                "--output-dir",
                job_dir.path().join(format!("out{round}")).to_str().unwrap(),
            ])
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    let browser = Browser::start(1280, 900).await.unwrap();
    browser.goto(&link).await.unwrap();
    let rendered = "const mark = performance.getEntriesByName('dashboard-rendered')[0]; \
                    return mark ? mark.startTime : null;";
    browser
        .wait_for("first render", Duration::from_secs(10), rendered)
        .await
        .unwrap();
    let mut render_ms = Vec::new();
    for _ in 0..20 {
        browser.goto(&base).await.unwrap();
        let at = browser
            .wait_for("render", Duration::from_secs(10), rendered)
            .await
            .unwrap();
        render_ms.push(at.as_f64().unwrap());
    }
    // The page open and updating (a job running): RSS sampled for 10 s.
    let more_job = demo_job(&job_dir.path().join("more"), 30).unwrap();
    let mut requestor =
        one_task_at_a_time(&mut network, &more_job, &job_dir.path().join("out-more"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
    let mut rss_open = Vec::new();
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        rss_open.push(rss_kib(pid) as f64 / 1024.0);
    }
    let events = browser
        .execute(
            "return Number(document.body.dataset.events || 0)",
            json!([]),
        )
        .await
        .unwrap();
    let _ = requestor.wait();

    // The API's whole document, with a session (the browser's cookie is HttpOnly: log in again).
    let http = reqwest::Client::new();
    let app_key = network.providers[0].app_key.clone();
    let login = http
        .post(format!("{base}/api/session"))
        .json(&json!({"appKey": app_key}))
        .send()
        .await
        .unwrap();
    let cookie = login.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let mut api_ms = Vec::new();
    for _ in 0..50 {
        let started = Instant::now();
        let response = http
            .get(format!("{base}/api/dashboard"))
            .header("Cookie", &cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        response.bytes().await.unwrap();
        api_ms.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    println!("\n| Measure | p50 | p90 | max | goal |\n|---|---|---|---|---|");
    row(
        "page load → first complete render (navigation start → all sections drawn), headless Chromium, loopback",
        "ms",
        render_ms,
        "≤ 300 ms",
    );
    row(
        "GET /api/dashboard (whole document, daemon asked)",
        "ms",
        api_ms,
        "",
    );
    row(
        &format!("agent RSS, page open and updating ({events} events)"),
        "MiB",
        rss_open,
        "≤ 25 MiB",
    );
    println!(
        "| agent RSS idle: without dashboard / with dashboard, no page open | {:.1} MiB | {:.1} MiB | | |",
        rss_off as f64 / 1024.0,
        rss_idle as f64 / 1024.0
    );
}
