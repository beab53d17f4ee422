//! The one piece of firewall clean-up the plugins leave to the runtime: when DEL runs
//! without a network namespace (the container's namespace is gone), the bridge plugin
//! (1.1.1) releases the address but skips its masquerade teardown, leaving a
//! `CNI-<hash>` chain in the nat table and the POSTROUTING rule that jumps to it. The
//! rule carries the comment `name: "<network>" id: "<container>"` (the plugins'
//! `utils.FormatComment`), which is how it is found here.

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

#[cfg(test)]
mod tests {
    use super::*;

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
