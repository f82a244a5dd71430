//! Security cases: the daemon's local secrets and its limits on input from
//! others. Local secrets: the data dir is private (0700 dirs, 0600 files, also
//! when it existed open), app-keys are stored as hashes, and the access log
//! never prints `?authToken=`. Input from others: a remote node cannot make the
//! market hold more than its offer quota, a subscription cannot ask for a far
//! expiry, a malformed id in a REST path is a 400, a huge timeout from another
//! node does not panic a handler, an agreement cannot create activities
//! beyond the provider's cap, and a requestor cannot pile up proposals on an
//! offer beyond the per-subscription cap.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use golem_client::market::Side;
use golem_client::GolemClient;
use golem_model::activity::{ActivityState, State};
use golem_model::activity_control::{CreateActivityRemote, ProviderEvent, ACTIVITY_PUBLIC_SERVICE};
use golem_model::market::{
    DemandOfferBase, InitialProposalReceived, MarketEvent, Proposal, ProposalState,
    MARKET_PUBLIC_SERVICE,
};
use golem_model::properties::Properties;
use golem_tests::abuse::report;
use golem_tests::http::JsonApi;
use golem_tests::negotiation::{negotiate_agreement, spawn_provider_negotiator};
use golem_tests::{eventually, DaemonProcess, Sandbox};
use serde_json::json;

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path)
        .unwrap()
        .permissions()
        .mode()
        & 0o777
}

/// Every path under `dir` (not following symlinks), `dir` excluded.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            if entry.file_type().unwrap().is_dir() {
                pending.push(entry.path());
            }
            found.push(entry.path());
        }
    }
    found
}

fn offer(subnet: &str) -> DemandOfferBase {
    DemandOfferBase {
        properties: json!({
            "golem.node.debug.subnet": subnet,
            "golem.runtime.name": "wasmtime",
            "golem.com.pricing.model": "linear",
            "golem.com.pricing.model.linear.coeffs": [0.1, 0.1, 0.0],
            "golem.com.usage.vector": ["golem.usage.cpu_sec", "golem.usage.duration_sec"],
        }),
        constraints: format!("(golem.node.debug.subnet={subnet})"),
    }
}

fn demand(subnet: &str, expiration_ms: i64) -> DemandOfferBase {
    DemandOfferBase {
        properties: json!({
            "golem.node.debug.subnet": subnet,
            "golem.srv.comp.expiration": expiration_ms,
        }),
        constraints: format!("(golem.node.debug.subnet={subnet})"),
    }
}

fn in_an_hour() -> i64 {
    chrono::Utc::now().timestamp_millis() + 3_600_000
}

#[tokio::test]
async fn a_data_dir_that_existed_open_is_made_private_with_every_file_in_it() {
    let mut sandbox = Sandbox::new();
    let data_dir = sandbox.path().join("open");
    std::fs::create_dir_all(&data_dir).unwrap();
    std::fs::set_permissions(&data_dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let leftover = data_dir.join("notes.txt");
    std::fs::write(&leftover, "written by hand").unwrap();
    std::fs::set_permissions(&leftover, std::fs::Permissions::from_mode(0o644)).unwrap();

    let daemon = sandbox.daemon("open").unwrap();
    daemon.cli(&["app-key", "create", "reader"]).unwrap();
    let mut open: Vec<String> = Vec::new();
    if mode(&data_dir) != 0o700 {
        open.push(format!("{} {:o}", data_dir.display(), mode(&data_dir)));
    }
    for path in walk(&data_dir) {
        let expected = if path.is_dir() { 0o700 } else { 0o600 };
        if mode(&path) != expected {
            open.push(format!("{} {:o}", path.display(), mode(&path)));
        }
    }
    report(
        "read another user's data dir (0755 dir, 0644 file)",
        "dir and subdirs 0700, every file 0600",
        &if open.is_empty() {
            "all private".to_string()
        } else {
            format!("open: {}", open.join(", "))
        },
    );
    assert!(open.is_empty(), "not private: {open:?}");
    assert!(data_dir.join("identity.key").exists() && data_dir.join("db").is_dir());
}

#[tokio::test]
async fn the_store_keeps_no_app_key_in_plain_text() {
    let mut sandbox = Sandbox::new();
    let daemon = sandbox.daemon("keys").unwrap();
    let created =
        golem_tests::stdout_of(daemon.cli(&["app-key", "create", "stolen"]).unwrap()).unwrap();
    let autoconfigured = daemon.app_key.clone();
    assert_eq!(daemon.stop().unwrap(), 0);
    let mut found = Vec::new();
    for path in walk(&daemon.data_dir.join("db")) {
        if path.is_dir() {
            continue;
        }
        let bytes = std::fs::read(&path).unwrap();
        for key in [&created, &autoconfigured] {
            if bytes
                .windows(key.len())
                .any(|window| window == key.as_bytes())
            {
                found.push(format!("{key} in {}", path.display()));
            }
        }
    }
    report(
        "read app-keys from the sled files",
        "only SHA3-256 hashes stored",
        &if found.is_empty() {
            "no key found in the db files".to_string()
        } else {
            found.join(", ")
        },
    );
    assert!(found.is_empty(), "{found:?}");
    // The key still works after a restart (it is checked against the hash).
    daemon.restart().unwrap();
    let client = GolemClient::new(&daemon.api_url, &created);
    assert_eq!(client.me().await.unwrap().name, "stolen");
}

#[tokio::test]
async fn the_access_log_never_prints_the_auth_token() {
    let sandbox = Sandbox::new();
    let mut daemon = DaemonProcess::start_with_env(
        "logged",
        &sandbox.path().join("logged"),
        &[],
        &[("RUST_LOG", "info,golem_daemon::api::access=debug")],
    )
    .unwrap();
    let url = format!(
        "{}/me?authToken={}&probe=token-in-query",
        daemon.api_url, daemon.app_key
    );
    let response = reqwest::get(&url).await.unwrap();
    assert_eq!(
        response.status(),
        200,
        "the query token still authenticates"
    );
    let line = eventually(Duration::from_secs(10), "the access log line", || {
        let log = daemon.log();
        async move {
            log.lines()
                .find(|line| line.contains("probe=token-in-query"))
                .map(str::to_string)
        }
    })
    .await
    .unwrap();
    let leaked = daemon.log().contains(&daemon.app_key);
    report(
        "read the app-key from a debug access log (?authToken=)",
        "authToken=<redacted> in the log",
        &line,
    );
    assert!(!leaked, "the app-key is in the log: {line}");
    assert!(line.contains("authToken=<redacted>"), "{line}");
    daemon.stop().unwrap();
}

#[tokio::test]
async fn a_node_flooding_offers_is_kept_to_its_quota() {
    const SUBNET: &str = "sec-offer-flood";
    const FLOOD: usize = 20;
    const QUOTA: usize = 5;
    let mut sandbox = Sandbox::new();
    let flooder = sandbox.daemon("flooder").unwrap();
    let bootstrap = flooder.p2p_address().unwrap();
    let flooder = flooder.client();
    for _ in 0..FLOOD {
        flooder.subscribe_offer(&offer(SUBNET)).await.unwrap();
    }
    let quota = QUOTA.to_string();
    let receiver = DaemonProcess::start_with_env(
        "receiver",
        &sandbox.path().join("receiver"),
        &[
            "--bootstrap",
            &bootstrap,
            "--market-max-offers-per-node",
            &quota,
        ],
        &[("RUST_LOG", "info,golem_daemon::market=debug")],
    )
    .unwrap();
    let client = receiver.client();
    // Every offer the receiver holds matches this demand once.
    let demand_id = client
        .subscribe_demand(&demand(SUBNET, in_an_hour()))
        .await
        .unwrap();
    // The receiver logs the drop in the same step in which it matched what it kept.
    let dropped = eventually(Duration::from_secs(30), "the quota drop", || {
        let log = receiver.log();
        async move {
            log.contains("offers over the market's quota dropped")
                .then_some(())
        }
    })
    .await;
    let held = client
        .market_events(Side::Demands, &demand_id, 0.0, 100)
        .await
        .unwrap()
        .into_iter()
        .filter(|event| matches!(event, MarketEvent::ProposalEvent { .. }))
        .count();
    report(
        "flood another node's market with offers",
        &format!("at most {QUOTA} offers of one node kept (market.max-offers-per-node)"),
        &format!(
            "{held} of {FLOOD} offers kept{}",
            if dropped.is_ok() { ", drop logged" } else { "" }
        ),
    );
    dropped.unwrap();
    assert_eq!(held, QUOTA);
}

#[tokio::test]
async fn a_subscription_asking_for_a_far_expiry_is_refused() {
    let mut sandbox = Sandbox::new();
    let daemon = sandbox.daemon("far").unwrap();
    let api = JsonApi::new(format!("{}/market-api/v1", daemon.api_url), &daemon.app_key);
    let year_2100 = 4_102_444_800_000i64;
    let body = serde_json::to_value(demand("sec-far", year_2100)).unwrap();
    let (status, answer) = api
        .call(reqwest::Method::POST, "/demands", Some(body.clone()))
        .await;
    report(
        "subscribe a demand expiring in 2100",
        "400 naming market.max-expiration-secs",
        &format!("{status} {answer}"),
    );
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["message"]
            .as_str()
            .unwrap()
            .contains("max-expiration-secs"),
        "{answer}"
    );
    let (status, answer) = api.call(reqwest::Method::POST, "/offers", Some(body)).await;
    assert_eq!(status, 400, "offers too: {answer}");
    let (status, answer) = api
        .call(
            reqwest::Method::POST,
            "/demands",
            Some(serde_json::to_value(demand("sec-far", in_an_hour())).unwrap()),
        )
        .await;
    assert_eq!(status, 201, "an hour is fine: {answer}");
}

#[tokio::test]
async fn a_malformed_id_in_a_rest_path_is_a_bad_request() {
    let mut sandbox = Sandbox::new();
    let daemon = sandbox.daemon("ids").unwrap();
    let api = JsonApi::new(daemon.api_url.clone(), &daemon.app_key);
    let mut seen = Vec::new();
    for (method, path) in [
        (reqwest::Method::GET, "/market-api/v1/agreements/not-hex-zz"),
        (
            reqwest::Method::GET,
            "/market-api/v1/demands/x%2F..%2Fy/events",
        ),
        (
            reqwest::Method::GET,
            "/market-api/v1/offers/0123/proposals/..%2F..%2Fdb",
        ),
        (reqwest::Method::GET, "/activity-api/v1/activity/%3Fq/state"),
        (reqwest::Method::DELETE, "/activity-api/v1/activity/a.b"),
    ] {
        let (status, answer) = api.call(method.clone(), path, None).await;
        seen.push((path, status, answer));
    }
    report(
        "malformed ids in REST paths (path traversal, non-hex)",
        "400 before any lookup",
        &seen
            .iter()
            .map(|(path, status, _)| format!("{path} {status}"))
            .collect::<Vec<_>>()
            .join("; "),
    );
    for (path, status, answer) in &seen {
        assert_eq!(*status, 400, "{path}: {answer}");
        assert!(
            answer["message"].as_str().unwrap().contains("malformed"),
            "{path}: {answer}"
        );
    }
    // A well-formed unknown id is still a 404.
    let (status, _) = api
        .call(reqwest::Method::GET, "/market-api/v1/agreements/0123", None)
        .await;
    assert_eq!(status, 404);
}

/// A provider daemon started with `provider_args`, a requestor bootstrapped
/// from it, and an Approved agreement between them; the provider's exe units
/// are played by marking each new activity Initialized.
async fn approved_agreement(
    sandbox: &mut Sandbox,
    subnet: &str,
    provider_args: &[&str],
) -> (String, String) {
    let provider = sandbox.daemon_with("p", provider_args).unwrap();
    let bootstrap = provider.p2p_address().unwrap();
    let provider_client = provider.client();
    let offer_id = provider_client
        .subscribe_offer(&offer(subnet))
        .await
        .unwrap();
    spawn_provider_negotiator(provider_client.clone(), offer_id, offer(subnet));
    tokio::spawn(async move {
        let mut after: Option<String> = None;
        loop {
            let Ok(events) = provider_client
                .provider_activity_events(after.as_deref(), 2.0, 100)
                .await
            else {
                return;
            };
            for event in events {
                after = Some(event.event_date().to_rfc3339());
                if let ProviderEvent::CreateActivity { activity_id, .. } = event {
                    let _ = provider_client
                        .set_activity_state(&activity_id, &ActivityState::from(State::Initialized))
                        .await;
                }
            }
        }
    });
    let provider_node = sandbox.daemons()[0].node_id().unwrap();
    sandbox
        .daemon_with("r", &["--bootstrap", &bootstrap])
        .unwrap();
    let requestor = sandbox.daemons()[1].client();
    let agreement_id = negotiate_agreement(&requestor, &demand(subnet, in_an_hour())).await;
    (agreement_id, provider_node)
}

#[tokio::test]
async fn a_huge_timeout_from_another_node_is_clamped_not_a_panic() {
    let mut sandbox = Sandbox::new();
    let (agreement_id, provider_node) =
        approved_agreement(&mut sandbox, "sec-huge-timeout", &[]).await;
    // The requestor's bus lets a local component call the provider's public
    // activity endpoint directly, with a value no REST route would pass on.
    let bus = sandbox.daemons()[1].bus().await.unwrap();
    let message = CreateActivityRemote {
        agreement_id: agreement_id.clone(),
        timeout_sec: 1e300,
    };
    let answer = tokio::time::timeout(
        Duration::from_secs(30),
        bus.call(
            &format!("/net/{provider_node}{ACTIVITY_PUBLIC_SERVICE}"),
            &message,
        ),
    )
    .await
    .expect("the provider answers within the net call timeout");
    report(
        "CreateActivityRemote with timeoutSec=1e300 from another node",
        "clamped wait, activity created, no panic",
        &format!("{answer:?}"),
    );
    let activity_id = answer.unwrap();
    assert_eq!(activity_id.len(), 32, "{activity_id}");
    // The provider's daemon is still serving.
    let provider = sandbox.daemons()[0].client();
    assert!(provider.me().await.is_ok());
    // And REST query values of that size are clamped too.
    let requestor = &sandbox.daemons()[1];
    let api = JsonApi::new(requestor.api_url.clone(), &requestor.app_key);
    let (status, answer) = api
        .call(
            reqwest::Method::POST,
            "/activity-api/v1/activity?timeout=1e300",
            Some(json!(agreement_id)),
        )
        .await;
    assert_eq!(status, 201, "{answer}");
}

#[tokio::test]
async fn activities_beyond_the_per_agreement_cap_are_refused() {
    let mut sandbox = Sandbox::new();
    let (agreement_id, _) = approved_agreement(
        &mut sandbox,
        "sec-activity-cap",
        &["--activity-max-per-agreement", "2"],
    )
    .await;
    let requestor = sandbox.daemons()[1].client();
    for _ in 0..2 {
        requestor
            .create_activity(&agreement_id, 10.0)
            .await
            .unwrap();
    }
    let refused = requestor.create_activity(&agreement_id, 10.0).await;
    let seen = match &refused {
        Ok(id) => format!("created {id}"),
        Err(error) => format!("{:?} {error}", error.status()),
    };
    report(
        "create more activities on one agreement than the provider allows",
        "409 naming activity.max-per-agreement",
        &seen,
    );
    let error = refused.unwrap_err();
    assert_eq!(error.status(), Some(409), "{error}");
    assert!(error.to_string().contains("max-per-agreement"), "{error}");
}

#[tokio::test]
async fn a_requestor_flooding_proposals_on_an_offer_is_refused_past_the_cap() {
    const SUBNET: &str = "sec-proposal-flood";
    let mut sandbox = Sandbox::new();
    let provider = sandbox
        .daemon_with("p", &["--market-max-proposals-per-subscription", "4"])
        .unwrap();
    let bootstrap = provider.p2p_address().unwrap();
    let offer_id = provider
        .client()
        .subscribe_offer(&offer(SUBNET))
        .await
        .unwrap();
    let provider_node = provider.node_id().unwrap();
    let flooder = sandbox
        .daemon_with("r", &["--bootstrap", &bootstrap])
        .unwrap();
    let flooder_node = flooder.node_id().unwrap().parse().unwrap();
    let bus = flooder.bus().await.unwrap();
    // Each first counter on an offer records two proposals (the offer's
    // Initial and the counter) and one event on the provider's subscription.
    let mut answers = Vec::new();
    for round in 0..3u128 {
        let id = |part: u128| format!("{:032x}", round * 3 + part + 1);
        let message = InitialProposalReceived {
            offer_id: offer_id.clone(),
            demand_id: id(0),
            initial_proposal_id: id(1),
            initial_timestamp: chrono::Utc::now(),
            proposal: Proposal {
                properties: Properties::from_json(json!({"golem.node.debug.subnet": SUBNET}))
                    .unwrap(),
                constraints: format!("(golem.node.debug.subnet={SUBNET})"),
                proposal_id: id(2),
                issuer_id: flooder_node,
                state: ProposalState::Draft,
                timestamp: chrono::Utc::now(),
                prev_proposal_id: None,
            },
        };
        answers.push(
            bus.call(
                &format!("/net/{provider_node}{MARKET_PUBLIC_SERVICE}"),
                &message,
            )
            .await,
        );
    }
    report(
        "flood a provider's offer with proposals from another node",
        "Conflict past market.max-proposals-per-subscription",
        &format!("{answers:?}"),
    );
    assert!(answers[0].is_ok() && answers[1].is_ok(), "{answers:?}");
    let refused = answers[2].as_ref().unwrap_err();
    assert_eq!(
        refused.code,
        golem_model::ErrorCode::Conflict,
        "{refused:?}"
    );
    assert!(
        refused.message.contains("max-proposals-per-subscription"),
        "{refused:?}"
    );
    let events = sandbox.daemons()[0]
        .client()
        .market_events(Side::Offers, &offer_id, 0.0, 100)
        .await
        .unwrap();
    assert_eq!(events.len(), 2, "only the accepted ones were queued");
}
