//! The configuration is documented completely (OPS-02): `.env.example` lists exactly the
//! variables the services read, and `docs/configuration.md` is generated from it. The alert
//! rules (OBS-05) name only metrics the code emits, so a renamed metric cannot silence a page,
//! and each names a runbook that exists and is in the on-call's index.
//! Regenerate the reference with `BOURSE_UPDATE_DOCS=1 cargo test -p bourse --test configuration`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use bourse::testing::repo_file;
use std::collections::BTreeSet;

use service_kit::{CommonConfig, Env};

/// (section, variable, default, description) for each variable in `.env.example`.
fn documented() -> Vec<(String, String, String, String)> {
    let text = std::fs::read_to_string(repo_file(".env.example")).unwrap();
    let mut section = String::new();
    let mut description: Vec<String> = Vec::new();
    let mut entries = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if let Some(title) = line.strip_prefix("# ----") {
            section = title.trim_matches([' ', '-']).to_owned();
            description.clear();
            continue;
        }
        let uncommented = line.trim_start_matches('#').trim();
        if let Some((key, value)) = uncommented.split_once('=')
            && !key.is_empty()
            && key
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
        {
            entries.push((
                section.clone(),
                key.to_owned(),
                value.to_owned(),
                description.join(" "),
            ));
            continue;
        }
        if line.is_empty() {
            description.clear();
        } else if !section.is_empty() {
            description.push(uncommented.to_owned());
        }
    }
    entries
}

#[test]
fn env_example_lists_exactly_the_variables_the_code_reads() {
    let mut env = Env::from_pairs(Vec::<(String, String)>::new());
    let _ = CommonConfig::read(&mut env);
    let _ = bourse::local_datastores::Settings::read(&mut env);
    // Every service's settings, as the binary reads them.
    for spec in &bourse::SERVICES {
        let _ = (spec.service.read)(&mut env);
    }
    let _ = secrets::settings::vault_settings(&mut env);
    let _ = secrets::settings::aws_settings(&mut env);
    let _ = secrets::settings::refresh_interval(&mut env);
    let read: BTreeSet<String> = env.variables_read().map(str::to_owned).collect();
    let documented: BTreeSet<String> = documented().into_iter().map(|(_, key, _, _)| key).collect();
    let undocumented: Vec<_> = read.difference(&documented).collect();
    let stale: Vec<_> = documented.difference(&read).collect();
    assert!(
        undocumented.is_empty(),
        "read but not in .env.example: {undocumented:?}"
    );
    assert!(
        stale.is_empty(),
        "in .env.example but never read: {stale:?}"
    );
}

#[test]
fn the_configuration_reference_is_generated_from_env_example() {
    let mut doc = String::from(
        "# Configuration reference\n\n\
         Generated from `.env.example` by `crates/bourse/tests/configuration.rs`; do not edit by hand.\n\
         Regenerate with `BOURSE_UPDATE_DOCS=1 cargo test -p bourse --test configuration`.\n\n\
         Every setting is an environment variable (a `.env` file is read in development). All problems\n\
         are reported together at start-up and the process exits with status 2.\n",
    );
    let mut current = String::new();
    for (section, key, default, description) in documented() {
        if section != current {
            doc.push_str(&format!(
                "\n## {section}\n\n| variable | default | meaning |\n|---|---|---|\n"
            ));
            current = section;
        }
        let default = if default.is_empty() {
            "—".to_owned()
        } else {
            format!("`{default}`")
        };
        let description = description.replace('|', "\\|");
        doc.push_str(&format!("| `{key}` | {default} | {description} |\n"));
    }
    let path = repo_file("docs/configuration.md");
    if std::env::var_os("BOURSE_UPDATE_DOCS").is_some() {
        std::fs::write(&path, &doc).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert_eq!(
        committed, doc,
        "docs/configuration.md is stale; regenerate it (see the module doc)"
    );
}

/// Every metric name the code registers with `counter!`, `gauge!` or `histogram!`.
fn emitted_metrics() -> BTreeSet<String> {
    fn walk(dir: &std::path::Path, names: &mut BTreeSet<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, names);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                for macro_call in ["counter!(", "gauge!(", "histogram!("] {
                    for (at, _) in text.match_indices(macro_call) {
                        let rest = text[at + macro_call.len()..].trim_start();
                        if let Some(quoted) = rest.strip_prefix('"') {
                            let name = quoted.split('"').next().unwrap();
                            names.insert(name.to_owned());
                        }
                    }
                }
            }
        }
    }
    let mut names = BTreeSet::new();
    walk(&repo_file("crates"), &mut names);
    names
}

#[test]
fn alert_rules_name_only_metrics_the_code_emits() {
    let emitted = emitted_metrics();
    assert!(emitted.contains("http_requests_total"), "{emitted:?}");
    let rules = std::fs::read_to_string(repo_file("deploy/prometheus/alerts.yml")).unwrap();
    // Metric names are the identifiers with an underscore that are not called like functions
    // (histogram_quantile); label names here have none.
    let mut named = BTreeSet::new();
    let mut identifier = String::new();
    for (at, c) in rules.char_indices().chain([(rules.len(), ' ')]) {
        if c.is_ascii_alphanumeric() || c == '_' {
            identifier.push(c);
            continue;
        }
        let is_call = rules[at..].trim_start().starts_with('(');
        if identifier.contains('_') && !is_call && !identifier.starts_with('_') {
            named.insert(std::mem::take(&mut identifier));
        }
        identifier.clear();
    }
    let unknown: Vec<_> = named
        .iter()
        .filter(|name| {
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| name.strip_suffix(suffix))
                .unwrap_or(name);
            !emitted.contains(*name) && !emitted.contains(base)
        })
        .collect();
    assert!(
        named.contains("settlement_reconciliation_ok"),
        "the rules were read: {named:?}"
    );
    assert!(
        unknown.is_empty(),
        "alert rules name metrics nothing emits: {unknown:?}"
    );
}

#[test]
fn every_alert_names_a_runbook_that_exists_and_the_on_calls_index_lists_it() {
    let rules = std::fs::read_to_string(repo_file("deploy/prometheus/alerts.yml")).unwrap();
    let index = std::fs::read_to_string(repo_file("docs/runbooks/incident-response.md")).unwrap();
    let value = |line: &str, key: &str| {
        line.trim()
            .strip_prefix(key)
            .map(|rest| rest.trim().to_owned())
    };
    let alerts: Vec<String> = rules
        .lines()
        .filter_map(|line| value(line, "- alert:"))
        .collect();
    let runbooks: Vec<String> = rules
        .lines()
        .filter_map(|line| value(line, "runbook:"))
        .collect();
    assert!(
        alerts.contains(&"BourseRiskNotDecidingFunds".to_owned()),
        "the rules were read: {alerts:?}"
    );
    assert_eq!(
        alerts.len(),
        runbooks.len(),
        "every alert names one runbook"
    );

    let missing: Vec<_> = runbooks
        .iter()
        .filter(|path| !repo_file(path).is_file())
        .collect();
    assert!(
        missing.is_empty(),
        "runbooks that do not exist: {missing:?}"
    );
    let unlisted: Vec<_> = alerts
        .iter()
        .filter(|alert| !index.contains(alert.as_str()))
        .collect();
    assert!(
        unlisted.is_empty(),
        "alerts docs/runbooks/incident-response.md does not list: {unlisted:?}"
    );
}
