//! Unit tests of config.json generation.

use super::*;
use crate::options::Volume;
use oci_spec::runtime::{Capability, LinuxDeviceType};
use std::str::FromStr;

const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

struct Fixture {
    _dir: tempfile::TempDir,
    rootfs: PathBuf,
    bundle: PathBuf,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let rootfs = dir.path().join("rootfs");
    let bundle = dir.path().join("bundle");
    fs::create_dir_all(rootfs.join("etc")).unwrap();
    fs::create_dir_all(&bundle).unwrap();
    fs::write(
        rootfs.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n",
    )
    .unwrap();
    fs::write(rootfs.join("etc/group"), "root:x:0:\nwheel:x:10:root\napp:x:1000:\n").unwrap();
    Fixture {
        _dir: dir,
        rootfs,
        bundle,
    }
}

fn image(config: &str) -> ImageConfiguration {
    serde_json::from_str(&format!(
        r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":[]}},"config":{config}}}"#
    ))
    .unwrap()
}

fn build_with(f: &Fixture, opts: &RunOptions, img: &ImageConfiguration) -> Result<Spec> {
    build(&BuildInput {
        id: ID,
        opts,
        image_config: img,
        rootfs: &f.rootfs,
        users_root: &f.rootfs,
        bundle: &f.bundle,
        extra_mounts: Vec::new(),
    })
}

fn args(s: &Spec) -> Vec<String> {
    s.process().as_ref().unwrap().args().clone().unwrap()
}

fn env(s: &Spec) -> Vec<String> {
    s.process().as_ref().unwrap().env().clone().unwrap()
}

fn caps(s: &Spec) -> HashSet<Capability> {
    let c = s.process().as_ref().unwrap().capabilities().as_ref().unwrap();
    assert_eq!(c.bounding(), c.effective());
    assert_eq!(c.bounding(), c.permitted());
    assert_eq!(c.inheritable().as_ref().map(|s| s.len()), Some(0));
    assert_eq!(c.ambient().as_ref().map(|s| s.len()), Some(0));
    c.bounding().clone().unwrap()
}

fn mount_at<'a>(s: &'a Spec, dest: &str) -> Option<&'a Mount> {
    s.mounts().iter().flatten().find(|m| m.destination() == Path::new(dest))
}

fn opts(f: impl FnOnce(&mut RunOptions)) -> RunOptions {
    let mut o = RunOptions {
        image: "test".into(),
        ..Default::default()
    };
    f(&mut o);
    o
}

#[test]
fn entrypoint_and_cmd() {
    let f = fixture();
    let img = image(r#"{"Entrypoint":["/ep","-x"],"Cmd":["a","b"]}"#);
    let run = |o: RunOptions| build_with(&f, &o, &img).map(|s| args(&s));
    assert_eq!(run(opts(|_| {})).unwrap(), ["/ep", "-x", "a", "b"]);
    assert_eq!(run(opts(|o| o.command = vec!["c".into()])).unwrap(), ["/ep", "-x", "c"]);
    assert_eq!(run(opts(|o| o.entrypoint = Some("/new".into()))).unwrap(), ["/new"]);
    assert_eq!(
        run(opts(|o| {
            o.entrypoint = Some("/new".into());
            o.command = vec!["c".into()];
        }))
        .unwrap(),
        ["/new", "c"]
    );
    assert_eq!(
        run(opts(|o| {
            o.entrypoint = Some(String::new());
            o.command = vec!["sh".into()];
        }))
        .unwrap(),
        ["sh"]
    );
    assert_eq!(
        run(opts(|o| o.entrypoint = Some(r#"["/bin/sh","-c"]"#.into()))).unwrap(),
        ["/bin/sh", "-c"]
    );
    let e = run(opts(|o| o.entrypoint = Some(String::new()))).unwrap_err();
    assert!(
        matches!(&e, Error::BadInput(m) if m.starts_with("no command specified")),
        "{e}"
    );

    let only_cmd = image(r#"{"Cmd":["/bin/sh"]}"#);
    let s = build_with(&f, &opts(|_| {}), &only_cmd).unwrap();
    assert_eq!(args(&s), ["/bin/sh"]);
    let empty = image("{}");
    assert!(build_with(&f, &opts(|_| {}), &empty).is_err());
    let s = build_with(&f, &opts(|o| o.command = vec!["true".into()]), &empty).unwrap();
    assert_eq!(args(&s), ["true"]);
}

#[test]
fn defaults() {
    let f = fixture();
    let s = build_with(&f, &opts(|o| o.command = vec!["sh".into()]), &image("{}")).unwrap();
    assert_eq!(s.version(), vessel_runtime::OCI_VERSION);
    assert_eq!(s.hostname().as_deref(), Some("0123456789ab"));
    let p = s.process().as_ref().unwrap();
    assert_eq!(p.cwd(), Path::new("/"));
    assert_eq!(p.terminal(), Some(false));
    assert_eq!(p.no_new_privileges(), Some(false));
    assert!(p.rlimits().is_none());
    assert_eq!((p.user().uid(), p.user().gid()), (0, 0));
    assert_eq!(p.user().additional_gids().as_deref(), Some(&[10][..]));
    let want: HashSet<Capability> = DEFAULT_CAPABILITIES
        .iter()
        .map(|c| Capability::from_str(&c[4..]).unwrap())
        .collect();
    assert_eq!(caps(&s), want);
    let root = s.root().as_ref().unwrap();
    assert_eq!(root.path(), &f.rootfs);
    assert_eq!(root.readonly(), Some(false));

    let linux = s.linux().as_ref().unwrap();
    let ns: Vec<_> = linux.namespaces().as_ref().unwrap().iter().map(|n| n.typ()).collect();
    for t in [
        LinuxNamespaceType::Pid,
        LinuxNamespaceType::Mount,
        LinuxNamespaceType::Ipc,
        LinuxNamespaceType::Uts,
        LinuxNamespaceType::Network,
        LinuxNamespaceType::Cgroup,
    ] {
        assert!(ns.contains(&t), "{t:?}");
    }
    assert!(!ns.contains(&LinuxNamespaceType::User));
    assert_eq!(
        linux.cgroups_path().as_deref(),
        Some(Path::new(&format!("/vessel/{ID}")))
    );
    assert!(linux
        .masked_paths()
        .as_ref()
        .unwrap()
        .iter()
        .any(|p| p == "/proc/kcore"));
    assert!(linux
        .readonly_paths()
        .as_ref()
        .unwrap()
        .iter()
        .any(|p| p == "/proc/sys"));
    assert!(linux.devices().is_none());
    let r = linux.resources().as_ref().unwrap();
    assert!(r.memory().is_none() && r.cpu().is_none() && r.pids().is_none());
    let dev = &r.devices().as_ref().unwrap()[0];
    assert!(!dev.allow() && dev.access().as_deref() == Some("rwm"));
    let sc = linux.seccomp().as_ref().unwrap();
    assert_eq!(sc.default_errno_ret(), Some(1));

    for (dest, typ) in [
        ("/proc", "proc"),
        ("/dev", "tmpfs"),
        ("/dev/pts", "devpts"),
        ("/dev/shm", "tmpfs"),
        ("/dev/mqueue", "mqueue"),
        ("/sys", "sysfs"),
        ("/sys/fs/cgroup", "cgroup"),
        ("/etc/hostname", "bind"),
        ("/etc/hosts", "bind"),
        ("/etc/resolv.conf", "bind"),
    ] {
        let m = mount_at(&s, dest).unwrap_or_else(|| panic!("no mount at {dest}"));
        assert_eq!(m.typ().as_deref(), Some(typ), "{dest}");
    }
    assert!(mount_at(&s, "/sys")
        .unwrap()
        .options()
        .as_ref()
        .unwrap()
        .contains(&"ro".to_string()));
    let hosts = mount_at(&s, "/etc/hosts").unwrap();
    assert_eq!(hosts.source().as_deref(), Some(f.bundle.join("hosts").as_path()));
    assert!(!hosts.options().as_ref().unwrap().contains(&"ro".to_string()));
    assert_eq!(fs::read_to_string(f.bundle.join("hostname")).unwrap(), "0123456789ab\n");
    let h = fs::read_to_string(f.bundle.join("hosts")).unwrap();
    assert!(
        h.starts_with("127.0.0.1\tlocalhost\n") && h.contains("\t0123456789ab\n"),
        "{h}"
    );
    assert!(fs::read_to_string(f.bundle.join("resolv.conf"))
        .unwrap()
        .contains("nameserver"));

    // The result is a config the runtime takes.
    fs::write(f.bundle.join("config.json"), serde_json::to_vec(&s).unwrap()).unwrap();
    let back = vessel_runtime::spec::load(&f.bundle).unwrap();
    assert_eq!(back, s);
}

#[test]
fn environment_precedence() {
    let f = fixture();
    let dir = tempfile::tempdir().unwrap();
    let envfile = dir.path().join("env");
    fs::write(
        &envfile,
        "\u{feff}# comment\n\nB=from-file\n  C=file\nVESSEL_CFG_TEST_UNSET_VAR\nVESSEL_CFG_TEST_FILE_VAR\nSPACES= a b \n",
    )
    .unwrap();
    std::env::set_var("VESSEL_CFG_TEST_FILE_VAR", "caller-file");
    std::env::set_var("VESSEL_CFG_TEST_CLI_VAR", "caller-cli");
    let img = image(r#"{"Cmd":["sh"],"Env":["PATH=/img/bin","A=image","B=image","C=image"]}"#);
    let o = opts(|o| {
        o.env_files = vec![envfile.clone()];
        o.env = vec![
            "C=cli".into(),
            "D=cli".into(),
            "VESSEL_CFG_TEST_CLI_VAR".into(),
            "VESSEL_CFG_TEST_UNSET_VAR".into(),
            "EMPTY=".into(),
            "A".into(),
        ];
        o.tty = true;
        o.user = Some("app".into());
    });
    let e = env(&build_with(&f, &o, &img).unwrap());
    assert_eq!(
        e,
        [
            "PATH=/img/bin",
            "HOSTNAME=0123456789ab",
            "TERM=xterm",
            "B=from-file",
            "C=cli",
            "VESSEL_CFG_TEST_FILE_VAR=caller-file",
            "SPACES= a b ",
            "D=cli",
            "VESSEL_CFG_TEST_CLI_VAR=caller-cli",
            "EMPTY=",
            "HOME=/home/app",
        ]
    );

    // Defaults: PATH added, no TERM without a tty, HOME of root; -e overrides HOSTNAME and HOME.
    let e = env(&build_with(&f, &opts(|o| o.command = vec!["sh".into()]), &image("{}")).unwrap());
    assert_eq!(
        e,
        [
            format!("PATH={DEFAULT_PATH}"),
            "HOSTNAME=0123456789ab".into(),
            "HOME=/root".into()
        ]
    );
    let o = opts(|o| {
        o.command = vec!["sh".into()];
        o.env = vec!["HOSTNAME=h".into(), "HOME=/x".into()];
        o.user = Some("4242".into());
    });
    let e = env(&build_with(&f, &o, &image("{}")).unwrap());
    assert!(
        e.contains(&"HOSTNAME=h".to_string()) && e.contains(&"HOME=/x".to_string()),
        "{e:?}"
    );
    let o = opts(|o| {
        o.command = vec!["sh".into()];
        o.user = Some("4242".into());
    });
    assert!(env(&build_with(&f, &o, &image("{}")).unwrap()).contains(&"HOME=/".to_string()));

    for bad in ["=x", "A B=c"] {
        let o = opts(|o| {
            o.command = vec!["sh".into()];
            o.env = vec![bad.into()];
        });
        let e = build_with(&f, &o, &image("{}")).unwrap_err();
        assert!(
            matches!(&e, Error::BadInput(m) if m.contains("invalid environment variable")),
            "{e}"
        );
    }
    let o = opts(|o| {
        o.command = vec!["sh".into()];
        o.env_files = vec![dir.path().join("missing")];
    });
    assert!(matches!(build_with(&f, &o, &image("{}")), Err(Error::Io { .. })));
}

#[test]
fn user_and_workdir() {
    let f = fixture();
    let img = image(r#"{"Cmd":["sh"],"User":"app","WorkingDir":"/srv"}"#);
    let s = build_with(&f, &opts(|_| {}), &img).unwrap();
    let p = s.process().as_ref().unwrap();
    assert_eq!((p.user().uid(), p.user().gid()), (1000, 1000));
    assert!(p.user().additional_gids().is_none());
    assert_eq!(p.cwd(), Path::new("/srv"));
    let o = opts(|o| {
        o.user = Some("0:10".into());
        o.workdir = Some("/tmp".into());
    });
    let s = build_with(&f, &o, &img).unwrap();
    let p = s.process().as_ref().unwrap();
    assert_eq!((p.user().uid(), p.user().gid()), (0, 10));
    assert_eq!(p.cwd(), Path::new("/tmp"));
    let e = build_with(&f, &opts(|o| o.workdir = Some("tmp".into())), &img).unwrap_err();
    assert!(e.to_string().contains("absolute"), "{e}");
    let e = build_with(&f, &opts(|o| o.user = Some("nobody".into())), &img).unwrap_err();
    assert!(e.to_string().contains("unable to find user nobody"), "{e}");
    let e = build_with(&f, &opts(|o| o.hostname = Some("bad_name".into())), &img).unwrap_err();
    assert!(e.to_string().contains("--hostname"), "{e}");
    let s = build_with(&f, &opts(|o| o.hostname = Some("web-1.example".into())), &img).unwrap();
    assert_eq!(s.hostname().as_deref(), Some("web-1.example"));
}

#[test]
fn ping_group_range_only_in_an_own_network_namespace() {
    let f = fixture();
    let sysctl = |net: Option<&str>| {
        let o = opts(|o| {
            o.command = vec!["sh".into()];
            o.network = net.map(String::from);
        });
        let s = build_with(&f, &o, &image("{}")).unwrap();
        s.linux().as_ref().unwrap().sysctl().clone().unwrap_or_default()
    };
    for net in [None, Some("none"), Some("web")] {
        assert_eq!(
            sysctl(net).get("net.ipv4.ping_group_range").map(String::as_str),
            Some("0 2147483647"),
            "{net:?}"
        );
        assert_eq!(
            sysctl(net)
                .get("net.ipv4.ip_unprivileged_port_start")
                .map(String::as_str),
            Some("0"),
            "{net:?}"
        );
    }
    for net in ["host", "container:other"] {
        assert!(sysctl(Some(net)).is_empty(), "{net}");
    }
    for c in ["CAP_NET_RAW", "CAP_MKNOD", "CAP_AUDIT_WRITE"] {
        assert!(!DEFAULT_CAPABILITIES.contains(&c), "{c}");
    }
}

#[test]
fn capability_flags() {
    let base = |f: &dyn Fn(&mut RunOptions)| {
        let mut o = RunOptions::default();
        f(&mut o);
        capabilities(&o)
    };
    let c = base(&|o| {
        o.cap_add = vec!["sys_admin".into(), "CAP_NET_ADMIN".into(), "Sys_Time".into()];
        o.cap_drop = vec!["CAP_CHOWN".into(), "net_raw".into()];
    })
    .unwrap();
    assert!(c.contains(&"CAP_SYS_ADMIN".into()) && c.contains(&"CAP_NET_ADMIN".into()));
    assert!(c.contains(&"CAP_SYS_TIME".into()) && c.contains(&"CAP_KILL".into()));
    assert!(!c.contains(&"CAP_CHOWN".into()) && !c.contains(&"CAP_NET_RAW".into()));
    // Added and dropped: the add wins (docker).
    let c = base(&|o| {
        o.cap_add = vec!["CHOWN".into()];
        o.cap_drop = vec!["chown".into()];
    })
    .unwrap();
    assert_eq!(c.iter().filter(|x| *x == "CAP_CHOWN").count(), 1);
    let c = base(&|o| {
        o.cap_drop = vec!["all".into()];
        o.cap_add = vec!["kill".into()];
    })
    .unwrap();
    assert_eq!(c, ["CAP_KILL"]);
    let c = base(&|o| {
        o.cap_add = vec!["ALL".into()];
        o.cap_drop = vec!["SYS_ADMIN".into()];
    })
    .unwrap();
    assert_eq!(c.len(), available_capabilities().len() - 1);
    assert!(!c.contains(&"CAP_SYS_ADMIN".into()));
    for (add, drop) in [(vec!["CAP_FOO"], vec![]), (vec![], vec!["bogus"])] {
        let e = base(&|o| {
            o.cap_add = add.iter().map(|s| s.to_string()).collect();
            o.cap_drop = drop.iter().map(|s| s.to_string()).collect();
        })
        .unwrap_err();
        assert!(
            matches!(&e, Error::BadInput(m) if m.contains("unknown capability")),
            "{e}"
        );
    }

    // A capability vessel itself lacks cannot be added (capset would fail at start).
    if let Some(missing) = ALL_CAPABILITIES.iter().find(|c| !available_capabilities().contains(c)) {
        let e = base(&|o| o.cap_add = vec![missing.to_string()]).unwrap_err();
        assert!(e.to_string().contains("not available here"), "{e}");
        // Dropping it is fine.
        base(&|o| o.cap_drop = vec![missing.to_string()]).unwrap();
    }

    // Through build: the seccomp profile follows the bounding set.
    let f = fixture();
    let o = opts(|o| {
        o.command = vec!["sh".into()];
        o.cap_add = vec!["SYS_ADMIN".into()];
        o.cap_drop = vec!["MKNOD".into()];
    });
    let s = build_with(&f, &o, &image("{}")).unwrap();
    let c = caps(&s);
    assert!(c.contains(&Capability::SysAdmin) && !c.contains(&Capability::Mknod));
    let sc = s.linux().as_ref().unwrap().seccomp().clone().unwrap();
    assert!(sc
        .syscalls()
        .iter()
        .flatten()
        .any(|r| r.names().iter().any(|n| n == "mount")));
}

#[test]
fn privileged() {
    let f = fixture();
    let o = opts(|o| {
        o.command = vec!["sh".into()];
        o.privileged = true;
        o.cap_drop = vec!["SYS_ADMIN".into()];
    });
    let s = build_with(&f, &o, &image("{}")).unwrap();
    assert_eq!(caps(&s).len(), available_capabilities().len());
    let linux = s.linux().as_ref().unwrap();
    assert!(linux.seccomp().is_none());
    assert!(linux.masked_paths().is_none() && linux.readonly_paths().is_none());
    let devices = linux.devices().as_ref().unwrap();
    let null = devices.iter().find(|d| d.path() == Path::new("/dev/null")).unwrap();
    assert_eq!((null.typ(), null.major(), null.minor()), (LinuxDeviceType::C, 1, 3));
    assert!(!devices
        .iter()
        .any(|d| d.path().starts_with("/dev/pts") || d.path() == Path::new("/dev/console")));
    let rule = &linux.resources().as_ref().unwrap().devices().as_ref().unwrap()[0];
    assert!(rule.allow());
    assert!(!mount_at(&s, "/sys")
        .unwrap()
        .options()
        .as_ref()
        .unwrap()
        .contains(&"ro".to_string()));
    assert!(!mount_at(&s, "/sys/fs/cgroup")
        .unwrap()
        .options()
        .as_ref()
        .unwrap()
        .contains(&"ro".to_string()));

    let o = opts(|o| {
        o.command = vec!["sh".into()];
        o.seccomp = Seccomp::Unconfined;
    });
    let s = build_with(&f, &o, &image("{}")).unwrap();
    assert!(s.linux().as_ref().unwrap().seccomp().is_none());
}

#[test]
fn mounts_read_only_tmpfs_volumes() {
    let f = fixture();
    let host = tempfile::tempdir().unwrap();
    let o = opts(|o| {
        o.command = vec!["sh".into()];
        o.read_only = true;
        o.tmpfs = vec!["/data/cache:size=1m,exec".into(), "/dev/shm:size=128m".into()];
        o.volumes = vec![
            Volume {
                host: host.path().to_path_buf(),
                container: "/data".into(),
                read_only: false,
                name: None,
                idmap: false,
            },
            Volume {
                host: host.path().to_path_buf(),
                container: "/etc/resolv.conf".into(),
                read_only: true,
                name: None,
                idmap: false,
            },
        ];
    });
    let mut extra = Mount::default();
    extra.set_destination("/usr".into());
    extra.set_typ(Some("bind".into()));
    extra.set_source(Some("/usr".into()));
    let s = build(&BuildInput {
        id: ID,
        opts: &o,
        image_config: &image("{}"),
        rootfs: &f.rootfs,
        users_root: &f.rootfs,
        bundle: &f.bundle,
        extra_mounts: vec![extra],
    })
    .unwrap();
    assert_eq!(s.root().as_ref().unwrap().readonly(), Some(true));
    let ro = |dest: &str| {
        mount_at(&s, dest)
            .unwrap()
            .options()
            .as_ref()
            .unwrap()
            .contains(&"ro".to_string())
    };
    assert!(ro("/etc/hosts") && ro("/etc/hostname"));
    let dests: Vec<&Path> = s.mounts().iter().flatten().map(|m| m.destination().as_path()).collect();
    let pos = |d: &str| dests.iter().position(|x| *x == Path::new(d)).unwrap();
    // The root's own mounts (the host image's /usr and /etc overlay) first: the bound
    // /etc files go over them, user mounts last.
    assert!(pos("/usr") < pos("/etc/hosts") && pos("/etc/hosts") < pos("/data"));
    assert!(pos("/data") < pos("/data/cache"), "{dests:?}");
    // User mounts replace the standard ones at the same place.
    assert_eq!(dests.iter().filter(|d| **d == Path::new("/dev/shm")).count(), 1);
    assert_eq!(dests.iter().filter(|d| **d == Path::new("/etc/resolv.conf")).count(), 1);
    let shm = mount_at(&s, "/dev/shm").unwrap();
    assert_eq!(
        shm.options().as_deref().unwrap(),
        ["nosuid", "nodev", "noexec", "size=128m"]
    );
    let cache = mount_at(&s, "/data/cache").unwrap();
    assert_eq!(
        cache.options().as_deref().unwrap(),
        ["nosuid", "nodev", "noexec", "size=1m", "exec"]
    );
    let data = mount_at(&s, "/data").unwrap();
    assert_eq!(data.source().as_deref(), Some(host.path()));
    assert_eq!(data.options().as_deref().unwrap(), ["rbind", "rprivate"]);
    let resolv = mount_at(&s, "/etc/resolv.conf").unwrap();
    assert_eq!(resolv.source().as_deref(), Some(host.path()));
    assert_eq!(resolv.options().as_deref().unwrap(), ["rbind", "rprivate", "ro"]);

    for (tmpfs, vol, want) in [
        (vec!["/a", "/a"], None, "duplicate mount point /a"),
        (vec!["/a"], Some("/a"), "duplicate mount point /a"),
        (vec!["rel"], None, "--tmpfs"),
        (vec!["/"], None, "--tmpfs"),
        (vec![], Some("/x/../y"), "-v"),
    ] {
        let o = opts(|o| {
            o.command = vec!["sh".into()];
            o.tmpfs = tmpfs.iter().map(|s| s.to_string()).collect();
            o.volumes = vol
                .iter()
                .map(|c| Volume {
                    host: host.path().to_path_buf(),
                    container: c.into(),
                    read_only: false,
                    name: None,
                    idmap: false,
                })
                .collect();
        });
        let e = build_with(&f, &o, &image("{}")).unwrap_err();
        assert!(matches!(&e, Error::BadInput(m) if m.contains(want)), "{want}: {e}");
    }
}

#[test]
fn init() {
    let f = fixture();
    let o = opts(|o| {
        o.command = vec!["sleep".into(), "1".into()];
        o.init = true;
    });
    match init_binary() {
        Ok(bin) => {
            let s = build_with(&f, &o, &image(r#"{"Entrypoint":["/ep"]}"#)).unwrap();
            assert_eq!(args(&s), [INIT_PATH, "--", "/ep", "sleep", "1"]);
            let m = mount_at(&s, INIT_PATH).unwrap();
            assert_eq!(m.source().as_deref(), Some(bin.as_path()));
            assert!(m.options().as_ref().unwrap().contains(&"ro".to_string()));
            assert_eq!(s.mounts().as_ref().unwrap().last(), Some(m));
        }
        Err(e) => {
            assert!(e.to_string().contains("catatonit"), "{e}");
            assert!(build_with(&f, &o, &image("{}")).is_err());
        }
    }
}

#[test]
fn resource_limits() {
    let f = fixture();
    let o = opts(|o| {
        o.command = vec!["sh".into()];
        o.memory = Some(512 << 20);
        o.cpus = Some(1.5);
        o.pids_limit = Some(100);
    });
    let s = build_with(&f, &o, &image("{}")).unwrap();
    let r = s.linux().as_ref().unwrap().resources().clone().unwrap();
    let m = r.memory().unwrap();
    assert_eq!(m.limit(), Some(512 << 20));
    assert_eq!(m.swap(), swap_accounting().then_some(1 << 30));
    let c = r.cpu().as_ref().unwrap();
    assert_eq!((c.quota(), c.period()), (Some(150_000), Some(100_000)));
    assert_eq!(r.pids().unwrap().limit(), 100);
    // Resource values pass the runtime's checks.
    vessel_runtime::cgroups::limits::validate(&r).unwrap();

    let o = opts(|o| {
        o.command = vec!["sh".into()];
        o.memory = Some(1 << 20);
    });
    let e = build_with(&f, &o, &image("{}")).unwrap_err();
    assert!(e.to_string().contains("minimum memory"), "{e}");
    let o = opts(|o| {
        o.command = vec!["sh".into()];
        o.memory = Some(0);
        o.pids_limit = Some(-1);
    });
    let s = build_with(&f, &o, &image("{}")).unwrap();
    let r = s.linux().as_ref().unwrap().resources().clone().unwrap();
    assert!(r.memory().is_none() && r.pids().is_none());
}

#[test]
fn resolv_conf_filters_loopback() {
    let host =
        "# generated\nsearch example.com\nnameserver 127.0.0.53\nnameserver ::1\nnameserver 10.0.0.2\noptions edns0\n";
    assert_eq!(
        resolv_conf(Some(host)),
        "# generated\nsearch example.com\nnameserver 10.0.0.2\noptions edns0\n"
    );
    assert_eq!(
        resolv_conf(Some("nameserver 127.0.0.1\n")),
        "nameserver 8.8.8.8\nnameserver 8.8.4.4\n"
    );
    assert_eq!(resolv_conf(None), "nameserver 8.8.8.8\nnameserver 8.8.4.4\n");
}

#[test]
fn stop_signals() {
    assert_eq!(stop_signal(&image("{}")), libc::SIGTERM);
    assert_eq!(stop_signal(&image(r#"{"StopSignal":"SIGQUIT"}"#)), libc::SIGQUIT);
    assert_eq!(stop_signal(&image(r#"{"StopSignal":"usr1"}"#)), libc::SIGUSR1);
    assert_eq!(stop_signal(&image(r#"{"StopSignal":"9"}"#)), 9);
    assert_eq!(stop_signal(&image(r#"{"StopSignal":"RTMIN+3"}"#)), libc::SIGRTMIN() + 3);
    assert_eq!(stop_signal(&image(r#"{"StopSignal":"NOPE"}"#)), libc::SIGTERM);
    let no_config: ImageConfiguration =
        serde_json::from_str(r#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#)
            .unwrap();
    assert_eq!(stop_signal(&no_config), libc::SIGTERM);
}
