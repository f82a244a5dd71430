//! Benchmarks of the constraint language: parsing the demand yapapi sends,
//! evaluating it against one offer, and against 100,000 generated offers (the
//! market's hot path; the goal is at most 50 ms for the whole batch).

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use serde_json::{json, Value};

use golem_model::constraints::{parse, CompiledConstraint, Constraint, KeyTable, MatchForm};
use golem_model::properties::Properties;

const YAPAPI_DEMAND: &str = "(&(golem.node.debug.subnet=public)\n\t(golem.com.payment.platform.erc20-holesky-tglm.address=*)\n\t(golem.com.payment.protocol.version>1)\n\t(golem.com.pricing.model=linear)\n\t(&(golem.inf.mem.gib>=0.5)\n\t(golem.inf.storage.gib>=2.0)\n\t(golem.inf.cpu.threads>=1)\n\t(golem.runtime.name=vm)))";

const OFFER_COUNT: usize = 100_000;

/// A small deterministic generator (xorshift), so runs are comparable.
struct Xorshift(u64);

impl Xorshift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn pick<'a>(&mut self, choices: &[&'a str]) -> &'a str {
        let index = (self.next() % choices.len() as u64) as usize;
        choices[index]
    }
}

/// An offer shaped like a real provider's (about 25 properties), with the
/// demanded values varied so that roughly a third of the offers match.
fn generated_offer(random: &mut Xorshift, index: usize) -> Properties {
    let memory_gib = [0.25, 0.5, 1.0, 2.0, 4.0, 8.0][(random.next() % 6) as usize];
    let storage_gib = [1.0, 2.0, 10.0, 50.0][(random.next() % 4) as usize];
    let threads = random.next() % 5;
    let runtime = random.pick(&["vm", "vm", "vm", "wasmtime"]);
    let subnet = random.pick(&["public", "public", "public", "devnet-beta"]);
    let offer = json!({
        "golem.activity.caps.transfer.protocol": ["http", "https", "gftp"],
        "golem.com.payment.debit-notes.accept-timeout?": 240,
        "golem.com.payment.platform.erc20-holesky-tglm.address": format!("0x{:040x}", index),
        "golem.com.payment.protocol.version": "3",
        "golem.com.pricing.model": "linear",
        "golem.com.pricing.model.linear.coeffs": [0.0001, 0.0002, 0.0],
        "golem.com.scheme": "payu",
        "golem.com.scheme.payu.debit-note.interval-sec?": 120,
        "golem.com.scheme.payu.payment-timeout-sec?": 120,
        "golem.com.usage.vector": ["golem.usage.cpu_sec", "golem.usage.duration_sec"],
        "golem.inf.cpu.architecture": "x86_64",
        "golem.inf.cpu.brand": "Intel(R) Core(TM) i7",
        "golem.inf.cpu.capabilities": ["sse3", "avx2"],
        "golem.inf.cpu.cores": threads.max(1),
        "golem.inf.cpu.model": "Stepping 10 Family 6 Model 158",
        "golem.inf.cpu.threads": threads,
        "golem.inf.cpu.vendor": "GenuineIntel",
        "golem.inf.mem.gib": memory_gib,
        "golem.inf.storage.gib": storage_gib,
        "golem.node.debug.subnet": subnet,
        "golem.node.id.name": format!("provider-{index}"),
        "golem.node.net.is-public": false,
        "golem.runtime.capabilities": ["inet", "vpn", "manifest-support"],
        "golem.runtime.name": runtime,
        "golem.runtime.version": "0.4.2",
        "golem.srv.caps.multi-activity": true,
        "golem.srv.caps.payload-manifest": true,
    });
    Properties::from_json(offer).unwrap_or_default()
}

fn generated_offers() -> Vec<Properties> {
    let mut random = Xorshift(0x9e37_79b9_7f4a_7c15);
    (0..OFFER_COUNT)
        .map(|index| generated_offer(&mut random, index))
        .collect()
}

fn demand() -> Constraint {
    parse(YAPAPI_DEMAND).unwrap_or_else(|error| panic!("demand must parse: {error}"))
}

fn matching_offer() -> Properties {
    let mut offer = generated_offer(&mut Xorshift(1), 0);
    offer.insert("golem.inf.mem.gib", Value::from(4.0));
    offer.insert("golem.inf.storage.gib", Value::from(10.0));
    offer.insert("golem.inf.cpu.threads", Value::from(4));
    offer.insert("golem.runtime.name", Value::from("vm"));
    offer.insert("golem.node.debug.subnet", Value::from("public"));
    offer
}

fn bench_parse(criterion: &mut Criterion) {
    criterion.bench_function("parse yapapi demand", |bencher| {
        bencher.iter(|| parse(black_box(YAPAPI_DEMAND)))
    });
}

fn bench_evaluate_one(criterion: &mut Criterion) {
    let demand = demand();
    let matching = matching_offer();
    assert!(demand.matches(&matching));
    let mut failing_last = matching.clone();
    failing_last.insert("golem.runtime.name", Value::from("wasmtime"));
    assert!(!demand.matches(&failing_last));

    criterion.bench_function("evaluate one offer (match)", |bencher| {
        bencher.iter(|| black_box(&demand).matches(black_box(&matching)))
    });
    criterion.bench_function("evaluate one offer (last clause fails)", |bencher| {
        bencher.iter(|| black_box(&demand).matches(black_box(&failing_last)))
    });
}

/// Nanoseconds this thread has spent on a CPU (Linux), to tell the cost of the
/// work from time spent waiting for a core on a busy machine.
fn thread_cpu_nanos() -> Option<u64> {
    let schedstat = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    schedstat.split_whitespace().next()?.parse().ok()
}

fn report_cpu_time_per_pass(demand: &Constraint, offers: &[Properties]) {
    const PASSES: u32 = 10;
    let wall_start = std::time::Instant::now();
    let Some(cpu_start) = thread_cpu_nanos() else {
        return;
    };
    for _ in 0..PASSES {
        black_box(offers.iter().filter(|offer| demand.matches(offer)).count());
    }
    let wall = wall_start.elapsed() / PASSES;
    let Some(cpu_end) = thread_cpu_nanos() else {
        return;
    };
    let cpu = Duration::from_nanos(cpu_end.saturating_sub(cpu_start) / u64::from(PASSES));
    let count = offers.len();
    println!("one demand vs {count} offers: {cpu:?} on-cpu, {wall:?} wall (mean of {PASSES})");
}

fn bench_evaluate_many(criterion: &mut Criterion) {
    let demand = demand();
    let offers = generated_offers();
    let matched = offers.iter().filter(|offer| demand.matches(offer)).count();
    println!(
        "demand matches {matched} of {} generated offers",
        offers.len()
    );
    report_cpu_time_per_pass(&demand, &offers);

    let mut group = criterion.benchmark_group("market");
    group.sample_size(20);
    group.bench_function("one demand vs 100000 offers", |bencher| {
        bencher.iter(|| {
            let demand = black_box(&demand);
            black_box(&offers)
                .iter()
                .filter(|offer| demand.matches(offer))
                .count()
        })
    });
    let first_thousand = &offers[..1000];
    group.bench_function("one demand vs 1000 offers (cache-hot)", |bencher| {
        bencher.iter(|| {
            let demand = black_box(&demand);
            black_box(first_thousand)
                .iter()
                .filter(|offer| demand.matches(offer))
                .count()
        })
    });
    group.finish();
}

/// The market's hot path as the daemon runs it: offers held in their compact
/// [`MatchForm`] and the demand compiled against the market's [`KeyTable`].
fn bench_evaluate_many_compact(criterion: &mut Criterion) {
    let demand = demand();
    let offers = generated_offers();
    let mut table = KeyTable::new();
    let forms: Vec<MatchForm> = offers
        .iter()
        .map(|offer| MatchForm::new(offer, &mut table))
        .collect();
    drop(offers);
    let compiled = CompiledConstraint::compile(&demand, &mut table);
    let matched = forms.iter().filter(|form| compiled.matches(form)).count();
    println!(
        "compiled demand matches {matched} of {} match forms",
        forms.len()
    );
    const PASSES: u32 = 10;
    let wall_start = std::time::Instant::now();
    if let Some(cpu_start) = thread_cpu_nanos() {
        for _ in 0..PASSES {
            black_box(forms.iter().filter(|form| compiled.matches(form)).count());
        }
        let wall = wall_start.elapsed() / PASSES;
        if let Some(cpu_end) = thread_cpu_nanos() {
            let cpu = Duration::from_nanos(cpu_end.saturating_sub(cpu_start) / u64::from(PASSES));
            println!("one compiled demand vs {} match forms: {cpu:?} on-cpu, {wall:?} wall (mean of {PASSES})", forms.len());
        }
    }
    let mut group = criterion.benchmark_group("market");
    group.sample_size(20);
    group.bench_function("one demand vs 100000 offers (match form)", |bencher| {
        bencher.iter(|| {
            let compiled = black_box(&compiled);
            black_box(&forms)
                .iter()
                .filter(|form| compiled.matches(form))
                .count()
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(1));
    targets = bench_parse, bench_evaluate_one, bench_evaluate_many, bench_evaluate_many_compact
}
criterion_main!(benches);
