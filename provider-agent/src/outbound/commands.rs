//! The provider's commands for its outbound rules, as the original's
//! `ya-provider whitelist|keystore|rule` have them: `whitelist list|add|
//! remove`, `keystore list|add|remove`, `rule list|set outbound …`. Each
//! reads and writes the files in the agent's data dir; a running agent
//! reads them again at its next decision. Output is text, or JSON with
//! `--json` on the list commands.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Subcommand;

use super::keystore::{Certificate, Keystore};
use super::rules::{CertRule, Mode, RulesConfig};
use super::whitelist::{pattern_id, validated, DomainWhitelist, MatchType};

#[derive(Debug, Subcommand)]
pub enum WhitelistCommand {
    /// List the domain whitelist's patterns with their ids.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Add patterns: host names (`-t strict`, the default: whole host,
    /// case-insensitive) or regular expressions (`-t regex`: unanchored,
    /// case-insensitive, as on the original).
    Add {
        /// The patterns.
        #[arg(short = 'p', long = "patterns", required = true, num_args = 1..)]
        patterns: Vec<String>,
        /// How the patterns match.
        #[arg(short = 't', long = "type", value_enum, default_value_t = MatchType::Strict)]
        match_type: MatchType,
    },
    /// Remove patterns by id (see `whitelist list`).
    Remove {
        #[arg(required = true)]
        ids: Vec<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeystoreCommand {
    /// List the X.509 certificates trusted for `audited-payload`.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Add certificates (PEM, PEM chains or DER files); expired ones are refused.
    Add {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Remove certificates by id or a unique id prefix (see `keystore list`);
    /// rules set on them are removed too.
    Remove {
        #[arg(required = true)]
        ids: Vec<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum RuleCommand {
    /// Show the outbound rules.
    List {
        /// Print JSON (rules.json's content).
        #[arg(long)]
        json: bool,
    },
    /// Change a rule.
    #[command(subcommand)]
    Set(RuleSet),
}

#[derive(Debug, Subcommand)]
pub enum RuleSet {
    /// Outbound internet access of payloads.
    #[command(subcommand)]
    Outbound(OutboundRuleSet),
}

#[derive(Debug, Subcommand)]
pub enum OutboundRuleSet {
    /// Let the rules decide (the default).
    Enable,
    /// Refuse every manifest that asks for outbound access.
    Disable,
    /// The rule for unsigned manifests.
    Everyone {
        #[arg(long, value_enum)]
        mode: Mode,
    },
    /// The rule for manifests signed with an X.509 certificate of the keystore.
    #[command(subcommand)]
    AuditedPayload(CertRuleSet),
    /// The rule for requestors with a Golem certificate (not supported here).
    #[command(subcommand)]
    Partner(CertRuleSet),
}

#[derive(Debug, Subcommand)]
pub enum CertRuleSet {
    /// Set the rule of a certificate already in the keystore (id or unique prefix).
    CertId {
        cert_id: String,
        #[arg(long, value_enum)]
        mode: Mode,
        #[arg(long, default_value = "")]
        description: String,
    },
    /// Add the certificates of a file to the keystore and set the rule of each.
    ImportCert {
        file: PathBuf,
        #[arg(long, value_enum)]
        mode: Mode,
        #[arg(long, default_value = "")]
        description: String,
    },
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

pub fn whitelist(data_dir: &Path, command: WhitelistCommand) -> anyhow::Result<()> {
    let mut whitelist = DomainWhitelist::load(data_dir)?;
    match command {
        WhitelistCommand::List { json } => {
            let rows: Vec<serde_json::Value> = whitelist
                .patterns
                .iter()
                .map(|pattern| {
                    serde_json::json!({"id": pattern_id(&pattern.domain),
                        "domain": pattern.domain, "match": pattern.match_type})
                })
                .collect();
            if json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
                return Ok(());
            }
            println!("{:<10} {:<8} DOMAIN", "ID", "MATCH");
            for pattern in &whitelist.patterns {
                let kind = match pattern.match_type {
                    MatchType::Strict => "strict",
                    MatchType::Regex => "regex",
                };
                println!(
                    "{:<10} {:<8} {}",
                    pattern_id(&pattern.domain),
                    kind,
                    pattern.domain
                );
            }
        }
        WhitelistCommand::Add {
            patterns,
            match_type,
        } => {
            // All validated before any is stored.
            let patterns = patterns
                .iter()
                .map(|pattern| validated(pattern, match_type))
                .collect::<Result<Vec<_>, _>>()?;
            let added = whitelist.add(patterns);
            whitelist.save(data_dir)?;
            for pattern in &added {
                println!("added {} {}", pattern_id(&pattern.domain), pattern.domain);
            }
            if added.is_empty() {
                println!("nothing added: the patterns are already there");
            }
        }
        WhitelistCommand::Remove { ids } => {
            let removed = whitelist.remove(&ids)?;
            whitelist.save(data_dir)?;
            for pattern in removed {
                println!("removed {} {}", pattern_id(&pattern.domain), pattern.domain);
            }
        }
    }
    Ok(())
}

fn print_certificates(certificates: &[Certificate]) {
    println!("{:<18} {:<26} {:<4} SUBJECT", "ID", "NOT AFTER", "CA");
    for info in certificates.iter().filter_map(Certificate::info) {
        println!(
            "{:<18} {:<26} {:<4} {}",
            &info.id[..16],
            info.not_after,
            if info.is_ca { "yes" } else { "no" },
            info.subject
        );
    }
}

pub fn keystore(data_dir: &Path, command: KeystoreCommand) -> anyhow::Result<()> {
    let dir = Keystore::dir(data_dir);
    match command {
        KeystoreCommand::List { json } => {
            let keystore = Keystore::load(&dir)?;
            if json {
                let infos: Vec<_> = keystore
                    .certificates
                    .iter()
                    .filter_map(Certificate::info)
                    .collect();
                println!("{}", serde_json::to_string_pretty(&infos)?);
            } else {
                print_certificates(&keystore.certificates);
            }
        }
        KeystoreCommand::Add { files } => {
            for file in &files {
                let added = Keystore::add_file(&dir, file, now())?;
                println!("added from {}:", file.display());
                print_certificates(&added);
            }
        }
        KeystoreCommand::Remove { ids } => {
            let mut rules = RulesConfig::load(data_dir)?;
            for id in &ids {
                let removed = Keystore::remove(&dir, id)?;
                let full = removed.id();
                rules.outbound.audited_payload.remove(&full);
                println!("removed {}", &full[..16]);
            }
            rules.save(data_dir)?;
        }
    }
    Ok(())
}

pub fn rule(data_dir: &Path, command: RuleCommand) -> anyhow::Result<()> {
    let mut rules = RulesConfig::load(data_dir)?;
    match command {
        RuleCommand::List { json } => {
            if json {
                println!("{}", serde_json::to_string_pretty(&rules)?);
                return Ok(());
            }
            let outbound = &rules.outbound;
            println!(
                "outbound: {}",
                if outbound.enabled {
                    "enabled"
                } else {
                    "disabled"
                }
            );
            println!(
                "{:<16} {:<10} {:<18} DESCRIPTION",
                "RULE", "MODE", "CERT ID"
            );
            println!(
                "{:<16} {:<10} {:<18}",
                "everyone",
                outbound.everyone.as_str(),
                ""
            );
            for (name, map) in [
                ("audited-payload", &outbound.audited_payload),
                ("partner", &outbound.partner),
            ] {
                for (id, rule) in map {
                    println!(
                        "{:<16} {:<10} {:<18} {}",
                        name,
                        rule.mode.as_str(),
                        &id[..id.len().min(16)],
                        rule.description
                    );
                }
            }
        }
        RuleCommand::Set(RuleSet::Outbound(set)) => {
            match set {
                OutboundRuleSet::Enable => rules.outbound.enabled = true,
                OutboundRuleSet::Disable => rules.outbound.enabled = false,
                OutboundRuleSet::Everyone { mode } => rules.outbound.everyone = mode,
                OutboundRuleSet::Partner(_) => anyhow::bail!(
                    "partner rules need Golem certificates (node descriptors), which this \
                     provider does not support; use `rule set outbound audited-payload` with \
                     an X.509 certificate"
                ),
                OutboundRuleSet::AuditedPayload(CertRuleSet::CertId {
                    cert_id,
                    mode,
                    description,
                }) => {
                    let id = Keystore::load(&Keystore::dir(data_dir))?
                        .resolve_id(&cert_id)
                        .context("add the certificate first (`golem-provider keystore add`)")?;
                    rules
                        .outbound
                        .audited_payload
                        .insert(id, CertRule { mode, description });
                }
                OutboundRuleSet::AuditedPayload(CertRuleSet::ImportCert {
                    file,
                    mode,
                    description,
                }) => {
                    let added = Keystore::add_file(&Keystore::dir(data_dir), &file, now())?;
                    for certificate in added {
                        rules.outbound.audited_payload.insert(
                            certificate.id(),
                            CertRule {
                                mode,
                                description: description.clone(),
                            },
                        );
                    }
                }
            }
            rules.save(data_dir)?;
            println!(
                "outbound rules saved to {}",
                RulesConfig::path(data_dir).display()
            );
        }
    }
    Ok(())
}
