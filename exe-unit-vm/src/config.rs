//! The VM unit's own settings, beyond the spawn contract every exe unit
//! shares: read once in `main` from the environment the provider agent
//! hands it (the agent layers its own config and sets these for each spawn).
//! The only module of this crate that names environment variables.

/// Every environment variable the VM unit reads itself.
pub mod env_names {
    /// `1` lets `docker:<ref>` task packages run images the engine holds or
    /// pulls; anything else (or unset) refuses them.
    pub const ALLOW_DOCKER_IMAGES: &str = "GOLEM_ALLOW_DOCKER_IMAGES";
    /// `gvisor` or `runc`: the sandbox containers run in (the provider's
    /// `vm-sandbox`); unset, gVisor when the engine has it, else runc.
    pub const VM_SANDBOX: &str = "GOLEM_VM_SANDBOX";
    /// `name=IPv4` pairs (comma-separated): how the manifest hosts of
    /// outbound activities resolve before the host's resolver is asked (the
    /// provider's `outbound-hosts`).
    pub const OUTBOUND_HOSTS: &str = "GOLEM_OUTBOUND_HOSTS";
}

/// The engine runtime that runs containers under gVisor, as
/// `scripts/ensure-docker.sh` registers it.
pub const GVISOR_RUNTIME: &str = "runsc";

/// The engine runtime that runs containers under gVisor with gVisor's own
/// network stack on the container's bridge interface (`--network=sandbox`),
/// for outbound activities: `scripts/ensure-docker.sh` registers it with the
/// wrapper `scripts/runsc-net` as its path (RFC 004). Without it such
/// containers run under runc.
pub const GVISOR_NETWORKED_RUNTIME: &str = "runsc-net";

/// Where containers run: the provider's `vm-sandbox`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sandbox {
    /// gVisor (`runsc`): the image runs as it does on the original (its
    /// user or root, a writable root, Docker's default capabilities) inside
    /// gVisor's own kernel.
    Gvisor,
    /// The engine's default runtime, with the hardening that makes up for
    /// sharing the host's kernel: uid 65534 unless the image names a user, a
    /// read-only root, no capabilities, no new privileges.
    Runc,
}

impl Sandbox {
    /// The name in settings and in the offer (`golem.runtime.vm.sandbox`).
    pub fn as_str(self) -> &'static str {
        match self {
            Sandbox::Gvisor => "gvisor",
            Sandbox::Runc => "runc",
        }
    }

    pub fn parse(value: &str) -> Option<Sandbox> {
        match value.trim().to_ascii_lowercase().as_str() {
            "gvisor" | "runsc" => Some(Sandbox::Gvisor),
            "runc" => Some(Sandbox::Runc),
            _ => None,
        }
    }

    /// The sandbox when the provider chose `chosen` (None: not set) and the
    /// engine lists the runtimes `engine_runtimes`; a second value says why
    /// the choice is not the default (logged as a warning).
    pub fn resolve(
        chosen: Option<Sandbox>,
        engine_runtimes: &[String],
    ) -> Result<(Sandbox, Option<String>), String> {
        let has_gvisor = engine_runtimes.iter().any(|name| name == GVISOR_RUNTIME);
        match chosen {
            Some(Sandbox::Gvisor) if has_gvisor => Ok((Sandbox::Gvisor, None)),
            Some(Sandbox::Gvisor) => Err(format!(
                "vm-sandbox is gvisor but the engine has no runtime {GVISOR_RUNTIME} \
                 (scripts/ensure-docker.sh installs and registers it)"
            )),
            Some(Sandbox::Runc) => Ok((
                Sandbox::Runc,
                Some(
                    "vm-sandbox is runc: containers share the host's kernel, so images \
                     run hardened (uid 65534 unless they name a user, read-only root, no \
                     capabilities) instead of as on the original"
                        .into(),
                ),
            )),
            None if has_gvisor => Ok((Sandbox::Gvisor, None)),
            None => Ok((
                Sandbox::Runc,
                Some(format!(
                    "the engine has no runtime {GVISOR_RUNTIME} (gVisor): containers run \
                     under runc, hardened; scripts/ensure-docker.sh installs and registers gVisor"
                )),
            )),
        }
    }
}

/// The VM unit's settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VmConfig {
    /// Whether a `docker:<ref>` package may run an image by reference. Off
    /// by default: such a package runs whatever the provider's engine holds
    /// (other requestors' images, the provider's own) or pulls.
    pub allow_docker_images: bool,
    /// The provider's `vm-sandbox`; `None` when not set (gVisor when the
    /// engine has it).
    pub sandbox: Option<Sandbox>,
    /// The provider's `outbound-hosts`: manifest host names resolved here
    /// first (lowercase names).
    pub outbound_hosts: std::collections::BTreeMap<String, std::net::Ipv4Addr>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("{name}={value:?} is not a yes/no value (use 1 or 0, true or false)")]
    NotABoolean { name: &'static str, value: String },
    #[error("{name}={value:?} is not a sandbox (use gvisor or runc)")]
    NotASandbox { name: &'static str, value: String },
    #[error("{name}: {message}")]
    BadHosts { name: &'static str, message: String },
}

impl VmConfig {
    /// The settings from this process's environment.
    pub fn from_env() -> Result<VmConfig, ConfigError> {
        VmConfig::from_lookup(|name| std::env::var(name).ok())
    }

    /// The settings from `lookup` (a fake environment in tests).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<VmConfig, ConfigError> {
        let allow_docker_images = match lookup(env_names::ALLOW_DOCKER_IMAGES) {
            None => false,
            Some(value) => parse_switch(&value).ok_or(ConfigError::NotABoolean {
                name: env_names::ALLOW_DOCKER_IMAGES,
                value,
            })?,
        };
        let sandbox = match lookup(env_names::VM_SANDBOX) {
            None => None,
            Some(value) if value.trim().is_empty() => None,
            Some(value) => Some(Sandbox::parse(&value).ok_or(ConfigError::NotASandbox {
                name: env_names::VM_SANDBOX,
                value,
            })?),
        };
        let outbound_hosts = match lookup(env_names::OUTBOUND_HOSTS) {
            None => Default::default(),
            Some(value) => crate::outbound::parse_host_overrides(&value).map_err(|message| {
                ConfigError::BadHosts {
                    name: env_names::OUTBOUND_HOSTS,
                    message,
                }
            })?,
        };
        Ok(VmConfig {
            allow_docker_images,
            sandbox,
            outbound_hosts,
        })
    }
}

/// `1`/`true`/`yes`/`on` or `0`/`false`/`no`/`off`/empty, any case.
pub fn parse_switch(value: &str) -> Option<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Some(true),
        "" | "0" | "false" | "no" | "off" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_images_are_off_unless_the_environment_allows_them() {
        let config = |value: Option<&str>| {
            VmConfig::from_lookup(|name| {
                (name == env_names::ALLOW_DOCKER_IMAGES)
                    .then(|| value.map(str::to_string))
                    .flatten()
            })
        };
        assert_eq!(config(None), Ok(VmConfig::default()));
        assert!(!VmConfig::default().allow_docker_images);
        assert_eq!(config(Some("0")).map(|c| c.allow_docker_images), Ok(false));
        assert_eq!(config(Some("1")).map(|c| c.allow_docker_images), Ok(true));
        assert_eq!(
            config(Some("TRUE")).map(|c| c.allow_docker_images),
            Ok(true)
        );
        assert!(config(Some("maybe")).is_err());
    }

    #[test]
    fn the_sandbox_comes_from_the_environment() {
        let config = |value: &str| {
            let value = value.to_string();
            VmConfig::from_lookup(move |name| {
                (name == env_names::VM_SANDBOX).then(|| value.clone())
            })
        };
        assert_eq!(VmConfig::default().sandbox, None);
        assert_eq!(config("").map(|c| c.sandbox), Ok(None));
        assert_eq!(
            config("gvisor").map(|c| c.sandbox),
            Ok(Some(Sandbox::Gvisor))
        );
        assert_eq!(config("RUNC").map(|c| c.sandbox), Ok(Some(Sandbox::Runc)));
        assert!(matches!(
            config("kvm"),
            Err(ConfigError::NotASandbox { .. })
        ));
    }

    #[test]
    fn gvisor_is_the_default_when_the_engine_has_it() {
        let with = vec!["runc".to_string(), GVISOR_RUNTIME.to_string()];
        let without = vec!["runc".to_string()];
        assert_eq!(Sandbox::resolve(None, &with), Ok((Sandbox::Gvisor, None)));
        let (sandbox, warning) = Sandbox::resolve(None, &without).unwrap();
        assert_eq!(sandbox, Sandbox::Runc);
        assert!(warning.unwrap_or_default().contains("no runtime runsc"));
        // runc when chosen, with a warning even where gVisor is there.
        let (sandbox, warning) = Sandbox::resolve(Some(Sandbox::Runc), &with).unwrap();
        assert_eq!(sandbox, Sandbox::Runc);
        assert!(warning.is_some());
        // gVisor chosen but missing is an error, not a silent runc.
        assert!(Sandbox::resolve(Some(Sandbox::Gvisor), &without).is_err());
        assert_eq!(
            Sandbox::resolve(Some(Sandbox::Gvisor), &with),
            Ok((Sandbox::Gvisor, None))
        );
    }
}
