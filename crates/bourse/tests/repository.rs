//! The repository stands on its own: a forker gets these files and nothing else. No tracked file
//! points at a document the repository does not hold — the team's planning documents, a
//! `docs/….md` that is not there, an ADR number without its file — or at a tracker issue
//! ("issue [3]", "since [4]"), which means nothing outside the team that filed it. And every
//! `cargo run` a file tells a reader to type names what it runs: the workspace builds two
//! binaries (`bourse`, `loadgen`), so a bare `cargo run` refuses to start.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use bourse::testing::repo_file;

/// This file: it spells out what it looks for.
const ITSELF: &str = "crates/bourse/tests/repository.rs";

/// The tracked text files, as git lists them (but this one).
fn tracked() -> Vec<(String, String)> {
    let root = repo_file("");
    let listed = std::process::Command::new("git")
        .args(["ls-files", "-z"])
        .current_dir(&root)
        .output()
        .expect("git lists the tracked files");
    assert!(listed.status.success(), "git ls-files failed");
    String::from_utf8(listed.stdout)
        .unwrap()
        .split('\0')
        .filter(|path| !path.is_empty() && *path != "Cargo.lock" && *path != ITSELF)
        .filter_map(|path| {
            let text = std::fs::read_to_string(root.join(path)).ok()?;
            Some((path.to_owned(), text))
        })
        .collect()
}

/// `docs/….md` paths named in `text` (up to the first character a path does not hold).
fn named_documents(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("docs/") {
        let tail = &rest[at..];
        let path: String = tail
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '.' | '_' | '-'))
            .collect();
        let path = path.trim_end_matches('.').to_owned();
        if path.ends_with(".md") {
            found.push(path);
        }
        rest = &tail[5..];
    }
    found
}

/// `[N]` right after one of the words that introduce a tracker reference.
fn tracker_references(text: &str) -> Vec<String> {
    const LEADS: &[&str] = &[
        "issue", "issues", "since", "with", "from", "alerting", "and",
    ];
    let mut found = Vec::new();
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        for pair in words.windows(2) {
            let lead = pair[0].trim_start_matches(['(', '—']).to_ascii_lowercase();
            let number = pair[1].trim_end_matches([',', ')', ';', ':', '.']);
            let bracketed = number.len() > 2
                && number.starts_with('[')
                && number.ends_with(']')
                && number[1..number.len() - 1]
                    .chars()
                    .all(|c| c.is_ascii_digit());
            if bracketed && LEADS.contains(&lead.as_str()) {
                found.push(line.trim().to_owned());
            }
        }
    }
    found
}

/// `cargo run` commands in `text` that name no package or binary (`-p`, `--package`, `--bin`).
/// A command is `cargo run` followed by a flag; its flags end at ` -- ` or the end of the
/// command; prose that only names `cargo run` is not one.
fn unnamed_cargo_runs(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    for line in text.lines() {
        let mut rest = line;
        while let Some(at) = rest.find("cargo run ") {
            let after = &rest[at + "cargo run ".len()..];
            let flags = after
                .split(" -- ")
                .next()
                .unwrap_or_default()
                .split(['`', '"', ')', ';', '&', '|'])
                .next()
                .unwrap_or_default();
            let named = flags.split_whitespace().any(|flag| {
                matches!(flag, "-p" | "--package" | "--bin") || flag.starts_with("--bin=")
            });
            if flags.starts_with('-') && !named {
                found.push(line.trim().to_owned());
            }
            rest = after;
        }
    }
    found
}

/// Every line of a tracked file that `find` picks out of its text, prefixed by the file's path.
fn lines_found_by(find: fn(&str) -> Vec<String>) -> Vec<String> {
    tracked()
        .into_iter()
        .flat_map(|(path, text)| {
            find(&text)
                .into_iter()
                .map(move |line| format!("{path}: {line}"))
        })
        .collect()
}

#[test]
fn every_cargo_run_names_what_it_runs() {
    let problems = lines_found_by(unnamed_cargo_runs);
    assert!(
        problems.is_empty(),
        "the workspace has two binaries; say `cargo run -p bourse` (or `-p loadgen`):\n{}",
        problems.join("\n")
    );
}

#[test]
fn no_file_names_a_document_the_repository_does_not_hold() {
    let outside = ["DESIGN", "TOOLCHAIN", "CHECKLIST"].map(|name| format!("{name}.md"));
    let mut problems = Vec::new();
    for (path, text) in tracked() {
        for name in &outside {
            if text.contains(name.as_str()) {
                problems.push(format!(
                    "{path}: names {name}, which is not in the repository"
                ));
            }
        }
        for document in named_documents(&text) {
            if !repo_file(&document).exists() {
                problems.push(format!("{path}: names {document}, which does not exist"));
            }
        }
        let mut rest = text.as_str();
        while let Some(at) = rest.find("ADR 00") {
            let number: String = rest[at + 4..].chars().take(4).collect();
            let exists = std::fs::read_dir(repo_file("docs/adr"))
                .unwrap()
                .filter_map(Result::ok)
                .any(|entry| entry.file_name().to_string_lossy().starts_with(&number));
            if !exists {
                problems.push(format!("{path}: names ADR {number}, which does not exist"));
            }
            rest = &rest[at + 6..];
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn no_file_names_a_tracker_issue() {
    let problems = lines_found_by(tracker_references);
    assert!(
        problems.is_empty(),
        "say what a thing does and why, not which issue built it:\n{}",
        problems.join("\n")
    );
}

#[test]
fn the_checks_find_what_they_look_for() {
    assert_eq!(
        tracker_references("built in issue [3], and since [4]; not ids[4] or w[0]"),
        [
            "built in issue [3], and since [4]; not ids[4] or w[0]",
            "built in issue [3], and since [4]; not ids[4] or w[0]"
        ]
    );
    assert_eq!(
        named_documents("see docs/api-keys.md. And `docs/adr/`"),
        ["docs/api-keys.md"]
    );
    assert_eq!(
        unnamed_cargo_runs(
            "cargo run --release -- serve all\n\
             `cargo run -q -- \"$@\"`, cargo run -p bourse -- demo seed\n\
             cargo run --release -p loadgen -- --rate 10 and cargo run --bin=bourse -- probe\n\
             `cargo run` hands it on; cargo run as well"
        ),
        [
            "cargo run --release -- serve all",
            "`cargo run -q -- \"$@\"`, cargo run -p bourse -- demo seed"
        ]
    );
}
