//! The README and the design document promise only what exists: every `vessel` command
//! they name (in code blocks and in inline code) is one the built binary knows, and
//! every document they point to is in the repository.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read(rel: &str) -> String {
    let p = workspace().join(rel);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
}

/// The code in a Markdown text: the lines of fenced blocks and the inline code spans.
fn code(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut fenced = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
        } else if fenced {
            out.push(line.to_string());
        } else {
            out.extend(line.split('`').skip(1).step_by(2).map(str::to_string));
        }
    }
    out
}

/// `vessel WORD [WORD]` as written in the code of a text: the global flags (`--root DIR`)
/// and their values are skipped, and a word counts only when it is a lowercase command name.
fn commands(text: &str) -> BTreeSet<Vec<String>> {
    let mut found = BTreeSet::new();
    for line in code(text) {
        let words: Vec<&str> = line
            .split(|c: char| c.is_whitespace() || c == '`' || c == ';' || c == '|')
            .filter(|w| !w.is_empty())
            .collect();
        for (i, w) in words.iter().enumerate() {
            if *w != "vessel" {
                continue;
            }
            let mut rest = words[i + 1..].iter().peekable();
            // Global flags with a value: `--root DIR`, `--runroot DIR`.
            while let Some(f) = rest.peek().copied() {
                if f.starts_with("--") {
                    rest.next();
                    if !f.contains('=') {
                        rest.next();
                    }
                } else {
                    break;
                }
            }
            let is_cmd =
                |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_lowercase() || c == '-') && !s.starts_with('-');
            let mut cmd = Vec::new();
            for s in rest.take(2) {
                let s = s.split('\'').next().unwrap_or_default();
                let s = s.trim_end_matches([',', '.', ':']);
                if !is_cmd(s) {
                    break;
                }
                cmd.push(s.to_string());
            }
            if !cmd.is_empty() {
                found.insert(cmd);
            }
        }
    }
    found
}

fn knows(args: &[String]) -> bool {
    Command::new(env!("CARGO_BIN_EXE_vessel"))
        .args(args)
        .arg("--help")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

#[test]
fn every_vessel_command_in_the_readme_and_design_exists() {
    let mut missing = Vec::new();
    for doc in ["README.md", "docs/design.md"] {
        for cmd in commands(&read(doc)) {
            if !knows(&cmd[..1]) {
                missing.push(format!("{doc}: vessel {}", cmd[0]));
                continue;
            }
            // A second word is a subcommand only where the first has subcommands.
            if cmd.len() == 2 {
                let help = Command::new(env!("CARGO_BIN_EXE_vessel"))
                    .args([&cmd[0], "--help"])
                    .output()
                    .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                    .unwrap_or_default();
                if help.contains("Commands:") && !knows(&cmd) {
                    missing.push(format!("{doc}: vessel {}", cmd.join(" ")));
                }
            }
        }
    }
    assert!(missing.is_empty(), "documented but not known to vessel: {missing:?}");
}

#[test]
fn the_documents_the_readme_points_to_exist() {
    let readme = read("README.md");
    assert!(
        !readme.contains("DESIGN.md"),
        "README.md names DESIGN.md, which is not in the repository: point to docs/design.md"
    );
    for word in readme.split(|c: char| c.is_whitespace() || "`()[],".contains(c)) {
        let word = word.trim_end_matches(['.', ':']);
        if (word.starts_with("docs/") || word.starts_with("bench/") || word.starts_with("scripts/"))
            && word.len() > 6
            && !word.contains('<')
        {
            assert!(
                workspace().join(word).exists(),
                "README.md points to {word}, which does not exist"
            );
        }
    }
}

#[test]
fn the_parser_finds_commands_in_prose_and_code() {
    let found = commands("run `vessel serve`'s API\n```\nvessel --root /tmp/x network create n\n```");
    assert!(found.contains(&vec!["serve".to_string()]), "{found:?}");
    assert!(
        found.contains(&vec!["network".to_string(), "create".to_string()]),
        "{found:?}"
    );
}
