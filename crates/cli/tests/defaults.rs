//! vessel's own errors and safer defaults, end to end with the real binary: docker's
//! exit codes (125 for every error of vessel's, flag parsing included), set-up errors
//! that reach the command that asked, the default capability set with a working
//! `ping`, and a `host` image that hands no host secret to its containers.

mod instance;
mod run_vessel;

use std::process::Command;

use instance::{have, stderr, stdout, Instance};

#[test]
fn every_error_of_vessels_own_exits_125() {
    if !have(&["umoci", "busybox"]) {
        return;
    }
    let i = Instance::new();
    let img = i.busybox();
    let vol = i.dir.path().join("vol");
    std::fs::create_dir(&vol).unwrap();
    // /proc refuses mkdir (ENOENT): a volume target that cannot be made is vessel's
    // error, not a missing command.
    let into_proc = format!("{}:/proc/vessel-target", vol.display());
    let cases: [(&[&str], i32, &str); 8] = [
        (&["run", "--rm", "--memory", "12q", img, "true"], 125, "12q"),
        (&["run", "--rm", "--cpus", "many", img, "true"], 125, "many"),
        (&["run", "--rm", "-v", "./relative:/x", img, "true"], 125, "relative"),
        (&["run", "--rm", "--no-such-flag", img, "true"], 125, "no-such-flag"),
        (&["run", "--rm", "-v", &into_proc, img, "true"], 125, "vessel-target"),
        (&["run", "--rm", img, "nothere"], 127, "nothere"),
        (&["run", "--rm", img, "/bin/noexec"], 126, "noexec"),
        (&["run", "--rm", img, "sh", "-c", "exit 2"], 2, ""),
    ];
    for (args, code, word) in cases {
        let o = i.v(args);
        assert_eq!(o.status.code(), Some(code), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(word), "{args:?}: {}", stderr(&o));
        assert_eq!(i.ok(&["ps", "-aq"]), "", "{args:?} left a container");
    }
    for flag in ["--help", "--version"] {
        let o = i.v(&[flag]);
        assert_eq!(o.status.code(), Some(0), "{flag}");
        assert!(!stdout(&o).is_empty());
    }
    assert_eq!(i.v(&["run", "--help"]).status.code(), Some(0));
}

#[test]
fn a_set_up_error_reaches_run_and_start() {
    if !have(&["umoci", "busybox"]) {
        return;
    }
    let i = Instance::new();
    let img = i.busybox();
    // An exited container: its start spawns a new monitor, which creates it again.
    i.ok(&["run", "--name", "ended", img, "true"]);
    // vessel in a private mount namespace where /sys/fs/cgroup is an empty tmpfs, as
    // under `ip netns exec`.
    let hidden = |args: &[&str]| {
        let base = i.cmd();
        let mut c = Command::new("unshare");
        c.args([
            "-m",
            "sh",
            "-c",
            "mount --make-rprivate / && mount -t tmpfs none /sys/fs/cgroup && exec \"$@\"",
            "sh",
        ]);
        c.arg(base.get_program()).args(base.get_args()).args(args);
        for (k, v) in base.get_envs() {
            if let Some(v) = v {
                c.env(k, v);
            }
        }
        let o = c.output().unwrap();
        eprintln!("hidden vessel {args:?}: {}\n{}{}", o.status, stdout(&o), stderr(&o));
        o
    };
    for args in [
        &["run", "--rm", img, "true"][..],
        &["run", "-d", img, "true"],
        &["start", "ended"],
    ] {
        let o = hidden(args);
        assert_eq!(o.status.code(), Some(125), "{args:?}");
        let err = stderr(&o);
        assert!(err.contains("no cgroup hierarchy"), "{args:?}: {err}");
        assert!(err.contains("ip netns exec"), "{args:?}: {err}");
    }
    // Nothing was left by the failed runs; the ended container stays as it was.
    assert_eq!(i.ok(&["ps", "-aq"]).lines().count(), 1);
    assert!(i.ok(&["ps", "-a"]).contains("Exited (0)"));
    assert!(i.mounts_under_root().is_empty());
    i.ok(&["rm", "ended"]);
}

#[test]
fn default_capabilities_are_podmans_and_ping_still_works() {
    if !have(&["umoci", "busybox"]) {
        return;
    }
    let i = Instance::new();
    let img = i.busybox();
    let status = i.ok(&["run", "--rm", img, "grep", "CapBnd", "/proc/self/status"]);
    let hex = status.split_whitespace().nth(1).unwrap();
    let bnd = u64::from_str_radix(hex, 16).unwrap();
    // capability.h: CAP_NET_RAW 13, CAP_MKNOD 27, CAP_AUDIT_WRITE 29.
    for (name, bit) in [("NET_RAW", 13), ("MKNOD", 27), ("AUDIT_WRITE", 29)] {
        assert_eq!(bnd & (1 << bit), 0, "CAP_{name} in the default set: {status}");
    }
    // CAP_CHOWN 0, CAP_KILL 5, CAP_NET_BIND_SERVICE 10 stay.
    assert_eq!(bnd & 0b100_0010_0001, 0b100_0010_0001, "{status}");
    // ping without CAP_NET_RAW: an ICMP socket, allowed by the container's own
    // net.ipv4.ping_group_range: every group (with the host's ids), every group of its
    // range (in its own user namespace, the default: the kernel takes only mapped gids).
    let range = i.ok(&[
        "run",
        "--rm",
        "--userns=host",
        img,
        "cat",
        "/proc/sys/net/ipv4/ping_group_range",
    ]);
    assert_eq!(range.split_whitespace().collect::<Vec<_>>(), ["0", "2147483647"]);
    let range = i.ok(&["run", "--rm", img, "cat", "/proc/sys/net/ipv4/ping_group_range"]);
    assert_eq!(range.split_whitespace().collect::<Vec<_>>(), ["0", "65535"]);
    // iputils' ping as a user, in the host image: a copy, since Debian's own has a file
    // capability (cap_net_raw=ep) that the kernel refuses to exec without CAP_NET_RAW
    // in the bounding set; without it ping falls back to an ICMP socket.
    if have(&["ping"]) {
        let copy = i.dir.path().join("ping");
        std::fs::copy("/usr/bin/ping", &copy).unwrap();
        let vol = format!("{}:/tmp/ping:ro", copy.display());
        for user in ["0", "1000"] {
            let o = i.v(&[
                "run",
                "--rm",
                "-u",
                user,
                "-v",
                &vol,
                "host",
                "/tmp/ping",
                "-c",
                "1",
                "-W",
                "5",
                "127.0.0.1",
            ]);
            assert!(o.status.success(), "as {user}: {}", stderr(&o));
            assert!(stdout(&o).contains("1 received"), "{}", stdout(&o));
        }
    }
    // --cap-add NET_RAW gives it back.
    let status = i.ok(&[
        "run",
        "--rm",
        "--cap-add",
        "NET_RAW",
        img,
        "grep",
        "CapBnd",
        "/proc/self/status",
    ]);
    let bnd = u64::from_str_radix(status.split_whitespace().nth(1).unwrap(), 16).unwrap();
    assert_ne!(bnd & (1 << 13), 0);
}

#[test]
fn host_image_hands_no_host_secret_to_containers() {
    let i = Instance::new();
    // Checked inside, printing names only (never a hash or a key): users whose
    // password field is not a locked one, and secret files that can be read.
    let script = "awk -F: '$2 !~ /^(!|\\*|!\\*)$/ {print \"unlocked \" FILENAME \" \" $1}' /etc/shadow /etc/gshadow; \
                  for f in /etc/shadow- /etc/gshadow- /etc/security/opasswd /etc/ssh/ssh_host_*_key /etc/ssl/private/* \
                  /etc/sudoers.d/* /etc/krb5.keytab; do [ -e \"$f\" ] && echo \"present $f\"; done; \
                  cut -d: -f1 /etc/shadow | sort | tr '\\n' ' '";
    let out = i.ok(&["run", "--rm", "host", "sh", "-c", script]);
    assert!(!out.contains("unlocked "), "{out}");
    assert!(!out.contains("present "), "{out}");
    // The users stay: the same names as the host's passwd.
    let host = std::fs::read_to_string("/etc/passwd").unwrap();
    let mut names: Vec<&str> = host.lines().filter_map(|l| l.split(':').next()).collect();
    names.sort_unstable();
    let inside: Vec<&str> = out.split_whitespace().collect();
    let mut inside_sorted = inside.clone();
    inside_sorted.sort_unstable();
    assert_eq!(inside_sorted, names);
    // The host's own files are untouched.
    assert!(std::path::Path::new("/etc/shadow").exists());
}
