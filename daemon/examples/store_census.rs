//! What a stopped node's database holds, by tree and key kind: the records
//! and bytes of each (`scripts/bench/soak.sh` prints it for every daemon at
//! the end of a run, to show which kind of record grows with the jobs).
//!
//! Usage: `store_census <data-dir>...` (the daemons must be stopped: sled
//! opens a database once).

use std::path::PathBuf;

use golem_daemon::store::Store;

fn main() -> anyhow::Result<()> {
    let data_dirs: Vec<PathBuf> = std::env::args().skip(1).map(PathBuf::from).collect();
    if data_dirs.is_empty() {
        anyhow::bail!("usage: store_census <data-dir>... (of stopped daemons)");
    }
    println!("| data dir | tree | key kind | records | KiB |");
    println!("|---|---|---|---|---|");
    for dir in &data_dirs {
        if !dir.join("db").is_dir() {
            anyhow::bail!(
                "{} has no database (db/): give a daemon's data dir",
                dir.display()
            );
        }
        let store = Store::open(dir)?;
        for row in store.census()? {
            println!(
                "| {} | {} | {} | {} | {:.1} |",
                dir.display(),
                row.tree,
                row.kind,
                row.records,
                row.bytes as f64 / 1024.0
            );
        }
    }
    Ok(())
}
