//! The VM unit's own settings, beyond the spawn contract every exe unit
//! shares: read once in `main` from the environment the provider agent
//! hands it (the agent layers its own config and sets these for each spawn).
//! The only module of this crate that names environment variables.

/// Every environment variable the VM unit reads itself.
pub mod env_names {
    /// `1` lets `docker:<ref>` task packages run images the engine holds or
    /// pulls; anything else (or unset) refuses them.
    pub const ALLOW_DOCKER_IMAGES: &str = "GOLEM_ALLOW_DOCKER_IMAGES";
}

/// The VM unit's settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VmConfig {
    /// Whether a `docker:<ref>` package may run an image by reference. Off
    /// by default: such a package runs whatever the provider's engine holds
    /// (other requestors' images, the provider's own) or pulls.
    pub allow_docker_images: bool,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("{name}={value:?} is not a yes/no value (use 1 or 0, true or false)")]
    NotABoolean { name: &'static str, value: String },
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
        Ok(VmConfig {
            allow_docker_images,
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
}
