//! The firewall clean-up the plugins leave to the runtime.
//!
//! - When DEL runs without a network namespace (the container's namespace is gone), the
//!   bridge plugin (1.1.1) releases the address but skips its masquerade teardown,
//!   leaving a `CNI-<hash>` chain in the nat table and the POSTROUTING rule that jumps to
//!   it. The rule carries the comment `name: "<network>" id: "<container>"` (the
//!   plugins' `utils.FormatComment`), which is how it is found here.
//! - The chains the firewall and portmap plugins make once per network namespace and
//!   never remove (`CNI-FORWARD`, `CNI-ADMIN`; `CNI-HOSTPORT-DNAT`, `-SETMARK`, `-MASQ`)
//!   go with `vessel system reset` of the last root, when no container's rule is left
//!   in them ([`remove_idle_shared_chains`]).

use std::process::Command;

use serde_json::Value;

use crate::error::{NetError, Result};

fn run(program: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(program)
        .args(args)
        .env("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
        .output()
        .map_err(|source| NetError::Exec {
            program: program.into(),
            source,
        })?;
    if !out.status.success() {
        return Err(NetError::Command {
            program: program.to_string(),
            args: args.join(" "),
            msg: {
                let e = String::from_utf8_lossy(&out.stderr).trim().to_string();
                if e.is_empty() {
                    out.status.to_string()
                } else {
                    e
                }
            },
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The (source, chain) of each `-A POSTROUTING -s SRC ... --comment "<comment>" ... -j CHAIN`
/// line of `iptables -t nat -S POSTROUTING` output that carries `comment`.
fn masquerade_rules(listing: &str, comment_quoted: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for line in listing
        .lines()
        .filter(|l| l.starts_with("-A POSTROUTING") && l.contains(comment_quoted))
    {
        let tokens: Vec<&str> = line.split_whitespace().collect();
        let after = |flag: &str| {
            tokens
                .iter()
                .position(|t| *t == flag)
                .and_then(|i| tokens.get(i + 1))
                .map(|s| s.to_string())
        };
        if let (Some(src), Some(chain)) = (after("-s"), after("-j")) {
            if chain.starts_with("CNI-") {
                out.push((src, chain));
            }
        }
    }
    out
}

/// Removes the masquerade rule and chain the bridge plugin made for `container_id` on
/// `network`, for each address family of the cached `result` (IPv4 when unknown).
/// Nothing to remove is success.
pub(crate) fn teardown_masquerade(network: &str, container_id: &str, result: Option<&Value>) -> Result<()> {
    let comment = format!("name: \"{network}\" id: \"{container_id}\"");
    // How iptables -S prints it: inside double quotes, with the inner quotes escaped.
    let quoted = format!("\"{}\"", comment.replace('"', "\\\""));
    let addresses: Vec<&str> = result
        .and_then(|r| r.get("ips"))
        .and_then(Value::as_array)
        .map(|ips| ips.iter().filter_map(|i| i.get("address")?.as_str()).collect())
        .unwrap_or_default();
    let mut programs = Vec::new();
    if addresses.is_empty() || addresses.iter().any(|a| !a.contains(':')) {
        programs.push("iptables");
    }
    if addresses.iter().any(|a| a.contains(':')) {
        programs.push("ip6tables");
    }
    for program in programs {
        let listing = run(program, &["-w", "-t", "nat", "-S", "POSTROUTING"])?;
        for (src, chain) in masquerade_rules(&listing, &quoted) {
            run(
                program,
                &[
                    "-w",
                    "-t",
                    "nat",
                    "-D",
                    "POSTROUTING",
                    "-s",
                    &src,
                    "-m",
                    "comment",
                    "--comment",
                    &comment,
                    "-j",
                    &chain,
                ],
            )?;
            // The chain may be shared by no other rule: flush and delete it.
            let _ = run(program, &["-w", "-t", "nat", "-F", &chain]);
            let _ = run(program, &["-w", "-t", "nat", "-X", &chain]);
        }
    }
    Ok(())
}

/// Splits one line of `iptables -S` into its words: white space separates them, double
/// quotes group them (with `\"` and `\\` escapes inside).
fn split_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut in_word = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                quoted = !quoted;
                in_word = true;
            }
            '\\' if quoted => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            c if c.is_whitespace() && !quoted => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            c => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    words
}

/// One table's chains and rules as `iptables -S` lists them: (chains made with `-N`,
/// rules as (chain, words after the chain)).
fn parse_listing(listing: &str) -> (Vec<String>, Vec<Rule>) {
    let mut chains = Vec::new();
    let mut rules = Vec::new();
    for line in listing.lines() {
        let w = split_words(line);
        match (w.first().map(String::as_str), w.get(1)) {
            (Some("-N"), Some(c)) => chains.push(c.clone()),
            (Some("-A"), Some(c)) => rules.push((c.clone(), w[2..].to_vec())),
            _ => {}
        }
    }
    (chains, rules)
}

/// The target (`-j X`) of a rule's words.
fn target(words: &[String]) -> Option<&str> {
    words
        .iter()
        .position(|w| w == "-j")
        .and_then(|i| words.get(i + 1))
        .map(String::as_str)
}

/// One rule of a listing: its chain and the words after the chain.
type Rule = (String, Vec<String>);

/// A group of shared chains of one table and when they hold no container's rule.
struct Shared {
    table: &'static str,
    chains: &'static [&'static str],
    /// Whether the rules of the group (chain, words) are only the plugins' fixed ones.
    idle: fn(&[Rule]) -> bool,
}

const SHARED: &[Shared] = &[
    // The firewall plugin: CNI-FORWARD holds the jump to CNI-ADMIN and, per container,
    // an accept of its address; CNI-ADMIN is for the administrator's own rules.
    Shared {
        table: "filter",
        chains: &["CNI-FORWARD", "CNI-ADMIN"],
        idle: |rules| {
            rules
                .iter()
                .all(|(c, w)| c == "CNI-FORWARD" && target(w) == Some("CNI-ADMIN"))
        },
    },
    // portmap: CNI-HOSTPORT-DNAT holds one jump per container with published ports;
    // SETMARK and MASQ hold one fixed rule each.
    Shared {
        table: "nat",
        chains: &["CNI-HOSTPORT-DNAT", "CNI-HOSTPORT-SETMARK", "CNI-HOSTPORT-MASQ"],
        idle: |rules| rules.iter().all(|(c, _)| c != "CNI-HOSTPORT-DNAT"),
    },
];

/// Removes the chains the firewall and portmap plugins share between all containers of
/// the caller's network namespace, with the rules of the built-in chains that jump to
/// them, when no container's rule is left in them (as after the last root's reset).
/// Returns the chains removed, as `PROGRAM table/chain`. IPv4 and, where ip6tables
/// works, IPv6; nothing when iptables is not installed.
///
/// Errors: [`NetError::Exec`], [`NetError::Command`] from iptables.
pub(crate) fn remove_idle_shared_chains() -> Result<Vec<String>> {
    let mut removed = Vec::new();
    for program in ["iptables", "ip6tables"] {
        for group in SHARED {
            let listing = match run(program, &["-w", "-t", group.table, "-S"]) {
                Ok(l) => l,
                // No iptables at all: no plugin can have made a chain either.
                Err(NetError::Exec { .. }) => continue,
                Err(e) if program == "iptables" => return Err(e),
                Err(_) => continue,
            };
            let (chains, rules) = parse_listing(&listing);
            let present: Vec<&str> = group
                .chains
                .iter()
                .copied()
                .filter(|c| chains.iter().any(|x| x == c))
                .collect();
            let inside: Vec<Rule> = rules
                .iter()
                .filter(|(c, _)| group.chains.contains(&c.as_str()))
                .cloned()
                .collect();
            if present.is_empty() || !(group.idle)(&inside) {
                continue;
            }
            for (chain, words) in &rules {
                let into_group = target(words).is_some_and(|t| group.chains.contains(&t));
                if into_group && !group.chains.contains(&chain.as_str()) {
                    let mut args = vec!["-w", "-t", group.table, "-D", chain.as_str()];
                    args.extend(words.iter().map(String::as_str));
                    run(program, &args)?;
                }
            }
            for c in &present {
                run(program, &["-w", "-t", group.table, "-F", c])?;
            }
            for c in &present {
                run(program, &["-w", "-t", group.table, "-X", c])?;
                removed.push(format!("{program} {}/{c}", group.table));
            }
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listings() {
        let l = "-P FORWARD ACCEPT\n-N CNI-ADMIN\n-N CNI-FORWARD\n\
            -A FORWARD -m comment --comment \"CNI firewall plugin rules\" -j CNI-FORWARD\n\
            -A CNI-FORWARD -m comment --comment \"CNI firewall plugin admin overrides\" -j CNI-ADMIN\n";
        let (chains, rules) = parse_listing(l);
        assert_eq!(chains, ["CNI-ADMIN", "CNI-FORWARD"]);
        assert_eq!(
            rules[0],
            (
                "FORWARD".to_string(),
                [
                    "-m",
                    "comment",
                    "--comment",
                    "CNI firewall plugin rules",
                    "-j",
                    "CNI-FORWARD"
                ]
                .map(String::from)
                .to_vec()
            )
        );
        let inside: Vec<_> = rules.iter().filter(|(c, _)| c.starts_with("CNI-")).cloned().collect();
        assert!((SHARED[0].idle)(&inside));
        let busy = vec![(
            "CNI-FORWARD".to_string(),
            ["-s", "10.88.0.2/32", "-j", "ACCEPT"].map(String::from).to_vec(),
        )];
        assert!(!(SHARED[0].idle)(&busy));
        assert_eq!(split_words(r#"a "b \"c\" d" e"#), ["a", "b \"c\" d", "e"]);
    }

    #[test]
    fn finds_rules() {
        let listing = "-P POSTROUTING ACCEPT\n\
            -A POSTROUTING -s 10.88.0.2/32 -m comment --comment \"name: \\\"vessel\\\" id: \\\"abc\\\"\" -j CNI-0123456789abcdef01234567\n\
            -A POSTROUTING -s 10.88.0.3/32 -m comment --comment \"name: \\\"vessel\\\" id: \\\"abd\\\"\" -j CNI-1123456789abcdef01234567\n\
            -A POSTROUTING -m comment --comment \"CNI portfwd requiring masquerade\" -j CNI-HOSTPORT-MASQ\n";
        let quoted = "\"name: \\\"vessel\\\" id: \\\"abc\\\"\"";
        assert_eq!(
            masquerade_rules(listing, quoted),
            vec![("10.88.0.2/32".to_string(), "CNI-0123456789abcdef01234567".to_string())]
        );
    }
}
