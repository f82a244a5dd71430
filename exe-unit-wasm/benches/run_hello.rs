//! Instantiate + run of the hello module on a deployed package, after the
//! first run (goal ≤ 2 ms): a fresh store, WASI context with the package's
//! preopened volumes, `InstancePre::instantiate` and `_start`.
#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::path::Path;

use criterion::{criterion_group, criterion_main, Criterion};
use exe_unit_wasm::WasmRuntime;
use golem_exe_unit::{DeployRequest, RunRequest, Runtime};
use tokio::sync::mpsc;

fn hello_package(path: &Path) {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/modules/hello.wat");
    let mut writer = zip::ZipWriter::new(std::fs::File::create(path).unwrap());
    let options = zip::write::SimpleFileOptions::default();
    writer.start_file("manifest.json", options).unwrap();
    writer
        .write_all(
            br#"{"id":"b","name":"b","entry-points":[{"id":"hello","wasm-path":"hello.wasm"}],
                        "mount-points":[{"ro":"/golem/input"},{"rw":"/golem/output"}]}"#,
        )
        .unwrap();
    writer.start_file("hello.wasm", options).unwrap();
    writer.write_all(&wat::parse_file(source).unwrap()).unwrap();
    writer.finish().unwrap();
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let package = dir.path().join("package.zip");
    hello_package(&package);
    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let runtime = WasmRuntime::with_memory_limit(Some(256 << 20)).unwrap();
    tokio
        .block_on(runtime.deploy(DeployRequest {
            package,
            package_url: "file:///package.zip".into(),
            work_dir: dir.path().join("work"),
            cache_dir: dir.path().join("cache"),
            volumes: None,
            env: vec![],
            fetch_policy: Default::default(),
            net: Vec::new(),
            hosts: Default::default(),
            hostname: None,
        }))
        .unwrap();
    let run = || {
        tokio.block_on(async {
            let (sender, mut receiver) = mpsc::channel(64);
            let request = RunRequest {
                entry_point: "hello".into(),
                args: vec!["a".into(), "b".into()],
                time_limit: Some(std::time::Duration::from_secs(10)),
            };
            let code = runtime.run(request, sender).await.unwrap();
            assert_eq!(code, 0);
            assert!(receiver.recv().await.is_some());
        })
    };
    run();
    c.bench_function("wasm hello instantiate+run (warm)", |b| b.iter(run));
}

criterion_group!(benches, bench);
criterion_main!(benches);
