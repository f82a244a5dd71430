//! End-to-end tests of market scans (`/market-api/v1/scan`) and of the
//! property-query routes, with real daemons over libp2p: a scan on the
//! requestor's node pages through the offers it learnt from the provider's
//! node, filtered by constraints, each once, long-polls for new ones, asks a
//! peer directly with `peerId`, belongs to its node, and ends by DELETE or
//! by idling past its timeout (404 on events, 410 on DELETE).
#![allow(clippy::unwrap_used)] // test helpers panic on setup failure by design

use std::collections::HashSet;
use std::time::{Duration, Instant};

use golem_client::GolemClient;
use golem_model::market::{Demand, DemandOfferBase, Offer};
use golem_tests::http::JsonApi;
use golem_tests::Sandbox;
use serde_json::{json, Value};

/// A raw REST caller: the scan routes are not in the typed client.
struct Rest {
    api: JsonApi,
}

impl Rest {
    fn new(base: &str, app_key: &str) -> Rest {
        Rest {
            api: JsonApi::new(format!("{base}/market-api/v1"), app_key),
        }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        self.api.call(method, path, body).await
    }

    async fn begin(&self, body: Value) -> String {
        let (status, id) = self.call(reqwest::Method::POST, "/scan", Some(body)).await;
        assert_eq!(status, 201, "POST /scan: {id}");
        id.as_str().unwrap().to_string()
    }

    async fn events(&self, id: &str, query: &str) -> (u16, Value) {
        self.call(
            reqwest::Method::GET,
            &format!("/scan/{id}/events?{query}"),
            None,
        )
        .await
    }

    async fn offers(&self, id: &str, query: &str) -> Vec<Offer> {
        let (status, body) = self.events(id, query).await;
        assert_eq!(status, 200, "scan events: {body}");
        serde_json::from_value(body).unwrap()
    }

    async fn end(&self, id: &str) -> (u16, Value) {
        self.call(reqwest::Method::DELETE, &format!("/scan/{id}"), None)
            .await
    }
}

fn rest(client: &GolemClient, app_key: &str) -> Rest {
    Rest::new(client.base_url(), app_key)
}

fn offer(runtime: &str, name: &str) -> DemandOfferBase {
    DemandOfferBase {
        properties: json!({
            "golem.node.debug.subnet": "public",
            "golem.node.id.name": name,
            "golem.runtime.name": runtime,
            "golem.inf.mem.gib": 4.0,
        }),
        constraints: "()".to_string(),
    }
}

fn names(offers: &[Offer]) -> Vec<String> {
    offers
        .iter()
        .map(|offer| {
            offer
                .properties
                .get("golem.node.id.name")
                .unwrap()
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect()
}

/// Collect from `scan` until `wanted` offers came (each must be new).
async fn collect_all(rest: &Rest, scan: &str, query: &str, wanted: usize) -> Vec<Offer> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut all: Vec<Offer> = Vec::new();
    while all.len() < wanted {
        assert!(
            Instant::now() < deadline,
            "only {:?} of {wanted} offers",
            names(&all)
        );
        for offer in rest.offers(scan, query).await {
            assert!(
                !all.iter().any(|seen| seen.offer_id == offer.offer_id),
                "offer {} delivered twice",
                offer.offer_id
            );
            all.push(offer);
        }
    }
    all
}

#[tokio::test]
async fn scans_page_filter_long_poll_and_end_like_subscriptions() {
    let mut sandbox = Sandbox::new();
    sandbox.provider_and_requestor().unwrap();
    let provider = sandbox.daemons()[0].client();
    let provider_rest = rest(&provider, &sandbox.daemons()[0].app_key);
    let provider_id = sandbox.daemons()[0].node_id().unwrap();
    let requestor = sandbox.daemons()[1].client();
    let requestor_rest = rest(&requestor, &sandbox.daemons()[1].app_key);

    for (runtime, name) in [("vm", "vm-1"), ("wasmtime", "wasm-1"), ("vm", "vm-2")] {
        provider
            .subscribe_offer(&offer(runtime, name))
            .await
            .unwrap();
    }

    // A filtered scan on R sees P's two vm offers, each once, and nothing else.
    let vm_scan = requestor_rest
        .begin(json!({"type": "offer", "constraints": "(&(golem.runtime.name=vm)\n\t(golem.inf.mem.gib>=2))"}))
        .await;
    let vm_offers = collect_all(&requestor_rest, &vm_scan, "timeout=1", 2).await;
    let mut vm_names = names(&vm_offers);
    vm_names.sort();
    assert_eq!(vm_names, ["vm-1", "vm-2"]);
    assert!(vm_offers
        .iter()
        .all(|offer| offer.provider_id.to_string() == provider_id));
    let started = Instant::now();
    assert!(requestor_rest
        .offers(&vm_scan, "timeout=0.3")
        .await
        .is_empty());
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "the empty poll did not wait"
    );

    // The JSON is the original's Offer: properties flat, camelCase ids.
    let (_, raw) = {
        let again = requestor_rest.begin(json!({"type": "offer"})).await;
        let raw = requestor_rest.events(&again, "timeout=1&maxEvents=1").await;
        requestor_rest.end(&again).await;
        raw
    };
    let first = &raw.as_array().unwrap()[0];
    for field in ["offerId", "providerId", "timestamp", "constraints"] {
        assert!(first.get(field).is_some(), "offer without {field}: {first}");
    }
    assert!(
        first["properties"].get("golem.runtime.name").is_some(),
        "{first}"
    );

    // A long-poll waiting on the scan wakes up with an offer that arrives later.
    let waiting = {
        let requestor_rest = rest(&requestor, &sandbox.daemons()[1].app_key);
        let vm_scan = vm_scan.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let offers = requestor_rest.offers(&vm_scan, "timeout=20").await;
            (offers, started.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    provider
        .subscribe_offer(&offer("wasmtime", "wasm-2"))
        .await
        .unwrap();
    provider
        .subscribe_offer(&offer("vm", "vm-3"))
        .await
        .unwrap();
    let (late, waited) = waiting.await.unwrap();
    assert_eq!(names(&late), ["vm-3"], "after {waited:?}");
    assert!(
        waited < Duration::from_secs(15),
        "the long-poll slept its timeout: {waited:?}"
    );

    // maxEvents pages an unfiltered scan in arrival order, each offer once.
    let all_scan = requestor_rest.begin(json!({"type": "offer"})).await;
    let mut paged = Vec::new();
    for _ in 0..5 {
        let page = requestor_rest
            .offers(&all_scan, "timeout=1&maxEvents=1")
            .await;
        assert_eq!(page.len(), 1, "page {}: {:?}", paged.len(), names(&page));
        paged.extend(page);
    }
    let distinct: HashSet<&str> = paged.iter().map(|offer| offer.offer_id.as_str()).collect();
    assert_eq!(distinct.len(), 5, "{:?}", names(&paged));
    assert!(requestor_rest
        .offers(&all_scan, "timeout=0.2")
        .await
        .is_empty());
    let (status, body) = requestor_rest.events(&all_scan, "maxEvents=-1").await;
    assert_eq!(status, 400, "{body}");

    // peerId asks P itself: only P's wasm offers pass this filter, once.
    let wasm_scan = requestor_rest
        .begin(json!({"type": "offer", "constraints": "(golem.runtime.name=wasm*)"}))
        .await;
    let direct = requestor_rest
        .offers(&wasm_scan, &format!("peerId={provider_id}&timeout=5"))
        .await;
    let mut direct_names = names(&direct);
    direct_names.sort();
    assert_eq!(direct_names, ["wasm-1", "wasm-2"]);
    assert!(requestor_rest
        .offers(&wasm_scan, &format!("peerId={provider_id}&timeout=5"))
        .await
        .is_empty());
    let (status, body) = requestor_rest.events(&wasm_scan, "peerId=nonsense").await;
    assert_eq!(status, 400, "{body}");

    // A scan belongs to its node's identity: P does not see R's iterator.
    let (status, body) = provider_rest.events(&vm_scan, "timeout=0").await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = provider_rest.end(&vm_scan).await;
    assert_eq!(status, 404, "{body}");

    // Bad constraints are a 400 that says where.
    let (status, body) = requestor_rest
        .call(
            reqwest::Method::POST,
            "/scan",
            Some(json!({"type": "offer", "constraints": "(golem.runtime.name=vm"})),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("position"),
        "{body}"
    );
    let (status, body) = requestor_rest
        .call(
            reqwest::Method::POST,
            "/scan",
            Some(json!({"type": "anything"})),
        )
        .await;
    assert_eq!(status, 400, "{body}");

    // DELETE ends it: events 404, a second DELETE 410; a waiting poll ends with 404.
    let waiting = {
        let requestor_rest = rest(&requestor, &sandbox.daemons()[1].app_key);
        let vm_scan = vm_scan.clone();
        tokio::spawn(async move { requestor_rest.events(&vm_scan, "timeout=20").await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, body) = requestor_rest.end(&vm_scan).await;
    assert_eq!(status, 204, "{body}");
    let (status, body) = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("the waiting poll did not end with the deletion")
        .unwrap();
    assert_eq!(status, 404, "{body}");
    let (status, body) = requestor_rest.events(&vm_scan, "timeout=0").await;
    assert_eq!(status, 404, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("deleted"),
        "{body}"
    );
    let (status, body) = requestor_rest.end(&vm_scan).await;
    assert_eq!(status, 410, "{body}");
    let (status, body) = requestor_rest.end("0123456789abcdef0123456789abcdef").await;
    assert_eq!(status, 404, "{body}");

    // An iterator unused for its timeout expires: events 404, DELETE 410.
    let short = requestor_rest
        .begin(json!({"type": "offer", "timeout": 1}))
        .await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let (status, body) = requestor_rest.events(&short, "timeout=0").await;
    assert_eq!(status, 404, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("expired"),
        "{body}"
    );
    let (status, body) = requestor_rest.end(&short).await;
    assert_eq!(status, 410, "{body}");
    let (status, body) = requestor_rest
        .call(
            reqwest::Method::POST,
            "/scan",
            Some(json!({"type": "offer", "timeout": 0})),
        )
        .await;
    assert_eq!(status, 400, "{body}");

    // A demand scan lists the caller's own live demands.
    let demand_id = requestor
        .subscribe_demand(&DemandOfferBase {
            properties: json!({"golem.node.debug.subnet": "public", "golem.srv.comp.expiration": 1}),
            constraints: "(golem.runtime.name=nothing-matches)".to_string(),
        })
        .await
        .unwrap();
    let demand_scan = requestor_rest
        .begin(json!({"type": "demand", "constraints": "(golem.srv.comp.expiration=*)"}))
        .await;
    let (status, body) = requestor_rest.events(&demand_scan, "timeout=1").await;
    assert_eq!(status, 200, "{body}");
    let demands: Vec<Demand> = serde_json::from_value(body).unwrap();
    assert_eq!(
        demands
            .iter()
            .map(|demand| demand.demand_id.as_str())
            .collect::<Vec<_>>(),
        [demand_id.as_str()]
    );
    let (status, body) = requestor_rest
        .events(&demand_scan, &format!("peerId={provider_id}"))
        .await;
    assert_eq!(status, 400, "{body}");
}

#[tokio::test]
async fn property_queries_answer_not_implemented_with_a_message() {
    let mut sandbox = Sandbox::new();
    sandbox.daemon("n").unwrap();
    let client = sandbox.daemons()[0].client();
    let rest = rest(&client, &sandbox.daemons()[0].app_key);
    let offer_id = client.subscribe_offer(&offer("vm", "n")).await.unwrap();
    for path in [
        format!("/offers/{offer_id}/propertyQuery/q1"),
        "/demands/unknown/propertyQuery/q1".to_string(),
    ] {
        let (status, body) = rest
            .call(reqwest::Method::POST, &path, Some(json!({})))
            .await;
        assert_eq!(status, 501, "{path}: {body}");
        assert!(
            body["message"].as_str().unwrap().contains("not supported"),
            "{path}: {body}"
        );
    }
    let unauthenticated = Rest::new(client.base_url(), "wrong-key");
    let (status, _) = unauthenticated
        .call(
            reqwest::Method::POST,
            &format!("/offers/{offer_id}/propertyQuery/q1"),
            Some(json!({})),
        )
        .await;
    assert_eq!(status, 401);
}
