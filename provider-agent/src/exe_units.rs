//! Exe-unit discovery: the known binaries (`exe-unit-wasm`, `exe-unit-vm`) are
//! looked for beside the agent's own executable, then on `PATH`; each found
//! one is asked for its `offer-template`, and one that fails (e.g. `vm` with no
//! Docker engine) is not offered, with one log line saying why.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Map, Value};

/// Binary name → runtime name of the exe units this agent knows.
pub const KNOWN: [(&str, &str); 2] = [("exe-unit-wasm", "wasmtime"), ("exe-unit-vm", "vm")];

const TEMPLATE_TIMEOUT: Duration = Duration::from_secs(20);

/// A working exe unit.
#[derive(Debug, Clone)]
pub struct ExeUnit {
    pub runtime: String,
    pub binary: PathBuf,
    /// Flat properties of its `offer-template`.
    pub template: Map<String, Value>,
}

fn find_binary(name: &str, search_path: &[PathBuf]) -> Option<PathBuf> {
    search_path
        .iter()
        .map(|dir| dir.join(name))
        .find(|path| path.is_file())
}

/// Whether `restriction` (runtime or binary names) lets `binary`/`runtime` in.
fn allowed(restriction: Option<&[String]>, binary: &str, runtime: &str) -> bool {
    restriction.is_none_or(|names| names.iter().any(|name| name == binary || name == runtime))
}

/// The offer property in which the VM exe unit names its sandbox.
pub const VM_SANDBOX_PROPERTY: &str = "golem.runtime.vm.sandbox";

/// What became of one known exe unit at discovery.
#[derive(Debug, Clone)]
pub struct Probe {
    /// Binary name (`exe-unit-wasm`).
    pub binary_name: &'static str,
    /// Runtime name (`wasmtime`), as its template says when it answered.
    pub runtime: String,
    pub outcome: ProbeOutcome,
}

#[derive(Debug, Clone)]
pub enum ProbeOutcome {
    /// Left out by the `exe-units` setting.
    NotAllowed,
    /// Not beside golem-provider nor on `PATH`.
    NotFound,
    /// Found, but `offer-template` failed: the reason.
    Failing {
        binary: PathBuf,
        reason: String,
    },
    Working(ExeUnit),
}

/// Every known exe unit, allowed or not, found or not, asked for its
/// `offer-template` when both; `env` is set in each one's environment.
pub async fn probe_all(
    search_path: &[PathBuf],
    restriction: Option<&[String]>,
    env: &[(&str, Option<&str>)],
) -> Vec<Probe> {
    let mut probes = Vec::new();
    for (binary_name, runtime) in KNOWN {
        let probe = |outcome| Probe {
            binary_name,
            runtime: runtime.to_string(),
            outcome,
        };
        if !allowed(restriction, binary_name, runtime) {
            probes.push(probe(ProbeOutcome::NotAllowed));
            continue;
        }
        let Some(binary) = find_binary(binary_name, search_path) else {
            probes.push(probe(ProbeOutcome::NotFound));
            continue;
        };
        match offer_template(&binary, env).await {
            Ok(template) => {
                let runtime = template
                    .get("golem.runtime.name")
                    .and_then(Value::as_str)
                    .unwrap_or(runtime)
                    .to_string();
                probes.push(Probe {
                    binary_name,
                    runtime: runtime.clone(),
                    outcome: ProbeOutcome::Working(ExeUnit {
                        runtime,
                        binary,
                        template,
                    }),
                });
            }
            Err(reason) => probes.push(probe(ProbeOutcome::Failing { binary, reason })),
        }
    }
    probes
}

/// Every known exe unit that is allowed, found, and answers `offer-template`;
/// `env` is set in each one's environment (the settings exe units read).
pub async fn discover(
    search_path: &[PathBuf],
    restriction: Option<&[String]>,
    env: &[(&str, Option<&str>)],
) -> Vec<ExeUnit> {
    if let Some(names) = restriction {
        for name in names {
            if !KNOWN
                .iter()
                .any(|(binary, runtime)| name == binary || name == runtime)
            {
                tracing::warn!(exe_unit = %name, "unknown exe unit in the restriction; known: wasmtime, vm");
            }
        }
    }
    let mut found = Vec::new();
    for probe in probe_all(search_path, restriction, env).await {
        let (binary_name, runtime) = (probe.binary_name, probe.runtime);
        match probe.outcome {
            ProbeOutcome::NotAllowed => {}
            ProbeOutcome::NotFound => tracing::info!(
                %runtime,
                "not offering {runtime}: {binary_name} not found beside golem-provider or on PATH"
            ),
            ProbeOutcome::Failing { reason, .. } => {
                tracing::warn!(%runtime, "not offering {runtime}: {reason}")
            }
            ProbeOutcome::Working(unit) => {
                if unit
                    .template
                    .get(VM_SANDBOX_PROPERTY)
                    .and_then(Value::as_str)
                    == Some("runc")
                {
                    tracing::warn!(
                        runtime = %unit.runtime,
                        "containers run under runc, on this host's kernel: images run \
                         hardened (uid 65534 unless they name a user, read-only root, no \
                         capabilities), not as on the original; gVisor (vm-sandbox = gvisor, \
                         scripts/ensure-docker.sh) runs them as root inside its own kernel"
                    );
                }
                tracing::info!(runtime = %unit.runtime, binary = %unit.binary.display(), "exe unit available");
                found.push(unit);
            }
        }
    }
    found
}

/// Run `<binary> offer-template` and parse its JSON object (flattened).
pub async fn offer_template(
    binary: &Path,
    env: &[(&str, Option<&str>)],
) -> Result<Map<String, Value>, String> {
    let mut command = tokio::process::Command::new(binary);
    for (name, value) in env {
        match value {
            Some(value) => command.env(name, value),
            None => command.env_remove(name),
        };
    }
    let run = command
        .arg("offer-template")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(TEMPLATE_TIMEOUT, run)
        .await
        .map_err(|_| {
            format!(
                "{} offer-template did not answer within {TEMPLATE_TIMEOUT:?}",
                binary.display()
            )
        })?
        .map_err(|error| format!("cannot run {}: {error}", binary.display()))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let line = stderr
            .lines()
            .rev()
            .find(|line| !line.trim().is_empty())
            .unwrap_or("no message");
        return Err(format!(
            "offer-template exited with {}: {}",
            output.status,
            line.trim()
        ));
    }
    let value: Value = serde_json::from_slice(&output.stdout)
        .map_err(|error| format!("offer-template printed invalid JSON: {error}"))?;
    let mut flat = Map::new();
    flatten("", &value, &mut flat);
    if flat.is_empty() {
        return Err("offer-template printed no properties".into());
    }
    Ok(flat)
}

fn flatten(prefix: &str, value: &Value, out: &mut Map<String, Value>) {
    match value {
        Value::Object(map) => {
            for (key, inner) in map {
                let key = if prefix.is_empty() {
                    key.clone()
                } else {
                    format!("{prefix}.{key}")
                };
                flatten(&key, inner, out);
            }
        }
        other => {
            out.insert(prefix.to_string(), other.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn restriction_accepts_runtime_or_binary_names() {
        let wasm = vec!["wasmtime".to_string()];
        assert!(allowed(Some(&wasm), "exe-unit-wasm", "wasmtime"));
        assert!(!allowed(Some(&wasm), "exe-unit-vm", "vm"));
        let binary = vec!["exe-unit-vm".to_string()];
        assert!(allowed(Some(&binary), "exe-unit-vm", "vm"));
        assert!(allowed(None, "exe-unit-vm", "vm"));
    }

    #[tokio::test]
    async fn a_failing_template_is_reported_with_its_message() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("fake");
        std::fs::write(
            &script,
            "#!/bin/sh\necho 'no Docker engine answers' >&2\nexit 1\n",
        )
        .unwrap();
        std::process::Command::new("chmod")
            .arg("+x")
            .arg(&script)
            .status()
            .unwrap();
        let error = offer_template(&script, &[]).await.unwrap_err();
        assert!(error.contains("no Docker engine answers"), "{error}");
    }
}
