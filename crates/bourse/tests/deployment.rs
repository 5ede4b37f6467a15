//! The deployment files know every service of `bourse::SERVICES` (OPS-05): compose runs it,
//! Prometheus scrapes it, Kubernetes deploys it (manifest, kustomization, the mTLS certificate's
//! names) and `.env.example` documents where it listens and how callers find it. A service in
//! the list but missing from a file fails this test, and so does a file naming a service the
//! binary no longer has.
//!
//! What is missing is derived, not written by hand: `BOURSE_UPDATE_DOCS=1 cargo test -p bourse
//! --test deployment` adds it from the templates in `tools/scaffold/deploy/` (filled in from the
//! crate's `launch::Spec`: name, port and its variable, URL variable, upstreams), then
//! `BOURSE_UPDATE_DOCS=1 cargo test -p bourse --test configuration` regenerates the
//! configuration reference. Existing entries are checked, never rewritten: they are tuned by
//! hand (orders' peers, the gateway's public port…).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;

use bourse::testing::repo_file;

/// What the deployment files need to know of a service, from its crate's spec.
struct Service {
    name: &'static str,
    port: u16,
    port_variable: &'static str,
    url_variable: Option<&'static str>,
    upstreams: Vec<(&'static str, u16)>,
    routed_by_gateway: bool,
}

fn services() -> Vec<Service> {
    let port_of = |name: &str| {
        bourse::SERVICES
            .iter()
            .find(|spec| spec.service.name == name)
            .map(|spec| spec.service.default_port)
            .unwrap_or_else(|| panic!("{name} is an upstream but not in SERVICES"))
    };
    bourse::SERVICES
        .iter()
        .map(|spec| Service {
            name: spec.service.name,
            port: spec.service.default_port,
            port_variable: spec.service.port_variable,
            url_variable: spec.service.url_variable,
            upstreams: spec
                .service
                .upstreams
                .iter()
                .map(|upstream| (*upstream, port_of(upstream)))
                .collect(),
            routed_by_gateway: gateway::route_table::UPSTREAM_NAMES.contains(&spec.service.name),
        })
        .collect()
}

/// A template of `tools/scaffold/deploy/`, filled in for one service.
fn template(file: &str, service: &Service) -> String {
    let depends_on = if service.upstreams.is_empty() {
        "\n      migrate:\n        condition: service_completed_successfully".to_owned()
    } else {
        service
            .upstreams
            .iter()
            .map(|(name, _)| format!("\n      {name}:\n        condition: service_healthy"))
            .collect()
    };
    let egress = if service.upstreams.is_empty() {
        " []".to_owned()
    } else {
        service
            .upstreams
            .iter()
            .map(|(name, port)| {
                format!(
                    "\n    - to:\n        - podSelector:\n            matchLabels:\n              \
                     app.kubernetes.io/name: {name}\n      ports:\n        - port: {port}\n          \
                     protocol: TCP"
                )
            })
            .collect()
    };
    std::fs::read_to_string(repo_file(&format!("tools/scaffold/deploy/{file}")))
        .unwrap()
        .replace("{{name}}", service.name)
        .replace("{{port}}", &service.port.to_string())
        .replace("{{port_variable}}", service.port_variable)
        .replace("{{url_variable}}", service.url_variable.unwrap_or_default())
        .replace("{{depends_on}}", &depends_on)
        .replace("{{egress}}", &egress)
}

/// A repository file read once: checked, amended in memory, written only when updating.
struct File {
    path: String,
    text: String,
    amended: bool,
}

impl File {
    fn read(path: &str) -> Self {
        Self {
            path: path.to_owned(),
            text: std::fs::read_to_string(repo_file(path)).unwrap_or_default(),
            amended: false,
        }
    }

    fn has_line(&self, line: &str) -> bool {
        self.text.lines().any(|l| l == line)
    }

    /// Inserts `text` before the one line equal to `anchor`.
    fn insert_before(&mut self, anchor: &str, text: &str) {
        let at = self
            .text
            .find(&format!("\n{anchor}\n"))
            .unwrap_or_else(|| panic!("{}: no line {anchor:?} to insert before", self.path))
            + 1;
        self.text.insert_str(at, text);
        self.amended = true;
    }

    /// Inserts `line` after the last line `belongs` accepts.
    fn insert_after_last(&mut self, belongs: impl Fn(&str) -> bool, line: &str) {
        let mut at = None;
        let mut offset = 0;
        for l in self.text.split_inclusive('\n') {
            offset += l.len();
            if belongs(l.trim_end_matches('\n')) {
                at = Some(offset);
            }
        }
        let at = at.unwrap_or_else(|| panic!("{}: nowhere to add {line:?}", self.path));
        self.text.insert_str(at, &format!("{line}\n"));
        self.amended = true;
    }

    fn append(&mut self, text: &str) {
        self.text.push_str(text);
        self.amended = true;
    }

    fn save(&self) {
        if self.amended {
            std::fs::write(repo_file(&self.path), &self.text).unwrap();
        }
    }
}

/// The lines of compose's service `name`: its header and everything indented under it.
fn compose_block<'a>(compose: &'a str, name: &str) -> Option<&'a str> {
    let start = compose.find(&format!("\n  {name}:\n"))? + 1;
    let rest = &compose[start..];
    let mut end = 0;
    for (i, line) in rest.split_inclusive('\n').enumerate() {
        if i > 0 && !line.trim().is_empty() && !line.starts_with("    ") {
            break;
        }
        end += line.len();
    }
    Some(&rest[..end])
}

/// The line of compose that follows the platform's services: new ones go before it.
const COMPOSE_AFTER_THE_SERVICES: &str =
    "  # --- Observability (OPS-04): versions pinned; configuration under deploy/. ---";

/// Prometheus's scrape targets (`host:port` lines of the one static list).
fn scrape_targets(prometheus: &str) -> BTreeSet<String> {
    prometheus
        .lines()
        .filter_map(|line| line.strip_prefix("          - "))
        .map(str::to_owned)
        .collect()
}

fn is_scrape_target(line: &str) -> bool {
    line.strip_prefix("          - ")
        .is_some_and(|target| target.contains(':'))
}

/// The names of compose's services that run a Bourse target (`command: ["serve", "<name>"]`).
fn composed_targets(compose: &str) -> BTreeSet<String> {
    compose
        .lines()
        .filter_map(|line| line.trim().strip_prefix("command: [\"serve\", \""))
        .filter_map(|rest| rest.strip_suffix("\"]"))
        .map(str::to_owned)
        .collect()
}

#[test]
fn every_service_is_in_compose_prometheus_kubernetes_and_env_example() {
    let update = std::env::var_os("BOURSE_UPDATE_DOCS").is_some();
    let mut compose = File::read("docker-compose.yml");
    let mut prometheus = File::read("deploy/prometheus/prometheus.yml");
    let mut kustomization = File::read("deploy/k8s/base/kustomization.yaml");
    let mut certificate = File::read("deploy/k8s/components/mtls/certificate.yaml");
    let mut env_example = File::read(".env.example");
    let mut manifests = Vec::new();
    // What is missing (derivable) and what is wrong (fixed by hand: an entry that exists but
    // disagrees with the spec is someone's tuning or a mistake, never overwritten).
    let mut missing = Vec::new();
    let mut wrong = Vec::new();

    let services = services();
    for service in &services {
        let name = service.name;
        let port = service.port;

        match compose_block(&compose.text, name) {
            None => {
                missing.push(format!("docker-compose.yml: service {name}"));
                let block = format!("{}\n", template("compose.yaml", service));
                compose.insert_before(COMPOSE_AFTER_THE_SERVICES, &block);
            }
            Some(block) => {
                for expected in [
                    format!("command: [\"serve\", \"{name}\"]"),
                    format!("{}: \"{port}\"", service.port_variable),
                    format!("\"http://127.0.0.1:{port}/health/ready\""),
                ] {
                    if !block.contains(&expected) {
                        wrong.push(format!("docker-compose.yml: {name} lacks {expected}"));
                    }
                }
            }
        }

        let target = format!("{name}:{port}");
        if !scrape_targets(&prometheus.text).contains(&target) {
            missing.push(format!("deploy/prometheus/prometheus.yml: target {target}"));
            prometheus.insert_after_last(is_scrape_target, &format!("          - {target}"));
        }

        let manifest_path = format!("deploy/k8s/base/{name}.yaml");
        let mut manifest = File::read(&manifest_path);
        if manifest.text.is_empty() {
            missing.push(format!("{manifest_path}: its manifests"));
            manifest.append(&template("k8s.yaml", service));
        } else {
            let mut expected = vec![
                format!("args: [\"serve\", \"{name}\"]"),
                format!("containerPort: {port}"),
                format!("name: {}", service.port_variable),
            ];
            if service.routed_by_gateway {
                // The gateway's egress policy selects its upstreams by this label.
                expected.push("bourse.dev/gateway-upstream: \"true\"".to_owned());
            }
            for expected in expected {
                if !manifest.text.contains(&expected) {
                    wrong.push(format!("{manifest_path}: lacks {expected}"));
                }
            }
        }
        manifests.push(manifest);
        if !kustomization.has_line(&format!("  - {name}.yaml")) {
            missing.push(format!("deploy/k8s/base/kustomization.yaml: {name}.yaml"));
            kustomization.insert_before("  - ingress.yaml", &format!("  - {name}.yaml\n"));
        }
        if !certificate.has_line(&format!("    - {name}")) {
            missing.push(format!(
                "deploy/k8s/components/mtls/certificate.yaml: {name}"
            ));
            certificate.insert_after_last(
                |line| {
                    line.strip_prefix("    - ")
                        .is_some_and(|n| n.chars().all(|c| c.is_ascii_lowercase()))
                },
                &format!("    - {name}"),
            );
        }

        // Where it listens and how callers find it, documented (the configuration test then
        // checks every variable read is, and generates the reference from it).
        let port_line = format!("# {}={port}", service.port_variable);
        let url_line = service
            .url_variable
            .map(|variable| format!("# {variable}=http://127.0.0.1:{port}"));
        let has_section = env_example.has_line(&format!("# ---- {name} ----"));
        if !env_example.has_line(&port_line) {
            if has_section {
                wrong.push(format!(".env.example: section {name} lacks {port_line}"));
            } else {
                missing.push(format!(".env.example: section {name}"));
                env_example.append(&template("env.example", service));
                if url_line.is_some() {
                    env_example.append(&template("env-url.example", service));
                }
            }
        } else if let Some(url_line) = url_line
            && !env_example.has_line(&url_line)
        {
            wrong.push(format!(".env.example: lacks {url_line}"));
        }
    }

    // Nothing deploys or scrapes a service the binary does not have.
    let known: BTreeSet<String> = services.iter().map(|s| s.name.to_owned()).collect();
    let scraped: BTreeSet<String> = scrape_targets(&prometheus.text)
        .iter()
        .filter_map(|target| target.split(':').next().map(str::to_owned))
        .collect();
    for stale in scraped.difference(&known) {
        wrong.push(format!(
            "deploy/prometheus/prometheus.yml: scrapes {stale}, not a service"
        ));
    }
    for stale in composed_targets(&compose.text).difference(&known) {
        wrong.push(format!("docker-compose.yml: serves {stale}, not a service"));
    }

    assert!(
        wrong.is_empty(),
        "deployment files disagree with bourse::SERVICES (fix by hand): {wrong:#?}"
    );
    if update {
        for file in [
            &compose,
            &prometheus,
            &kustomization,
            &certificate,
            &env_example,
        ]
        .into_iter()
        .chain(&manifests)
        {
            file.save();
        }
    } else {
        assert!(
            missing.is_empty(),
            "deployment files lack services of bourse::SERVICES: {missing:#?}\n\
             Add them from tools/scaffold/deploy/ with `BOURSE_UPDATE_DOCS=1 cargo test -p bourse \
             --test deployment`, then regenerate the configuration reference (`… --test configuration`)."
        );
    }
}

#[test]
fn the_templates_fill_in_every_placeholder() {
    // A service with upstreams and one without: every {{…}} is replaced either way.
    let mut service = services().into_iter().next().unwrap();
    for upstreams in [vec![("auth", 8081)], vec![]] {
        service.upstreams = upstreams;
        for file in ["compose.yaml", "k8s.yaml", "env.example", "env-url.example"] {
            let filled = template(file, &service);
            assert!(!filled.contains("{{"), "{file}: {filled}");
            assert!(filled.contains(service.name), "{file}: {filled}");
        }
    }
}
