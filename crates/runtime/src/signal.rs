//! Signal names and numbers as `kill` accepts them: "TERM", "SIGTERM", "15" (kill(1),
//! runc's `kill` command).

use crate::error::{Error, Result};

const NAMES: &[(&str, i32)] = &[
    ("HUP", libc::SIGHUP),
    ("INT", libc::SIGINT),
    ("QUIT", libc::SIGQUIT),
    ("ILL", libc::SIGILL),
    ("TRAP", libc::SIGTRAP),
    ("ABRT", libc::SIGABRT),
    ("IOT", libc::SIGIOT),
    ("BUS", libc::SIGBUS),
    ("FPE", libc::SIGFPE),
    ("KILL", libc::SIGKILL),
    ("USR1", libc::SIGUSR1),
    ("SEGV", libc::SIGSEGV),
    ("USR2", libc::SIGUSR2),
    ("PIPE", libc::SIGPIPE),
    ("ALRM", libc::SIGALRM),
    ("TERM", libc::SIGTERM),
    ("STKFLT", libc::SIGSTKFLT),
    ("CHLD", libc::SIGCHLD),
    ("CONT", libc::SIGCONT),
    ("STOP", libc::SIGSTOP),
    ("TSTP", libc::SIGTSTP),
    ("TTIN", libc::SIGTTIN),
    ("TTOU", libc::SIGTTOU),
    ("URG", libc::SIGURG),
    ("XCPU", libc::SIGXCPU),
    ("XFSZ", libc::SIGXFSZ),
    ("VTALRM", libc::SIGVTALRM),
    ("PROF", libc::SIGPROF),
    ("WINCH", libc::SIGWINCH),
    ("IO", libc::SIGIO),
    ("POLL", libc::SIGPOLL),
    ("PWR", libc::SIGPWR),
    ("SYS", libc::SIGSYS),
];

/// Parses a signal given as a name (with or without "SIG", any case), as "RTMIN+N",
/// or as a number from 1 to 64.
///
/// Errors: [`Error::Invalid`] naming the text.
pub fn parse(text: &str) -> Result<i32> {
    let bad = || {
        Error::Invalid(format!(
            "unknown signal {text:?}: use a name like TERM or KILL, or a number from 1 to 64"
        ))
    };
    if let Ok(n) = text.parse::<i32>() {
        return if (1..=64).contains(&n) { Ok(n) } else { Err(bad()) };
    }
    let upper = text.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    if let Some(off) = name.strip_prefix("RTMIN+") {
        let n: i32 = off.parse().map_err(|_| bad())?;
        let sig = libc::SIGRTMIN() + n;
        return if n >= 0 && sig <= libc::SIGRTMAX() {
            Ok(sig)
        } else {
            Err(bad())
        };
    }
    if name == "RTMIN" {
        return Ok(libc::SIGRTMIN());
    }
    if name == "RTMAX" {
        return Ok(libc::SIGRTMAX());
    }
    NAMES.iter().find(|(n, _)| *n == name).map(|(_, s)| *s).ok_or_else(bad)
}

/// The signals a foreground `run`/`exec` forwards to the container process: all but
/// those the kernel will not deliver or that are about our own children.
pub fn forwarded() -> impl Iterator<Item = i32> {
    (1..=libc::SIGRTMAX()).filter(|s| ![libc::SIGKILL, libc::SIGSTOP, libc::SIGCHLD, 32, 33].contains(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_numbers() {
        assert_eq!(parse("TERM").unwrap(), 15);
        assert_eq!(parse("sigkill").unwrap(), 9);
        assert_eq!(parse("SIGUSR1").unwrap(), 10);
        assert_eq!(parse("2").unwrap(), 2);
        assert_eq!(parse("RTMIN+1").unwrap(), libc::SIGRTMIN() + 1);
        assert!(parse("0").is_err());
        assert!(parse("65").is_err());
        assert!(parse("NOPE").is_err());
    }
}
