//! The provider's commands for its outbound rules, as the original's
//! `ya-provider whitelist|keystore|rule` have them: `whitelist list|add|
//! remove`, `keystore list|add|remove`, `rule list|set outbound …`. Each
//! reads and writes the files in the agent's data dir; a running agent
//! reads them again at its next decision. Output is text, or JSON with
//! `--json` on the list commands.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Subcommand;

use super::keystore::{CertificateFile, CertificateInfo, CertificateKind, Keystore};
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
    /// List the trusted certificates: X.509 (for `audited-payload`) and
    /// Golem certificates (for `partner`), with the shortest unique id
    /// prefixes as the original prints them.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Add certificates: X.509 (PEM, PEM chains or DER files) or Golem
    /// certificates (JSON, verified up to their self-signed root); expired
    /// ones are refused.
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
    /// The rule for requestors whose node descriptor is signed by a chain
    /// holding a Golem certificate of the keystore.
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

/// The original's short ids: each id's shortest prefix of 8, 32 or 128
/// digits (else the whole id) that no other id of the list shares.
pub fn short_ids(ids: &[String]) -> Vec<String> {
    let prefixes = |id: &str| -> Vec<String> {
        let mut lengths: Vec<usize> = [8, 32, 128, id.len()]
            .iter()
            .map(|length| (*length).min(id.len()))
            .collect();
        lengths.dedup();
        lengths
            .into_iter()
            .map(|length| id[..length].to_string())
            .collect()
    };
    let mut uses: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    for id in ids {
        for prefix in prefixes(id) {
            *uses.entry(prefix).or_default() += 1;
        }
    }
    ids.iter()
        .map(|id| {
            let candidates = prefixes(id);
            candidates
                .iter()
                .find(|prefix| uses.get(*prefix) == Some(&1))
                .or(candidates.last())
                .cloned()
                .unwrap_or_default()
        })
        .collect()
}

/// The rules set on certificate `id`, as the original names them.
fn rules_of(rules: &RulesConfig, id: &str) -> String {
    let mut names = Vec::new();
    if rules.outbound.partner.contains_key(id) {
        names.push("Outbound-Partner");
    }
    if rules.outbound.audited_payload.contains_key(id) {
        names.push("Outbound-AuditedPayload");
    }
    names.join(" | ")
}

fn print_certificates(infos: &[CertificateInfo], rules: &RulesConfig) {
    let ids: Vec<String> = infos.iter().map(|info| info.id.clone()).collect();
    println!(
        "{:<10} {:<6} {:<21} {:<4} {:<40} RULES",
        "ID", "TYPE", "NOT AFTER", "CA", "SUBJECT"
    );
    for (info, short) in infos.iter().zip(short_ids(&ids)) {
        let row = format!(
            "{:<10} {:<6} {:<21} {:<4} {:<40} {}",
            short,
            info.kind.as_str(),
            info.not_after,
            if info.is_ca { "yes" } else { "no" },
            info.subject,
            rules_of(rules, &info.id)
        );
        println!("{}", row.trim_end());
    }
}

pub fn keystore(data_dir: &Path, command: KeystoreCommand) -> anyhow::Result<()> {
    let dir = Keystore::dir(data_dir);
    match command {
        KeystoreCommand::List { json } => {
            let infos = Keystore::load(&dir)?.infos();
            if json {
                println!("{}", serde_json::to_string_pretty(&infos)?);
            } else {
                print_certificates(&infos, &RulesConfig::load(data_dir)?);
            }
        }
        KeystoreCommand::Add { files } => {
            let rules = RulesConfig::load(data_dir)?;
            // All read (and verified) before any is written.
            let parsed = files
                .iter()
                .map(|file| Keystore::read_file(file, now()))
                .collect::<Result<Vec<_>, _>>()?;
            for (file, parsed) in files.iter().zip(&parsed) {
                Keystore::store(&dir, parsed)?;
                println!("added from {}:", file.display());
                let infos = parsed.infos();
                print_certificates(&infos, &rules);
                for info in infos.iter().filter(|info| info.valid_unix.0 > now()) {
                    println!(
                        "warning: {} certificate {} is not valid before {}",
                        info.kind.as_str(),
                        &info.id[..16],
                        info.not_before
                    );
                }
            }
        }
        KeystoreCommand::Remove { ids } => {
            let mut rules = RulesConfig::load(data_dir)?;
            for id in &ids {
                let removed = Keystore::remove(&dir, id)?;
                rules.outbound.audited_payload.remove(&removed.id);
                rules.outbound.partner.remove(&removed.id);
                println!(
                    "removed {} {} {}",
                    removed.kind.as_str(),
                    &removed.id[..16],
                    removed.subject
                );
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
            let keystore = Keystore::load(&Keystore::dir(data_dir))?;
            for (name, map) in [
                ("audited-payload", &outbound.audited_payload),
                ("partner", &outbound.partner),
            ] {
                let ids: Vec<String> = map.keys().cloned().collect();
                for ((id, rule), short) in map.iter().zip(short_ids(&ids)) {
                    // Without a description, a partner's display name (as the original shows).
                    let described =
                        match (rule.description.is_empty(), keystore.golem_certificate(id)) {
                            (true, Some(certificate)) => {
                                certificate.validated.subject.display_name.clone()
                            }
                            _ => rule.description.clone(),
                        };
                    println!(
                        "{:<16} {:<10} {:<18} {}",
                        name,
                        rule.mode.as_str(),
                        short,
                        described
                    );
                }
            }
        }
        RuleCommand::Set(RuleSet::Outbound(set)) => {
            match set {
                OutboundRuleSet::Enable => rules.outbound.enabled = true,
                OutboundRuleSet::Disable => rules.outbound.enabled = false,
                OutboundRuleSet::Everyone { mode } => rules.outbound.everyone = mode,
                OutboundRuleSet::AuditedPayload(set) => {
                    set_cert_rules(data_dir, &mut rules, CertificateKind::X509, set)?
                }
                OutboundRuleSet::Partner(set) => {
                    set_cert_rules(data_dir, &mut rules, CertificateKind::Golem, set)?
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

/// What each rule takes, and what to say when given the other kind.
fn rule_for(kind: CertificateKind) -> (&'static str, &'static str) {
    match kind {
        CertificateKind::X509 => (
            "audited-payload",
            "audited-payload rules take X.509 certificates (manifest signers); \
             a Golem certificate goes to `rule set outbound partner`",
        ),
        CertificateKind::Golem => (
            "partner",
            "partner rules take Golem certificates (node descriptor signers); \
             an X.509 certificate goes to `rule set outbound audited-payload`",
        ),
    }
}

/// `rule set outbound audited-payload|partner cert-id|import-cert`: the
/// rule on a certificate of the keystore (of the rule's kind), or on the
/// certificates of a file added to it first.
fn set_cert_rules(
    data_dir: &Path,
    rules: &mut RulesConfig,
    kind: CertificateKind,
    set: CertRuleSet,
) -> anyhow::Result<()> {
    let (name, wrong_kind) = rule_for(kind);
    let dir = Keystore::dir(data_dir);
    let (ids, mode, description) = match set {
        CertRuleSet::CertId {
            cert_id,
            mode,
            description,
        } => {
            let keystore = Keystore::load(&dir)?;
            let id = keystore
                .resolve_id(&cert_id)
                .context("add the certificate first (`golem-provider keystore add`)")?;
            let found = keystore.infos().into_iter().find(|info| info.id == id);
            if found.is_some_and(|info| info.kind != kind) {
                anyhow::bail!("certificate {cert_id}: {wrong_kind}");
            }
            (vec![id], mode, description)
        }
        CertRuleSet::ImportCert {
            file,
            mode,
            description,
        } => {
            let parsed = Keystore::read_file(&file, now())?;
            let matches = matches!(
                (&parsed, kind),
                (CertificateFile::X509(_), CertificateKind::X509)
                    | (CertificateFile::Golem(_), CertificateKind::Golem)
            );
            if !matches {
                anyhow::bail!("{}: {wrong_kind}", file.display());
            }
            Keystore::store(&dir, &parsed)?;
            let ids = parsed.infos().into_iter().map(|info| info.id).collect();
            (ids, mode, description)
        }
    };
    let map = match kind {
        CertificateKind::X509 => &mut rules.outbound.audited_payload,
        CertificateKind::Golem => &mut rules.outbound.partner,
    };
    for id in ids {
        println!("{name} rule {} on {}", mode.as_str(), &id[..16]);
        map.insert(
            id,
            CertRule {
                mode,
                description: description.clone(),
            },
        );
    }
    Ok(())
}
