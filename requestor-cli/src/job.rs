//! Job files for `golem-requestor script JOB.toml`: the demand, the budget and
//! parallelism, input files to upload, the tasks (a command with per-task args)
//! and the outputs to download into local folders. `{id}` in paths and args is
//! replaced by the task's id. Paths are relative to the job file. Every error
//! names the file, line and column (toml's spans), including the semantic ones
//! (an unknown runtime, a missing input file).
//!
//! ```toml
//! [demand]
//! runtime = "wasm"            # or "vm"
//! package = "transform.wat"   # file, URL or hash:sha3:<hex>:<url>
//! min_mem_gib = 0.5
//!
//! [job]
//! budget = "1"                # GLM
//! parallelism = 3            # agreements used at once
//! agreements_per_provider = 1 # at most this many of them with one provider
//! output_dir = "out"
//! command = ["transform"]     # entry point (+ fixed args)
//!
//! [[inputs]]                  # uploaded for every task
//! from = "inputs/{id}.txt"
//! to = "/golem/input/{id}.txt"
//!
//! [[outputs]]                 # downloaded after every task
//! from = "/golem/output/{id}.txt"
//! to = "{id}.txt"             # under output_dir
//!
//! [[task]]
//! id = "alice"
//! args = ["{id}.txt", "{id}.txt"]
//! ```

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::demand::{DemandSpec, PriceCaps, Runtime};
use crate::error::{RequestorError, Result};
use crate::session::{JobOptions, Step, TaskSpec};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct JobFile {
    demand: DemandSection,
    #[serde(default)]
    job: JobSection,
    #[serde(default)]
    inputs: Vec<FileEntry>,
    #[serde(default)]
    outputs: Vec<FileEntry>,
    #[serde(default)]
    task: Vec<TaskEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DemandSection {
    runtime: Spanned<String>,
    package: Spanned<String>,
    subnet: Option<String>,
    min_cores: Option<u32>,
    min_threads: Option<u32>,
    min_mem_gib: Option<f64>,
    min_storage_gib: Option<f64>,
    max_start_price: Option<f64>,
    max_cpu_per_hour: Option<f64>,
    max_env_per_hour: Option<f64>,
    expiration_secs: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct JobSection {
    budget: Option<Spanned<toml::Value>>,
    parallelism: Option<Spanned<usize>>,
    output_dir: Option<String>,
    command: Option<Spanned<Vec<String>>>,
    task_timeout_secs: Option<u64>,
    offer_timeout_secs: Option<u64>,
    busy_timeout_secs: Option<u64>,
    timeout_secs: Option<u64>,
    max_attempts: Option<u32>,
    agreements_per_provider: Option<Spanned<usize>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileEntry {
    from: Spanned<String>,
    to: Spanned<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TaskEntry {
    id: Spanned<String>,
    #[serde(default)]
    args: Vec<String>,
    /// Overrides the job's command: entry point + args.
    run: Option<Spanned<Vec<String>>>,
    #[serde(default)]
    inputs: Vec<FileEntry>,
    #[serde(default)]
    outputs: Vec<FileEntry>,
}

/// A parsed, checked job.
#[derive(Debug, Clone)]
pub struct Job {
    pub demand: DemandSpec,
    /// As written (file, URL or hash); resolve it with the session.
    pub package: String,
    pub budget: Option<rust_decimal::Decimal>,
    pub output_dir: PathBuf,
    pub tasks: Vec<TaskSpec>,
    pub options: JobOptions,
}

/// Load `path`; `subnet` is the default when the file names none.
pub fn load(path: &Path, subnet: &str) -> Result<Job> {
    let text = std::fs::read_to_string(path).map_err(|e| RequestorError::io(path, e))?;
    parse(&text, path, subnet)
}

/// `file:line:column` of a byte offset.
fn position(text: &str, file: &Path, offset: usize) -> String {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map_or(0, |at| at + 1) + 1;
    format!("{}:{line}:{column}", file.display())
}

pub fn parse(text: &str, file: &Path, default_subnet: &str) -> Result<Job> {
    let at = |span: std::ops::Range<usize>, message: String| {
        RequestorError::Job(format!("{}: {message}", position(text, file, span.start)))
    };
    let raw: JobFile = toml::from_str(text).map_err(|error| {
        let message = error.message().to_string();
        match error.span() {
            Some(span) => at(span, message),
            None => RequestorError::Job(format!("{}: {message}", file.display())),
        }
    })?;
    let base = file.parent().unwrap_or(Path::new(".")).to_path_buf();
    let relative = |path: &str| {
        let path = PathBuf::from(path);
        if path.is_absolute() {
            path
        } else {
            base.join(path)
        }
    };
    let demand_section = raw.demand;
    let runtime = Runtime::parse(demand_section.runtime.get_ref()).ok_or_else(|| {
        at(
            demand_section.runtime.span(),
            format!(
                "unknown runtime {:?} (use \"wasm\" or \"vm\")",
                demand_section.runtime.get_ref()
            ),
        )
    })?;
    let package_text = demand_section.package.get_ref().clone();
    let package = if package_text.contains(':') && !Path::new(&package_text).exists() {
        package_text
    } else {
        let path = relative(&package_text);
        if !path.exists() {
            return Err(at(
                demand_section.package.span(),
                format!("package file {} does not exist", path.display()),
            ));
        }
        path.display().to_string()
    };
    let mut demand = DemandSpec::new(
        runtime,
        String::new(),
        demand_section
            .subnet
            .unwrap_or_else(|| default_subnet.to_string()),
    );
    demand.min_cores = demand_section.min_cores;
    demand.min_threads = demand_section.min_threads;
    demand.min_mem_gib = demand_section.min_mem_gib;
    demand.min_storage_gib = demand_section.min_storage_gib;
    demand.caps = PriceCaps {
        max_start_price: demand_section.max_start_price,
        max_cpu_per_hour: demand_section.max_cpu_per_hour,
        max_env_per_hour: demand_section.max_env_per_hour,
    };
    if let Some(seconds) = demand_section.expiration_secs {
        demand.expiration = Duration::from_secs(seconds);
    }
    let job = raw.job;
    let budget = match &job.budget {
        None => None,
        Some(value) => {
            let text = match value.get_ref() {
                toml::Value::String(text) => text.clone(),
                toml::Value::Integer(number) => number.to_string(),
                toml::Value::Float(number) => number.to_string(),
                _ => String::new(),
            };
            let amount: rust_decimal::Decimal = text.parse().map_err(|_| {
                at(
                    value.span(),
                    format!("budget {text:?} is not an amount of GLM (e.g. \"1.5\")"),
                )
            })?;
            if amount <= rust_decimal::Decimal::ZERO {
                return Err(at(value.span(), "budget must be more than 0".into()));
            }
            Some(amount)
        }
    };
    let mut options = JobOptions::default();
    let positive =
        |value, name| at_least_one(value, name).map_err(|(span, message)| at(span, message));
    if let Some(parallelism) = positive(&job.parallelism, "parallelism")? {
        options.max_workers = parallelism;
    }
    if let Some(per_provider) = positive(&job.agreements_per_provider, "agreements_per_provider")? {
        options.agreements_per_provider = per_provider;
    }
    if let Some(seconds) = job.task_timeout_secs {
        options.task_timeout = Duration::from_secs(seconds);
    }
    if let Some(seconds) = job.offer_timeout_secs {
        options.offer_timeout = Duration::from_secs(seconds);
    }
    if let Some(seconds) = job.busy_timeout_secs {
        options.busy_timeout = Duration::from_secs(seconds);
    }
    if let Some(seconds) = job.timeout_secs {
        options.job_timeout = Duration::from_secs(seconds);
    }
    if let Some(attempts) = job.max_attempts {
        options.max_attempts = attempts.max(1);
    }
    let output_dir = relative(job.output_dir.as_deref().unwrap_or("out"));
    if let Some(command) = &job.command {
        if command.get_ref().is_empty() {
            return Err(at(
                command.span(),
                "command needs at least an entry point".into(),
            ));
        }
    }
    if raw.task.is_empty() {
        return Err(RequestorError::Job(format!(
            "{}: the job has no tasks: add [[task]] sections with an id",
            file.display()
        )));
    }
    let mut ids = std::collections::HashSet::new();
    let mut tasks = Vec::new();
    for entry in &raw.task {
        let id = entry.id.get_ref().clone();
        if id.is_empty() || !ids.insert(id.clone()) {
            return Err(at(
                entry.id.span(),
                format!("task id {id:?} is empty or used twice"),
            ));
        }
        let fill = |text: &str| text.replace("{id}", &id);
        let mut steps = Vec::new();
        for input in job_and_task(&raw.inputs, &entry.inputs) {
            let from = relative(&fill(input.from.get_ref()));
            if !from.is_file() {
                return Err(at(
                    input.from.span(),
                    format!("input file {} does not exist (task {id})", from.display()),
                ));
            }
            steps.push(Step::Upload {
                from,
                to: fill(input.to.get_ref()),
            });
        }
        let (entry_point, mut args) = match (&entry.run, &job.command) {
            (Some(run), _) => match run.get_ref().split_first() {
                Some((first, rest)) => (first.clone(), rest.to_vec()),
                None => return Err(at(run.span(), "run needs at least an entry point".into())),
            },
            (None, Some(command)) => {
                let (first, rest) = command.get_ref().split_first().ok_or_else(|| {
                    at(
                        command.span(),
                        "command needs at least an entry point".into(),
                    )
                })?;
                (first.clone(), rest.to_vec())
            }
            (None, None) => {
                return Err(at(
                    entry.id.span(),
                    format!("task {id} has nothing to run: set `run` or the job's `command`"),
                ))
            }
        };
        args.extend(entry.args.iter().cloned());
        steps.push(Step::Run {
            entry: fill(&entry_point),
            args: args.iter().map(|arg| fill(arg)).collect(),
        });
        for output in job_and_task(&raw.outputs, &entry.outputs) {
            let to = fill(output.to.get_ref());
            let to = if Path::new(&to).is_absolute() {
                PathBuf::from(to)
            } else {
                output_dir.join(to)
            };
            steps.push(Step::Download {
                from: fill(output.from.get_ref()),
                to,
            });
        }
        tasks.push(TaskSpec { id, steps });
    }
    Ok(Job {
        demand,
        package,
        budget,
        output_dir,
        tasks,
        options,
    })
}

/// A count the job file may give, which must be at least 1; the error is its
/// span and message (for `at`).
fn at_least_one(
    value: &Option<Spanned<usize>>,
    name: &str,
) -> std::result::Result<Option<usize>, (std::ops::Range<usize>, String)> {
    match value {
        Some(count) if *count.get_ref() == 0 => {
            Err((count.span(), format!("{name} must be at least 1")))
        }
        count => Ok(count.as_ref().map(|count| *count.get_ref())),
    }
}

fn job_and_task<'a>(
    job: &'a [FileEntry],
    task: &'a [FileEntry],
) -> impl Iterator<Item = &'a FileEntry> {
    job.iter().chain(task.iter())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job_dir() -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("m.wat"), "(module)").expect("write");
        std::fs::create_dir_all(dir.path().join("in")).expect("mkdir");
        std::fs::write(dir.path().join("in/a.txt"), "a").expect("write");
        dir
    }

    fn parse_in(dir: &Path, text: &str) -> Result<Job> {
        parse(text, &dir.join("job.toml"), "public")
    }

    #[test]
    fn a_good_job_expands_ids_and_paths() {
        let dir = job_dir();
        let job = parse_in(
            dir.path(),
            r#"
[demand]
runtime = "wasm"
package = "m.wat"
[job]
budget = "2.5"
parallelism = 2
agreements_per_provider = 2
command = ["m", "-v"]
[[inputs]]
from = "in/{id}.txt"
to = "/golem/input/{id}.txt"
[[outputs]]
from = "/golem/output/{id}.out"
to = "{id}.out"
[[task]]
id = "a"
args = ["{id}.txt"]
"#,
        )
        .expect("valid");
        assert_eq!(job.budget, Some("2.5".parse().expect("decimal")));
        assert_eq!(job.options.max_workers, 2);
        assert_eq!(job.options.agreements_per_provider, 2);
        assert_eq!(job.tasks.len(), 1);
        assert_eq!(
            job.tasks[0].steps[1],
            Step::Run {
                entry: "m".into(),
                args: vec!["-v".into(), "a.txt".into()]
            }
        );
        assert_eq!(
            job.tasks[0].steps[2],
            Step::Download {
                from: "/golem/output/a.out".into(),
                to: dir.path().join("out/a.out")
            }
        );
    }

    #[test]
    fn bad_jobs_name_the_line() {
        let dir = job_dir();
        let cases = [
            ("[demand]\nruntime = \"wasm\"\npackage = \"m.wat\"\n[[task]]\nid = \"a\"\nrun = [\"m\"]\nbogus = 1\n", ":7:", "unknown field"),
            ("[demand]\nruntime = \"quantum\"\npackage = \"m.wat\"\n", ":2:", "unknown runtime"),
            ("[demand]\nruntime = \"wasm\"\npackage = \"nope.wasm\"\n", ":3:", "does not exist"),
            ("[demand]\nruntime = \"wasm\"\npackage = \"m.wat\"\n[job]\nbudget = \"lots\"\n", ":5:", "not an amount"),
            ("[demand]\nruntime = \"wasm\"\npackage = \"m.wat\"\n[job]\nparallelism = 0\n", ":5:", "parallelism must be at least 1"),
            ("[demand]\nruntime = \"wasm\"\npackage = \"m.wat\"\n[job]\nagreements_per_provider = 0\n", ":5:", "agreements_per_provider must be at least 1"),
            ("[demand]\nruntime = \"wasm\"\npackage = \"m.wat\"\n[[task]]\nid = \"a\"\nrun = [\"m\"]\ninputs = [{from = \"in/zz.txt\", to = \"/golem/input/x\"}]\n", ":7:", "input file"),
            ("[demand\nruntime = 1\n", ":1:8:", "invalid table header"),
            ("[demand]\nruntime = \"wasm\"\npackage = \"m.wat\"\n[[task]]\nid = \"a\"\n", ":5:", "nothing to run"),
        ];
        for (text, line, words) in cases {
            let error = parse_in(dir.path(), text).expect_err(text).to_string();
            assert!(
                error.contains(line) && error.contains(words),
                "{text:?} → {error}"
            );
            assert!(error.contains("job.toml"), "{error}");
        }
    }
}
