//! Containers in their own user namespace (issue 14, the root part): the default private
//! id range seen from the host, layers shared through idmapped mounts, and confinement:
//! root-owned canaries (under the test's temp dir) stay out of reach through a plain
//! volume, /proc, file capabilities, another container's namespaces and a nested user
//! namespace; unmapped owners show as nobody.
//!
//! Ranges come from the test's own subuid/subgid files (`run_vessel::vessel_cmd`:
//! `vessel:1000000000:1000000000`), so the first container's root is host uid 1000000000.

mod instance;
mod run_vessel;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

use instance::{stderr, stdout, Instance, TestNetns};

const RANGE: u32 = 1_000_000_000;

fn inspect(i: &Instance, c: &str) -> serde_json::Value {
    let out = i.ok(&["inspect", c]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v[0].clone()
}

fn pid(i: &Instance, c: &str) -> u32 {
    inspect(i, c)["State"]["Pid"].as_u64().unwrap() as u32
}

/// A detached container sleeping, with `args` before the image; its id.
fn sleeper(i: &Instance, args: &[&str], image: &str) -> String {
    let mut a = vec!["run", "-d"];
    a.extend_from_slice(args);
    a.extend_from_slice(&[image, "sleep", "1000"]);
    i.ok(&a).trim().to_string()
}

/// A temp dir with a root-owned canary file (0644) in a root-owned 0755 dir.
fn canary_dir(i: &Instance) -> std::path::PathBuf {
    let d = i.dir.path().join("canary");
    std::fs::create_dir(&d).unwrap();
    std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(d.join("canary"), "untouched\n").unwrap();
    std::fs::set_permissions(d.join("canary"), std::fs::Permissions::from_mode(0o644)).unwrap();
    d
}

#[test]
fn default_range_is_private_and_owns_the_writable_layer() {
    let i = Instance::new();
    let img = i.busybox();
    let a = sleeper(&i, &[], img);
    let p = pid(&i, &a);
    let map = std::fs::read_to_string(format!("/proc/{p}/uid_map")).unwrap();
    let fields: Vec<&str> = map.split_whitespace().collect();
    assert_eq!(fields, ["0", &RANGE.to_string(), "65536"], "{map}");
    let gmap = std::fs::read_to_string(format!("/proc/{p}/gid_map")).unwrap();
    assert_eq!(gmap.split_whitespace().nth(1), Some(RANGE.to_string().as_str()));
    // Root inside runs as the range's first id on the host.
    let status = std::fs::read_to_string(format!("/proc/{p}/status")).unwrap();
    assert!(status.contains(&format!("Uid:\t{RANGE}\t")), "{status}");
    i.ok(&[
        "exec",
        &a,
        "sh",
        "-c",
        "echo data > /written; mkdir /d; touch /d/f; chown 33:33 /d/f",
    ]);
    let root = format!("/proc/{p}/root");
    for (f, uid) in [("written", RANGE), ("d", RANGE), ("d/f", RANGE + 33)] {
        let m = std::fs::metadata(Path::new(&root).join(f)).unwrap();
        assert_eq!((m.uid(), m.gid()), (uid, uid), "{f} as the host sees it");
    }
    // An image file inside is root's, its lower on the host stays root's (no chown).
    assert_eq!(i.ok(&["exec", &a, "stat", "-c", "%u:%g", "/bin/busybox"]).trim(), "0:0");
    let v = inspect(&i, &a);
    assert_eq!(v["HostConfig"]["UsernsMode"], "auto");
    assert_eq!(v["HostConfig"]["IDMappings"]["UidMap"][0], format!("0:{RANGE}:65536"));
    assert_eq!(v["HostConfig"]["IdRange"]["UidStart"], RANGE);
    // top: host uid and container uid of each process.
    let top = i.ok(&["top", &a]);
    let row = top.lines().find(|l| l.contains("sleep 1000")).unwrap();
    let cols: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(&cols[..2], [RANGE.to_string().as_str(), "0"], "{top}");
}

#[test]
fn two_ranges_share_one_lower_and_ranges_are_released() {
    let i = Instance::new();
    let img = i.busybox();
    let a = sleeper(&i, &[], img);
    let b = sleeper(&i, &[], img);
    let (ra, rb) = (inspect(&i, &a), inspect(&i, &b));
    let (sa, sb) = (
        ra["HostConfig"]["IdRange"]["UidStart"].as_u64().unwrap(),
        rb["HostConfig"]["IdRange"]["UidStart"].as_u64().unwrap(),
    );
    assert_eq!((sa, sb), (u64::from(RANGE), u64::from(RANGE) + 65536));
    let ino = |c: &str| {
        let m = std::fs::metadata(format!("/proc/{}/root/bin/busybox", pid(&i, c))).unwrap();
        (m.ino(), m.uid())
    };
    let (ia, ib) = (ino(&a), ino(&b));
    assert_eq!(ia.0, ib.0, "one inode for the unchanged lower file");
    // The same inode appears owned by each container's own root.
    assert_eq!((ia.1, ib.1), (RANGE, RANGE + 65536));
    // The snapshot's file itself is root's on the host: nothing was chowned.
    let snaps = i.root().join("snapshots");
    let found = Command::new("find")
        .arg(&snaps)
        .args(["-path", "*/bin/busybox", "-inum", &ia.0.to_string(), "-uid", "0"])
        .output()
        .unwrap();
    assert!(
        !stdout(&found).trim().is_empty(),
        "lower file owned by root: {}",
        stderr(&found)
    );
    // rm releases a's range: the next container gets it.
    i.ok(&["rm", "-f", &a]);
    let c = sleeper(&i, &[], img);
    assert_eq!(inspect(&i, &c)["HostConfig"]["IdRange"]["UidStart"], RANGE);
}

#[test]
fn modes_host_privileged_keep_id_and_maps() {
    let i = Instance::new();
    let img = i.busybox();
    let map = |args: &[&str]| {
        let mut a = vec!["run", "--rm"];
        a.extend_from_slice(args);
        a.extend_from_slice(&[img, "cat", "/proc/self/uid_map"]);
        i.ok(&a).split_whitespace().map(String::from).collect::<Vec<_>>()
    };
    assert_eq!(map(&["--userns=host"]), ["0", "0", "4294967295"]);
    assert_eq!(map(&["--privileged"]), ["0", "0", "4294967295"]);
    assert_eq!(map(&["--userns=keep-id"]), ["0", "0", "4294967295"]);
    assert_eq!(
        map(&["--uidmap", "0:2000000000:1000", "--uidmap", "1000:2000001000:64536"]),
        ["0", "2000000000", "1000", "1000", "2000001000", "64536"]
    );
    assert_eq!(map(&[]), ["0", &RANGE.to_string(), "65536"]);
    let o = i.v(&["run", "--rm", "--userns=nope", img, "true"]);
    assert_eq!(o.status.code(), Some(125));
    assert!(stderr(&o).contains("invalid --userns"), "{}", stderr(&o));
    let o = i.v(&["run", "--rm", "--userns=host", "--uidmap", "0:1:1", img, "true"]);
    assert_eq!(o.status.code(), Some(125));
    // The network choices still work in a user namespace (joined, not owned, net ns).
    i.ok(&["run", "--rm", "--network", "host", img, "true"]);
    let a = sleeper(&i, &["--network", "none"], img);
    i.ok(&["run", "--rm", "--network", &format!("container:{a}"), img, "true"]);
}

#[test]
fn plain_volume_canary_and_unmapped_owner_are_out_of_reach() {
    let i = Instance::new();
    let d = canary_dir(&i);
    std::fs::write(d.join("stranger"), "x\n").unwrap();
    std::os::unix::fs::chown(d.join("stranger"), Some(12345), Some(12345)).unwrap();
    let vol = format!("{}:/c", d.display());
    let script = "stat -c '%u:%g' /c/canary /c/stranger; echo bad >> /c/canary && echo wrote-canary; \
                  echo bad >> /c/stranger && echo wrote-stranger; touch /c/new && echo made-new; \
                  chown 0 /c/stranger && echo chowned; \
                  unshare -U -r sh -c 'echo bad >> /c/canary' && echo nested-wrote; true";
    let out = i.ok(&[
        "run",
        "--rm",
        "--security-opt",
        "seccomp=unconfined",
        "-v",
        &vol,
        "host",
        "sh",
        "-c",
        script,
    ]);
    // Host root and the unmapped uid 12345 both show as nobody (65534).
    assert!(out.starts_with("65534:65534\n65534:65534\n"), "{out}");
    for bad in ["wrote-canary", "wrote-stranger", "made-new", "chowned", "nested-wrote"] {
        assert!(!out.contains(bad), "{bad}: {out}");
    }
    assert_eq!(std::fs::read_to_string(d.join("canary")).unwrap(), "untouched\n");
    assert_eq!(std::fs::read_to_string(d.join("stranger")).unwrap(), "x\n");
    assert!(!d.join("new").exists());
    // A volume the container may write: files appear as the range's root on the host.
    let w = i.dir.path().join("w");
    std::fs::create_dir(&w).unwrap();
    std::fs::set_permissions(&w, std::fs::Permissions::from_mode(0o777)).unwrap();
    i.ok(&[
        "run",
        "--rm",
        "-v",
        &format!("{}:/w", w.display()),
        "host",
        "touch",
        "/w/f",
    ]);
    assert_eq!(std::fs::metadata(w.join("f")).unwrap().uid(), RANGE);
}

#[test]
fn other_containers_proc_namespaces_and_file_caps_mean_nothing() {
    let i = Instance::new();
    let a = sleeper(&i, &[], "host");
    let pa = pid(&i, &a);
    i.ok(&["exec", &a, "sh", "-c", "echo secret > /root/s; chmod 600 /root/s"]);
    let b = sleeper(&i, &[], "host");
    let rb = inspect(&i, &b)["HostConfig"]["IdRange"]["UidStart"]
        .as_u64()
        .unwrap()
        .to_string();
    // A process of b's root that reached a's pid (from the host's pid namespace) still
    // cannot read a's files through /proc.
    let o = Command::new("setpriv")
        .args(["--reuid", &rb, "--regid", &rb, "--clear-groups", "cat"])
        .arg(format!("/proc/{pa}/root/root/s"))
        .output()
        .unwrap();
    assert!(!o.status.success() && !stdout(&o).contains("secret"), "{}", stderr(&o));
    // Joining a's namespaces from inside c (which has them bound in, with every
    // capability of its own user namespace and no seccomp) is refused.
    let ns = format!("/proc/{pa}/ns:/ans");
    let out = i.v(&[
        "run",
        "--rm",
        "--cap-add",
        "ALL",
        "--security-opt",
        "seccomp=unconfined",
        "-v",
        &ns,
        "host",
        "sh",
        "-c",
        "nsenter --user=/ans/user --mount=/ans/mnt cat /root/s && echo joined-user; \
         nsenter --mount=/ans/mnt cat /root/s && echo joined-mnt; nsenter --pid=/ans/pid true && echo joined-pid; true",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(!text.contains("secret") && !text.contains("joined"), "{text}");
    // A file capability set inside is bound to the range's root (a v3 capability with
    // rootid): it gives nothing to host root or any other id.
    i.ok(&[
        "exec",
        &a,
        "sh",
        "-c",
        "cp /usr/bin/true /root/t && setcap cap_net_raw+ep /root/t",
    ]);
    let (magic, rootid) = file_caps(&format!("/proc/{pa}/root/root/t"));
    assert_eq!(
        magic & 0xff00_0000,
        0x0300_0000,
        "a v3 (namespaced) capability: {magic:#x}"
    );
    assert_eq!(rootid, RANGE, "bound to the range's root, not host root");
}

/// The revision word and rootid of the `security.capability` xattr of `path`
/// (linux/capability.h `struct vfs_ns_cap_data`: magic_etc, 2 x (permitted,
/// inheritable), rootid; little-endian), as the host reads it.
fn file_caps(path: &str) -> (u32, u32) {
    let p = std::ffi::CString::new(path).unwrap();
    let name = c"security.capability";
    let mut buf = [0u8; 64];
    // SAFETY: both strings are NUL-terminated and buf's length is passed along.
    let n = unsafe { libc::getxattr(p.as_ptr(), name.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    assert!(n >= 20, "getxattr {path}: {}", std::io::Error::last_os_error());
    let word = |at: usize| u32::from_le_bytes(buf[at..at + 4].try_into().unwrap());
    (word(0), if n >= 24 { word(20) } else { 0 })
}

#[test]
fn bridge_network_in_a_user_namespace() {
    let ns = TestNetns::new("userns");
    // Drop order: the instance (its containers) before the namespace.
    let mut i = Instance::new();
    i.netns = Some(ns.0.clone());
    // iputils' ping, copied without its file capability: an ICMP socket, allowed by the
    // ping_group_range vessel wrote into the namespace from the host side.
    let copy = i.dir.path().join("ping");
    std::fs::copy("/usr/bin/ping", &copy).unwrap();
    let vol = format!("{}:/tmp/ping:ro", copy.display());
    let out = i.ok(&[
        "run",
        "--rm",
        "--network",
        "bridge",
        "-v",
        &vol,
        "host",
        "sh",
        "-c",
        "cat /proc/self/uid_map; ip -4 -o addr show eth0; /tmp/ping -c1 -W2 10.88.0.1 >/dev/null && echo pinged",
    ]);
    assert!(out.contains(&format!(" {RANGE} ")), "{out}");
    assert!(out.contains("inet 10.88."), "{out}");
    assert!(out.contains("pinged"), "{out}");
}

#[test]
fn idmapped_volume_writes_as_host_root_and_shows_host_owners() {
    let i = Instance::new();
    let img = i.busybox();
    // A root-owned 0755 dir (as most host dirs are) with a file of uid 1234, and a plain
    // (not idmapped) world-writable dir beside it.
    let idm = i.dir.path().join("idm");
    std::fs::create_dir(&idm).unwrap();
    std::fs::set_permissions(&idm, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(idm.join("owned"), "x\n").unwrap();
    std::os::unix::fs::chown(idm.join("owned"), Some(1234), Some(1234)).unwrap();
    let plain = i.dir.path().join("plain");
    std::fs::create_dir(&plain).unwrap();
    std::fs::set_permissions(&plain, std::fs::Permissions::from_mode(0o777)).unwrap();
    let out = i.ok(&[
        "run",
        "--rm",
        "-v",
        &format!("{}:/v:idmap", idm.display()),
        "-v",
        &format!("{}:/p", plain.display()),
        img,
        "sh",
        "-c",
        "stat -c %u:%g /v/owned /v; echo x > /v/new && mkdir /v/d && touch /v/d/f && chown 33:33 /v/d/f; echo y > /p/new",
    ]);
    assert_eq!(out, "1234:1234\n0:0\n", "host owners as they are inside");
    let owner = |p: &Path| {
        let m = std::fs::metadata(p).unwrap();
        (m.uid(), m.gid())
    };
    assert_eq!(owner(&idm.join("new")), (0, 0), "container root writes as host root");
    assert_eq!(owner(&idm.join("d/f")), (33, 33));
    assert_eq!(
        owner(&plain.join("new")),
        (RANGE, RANGE),
        "a plain volume: the range's root"
    );
    // The staged idmapped mount went with the container.
    assert!(
        !i.mounts_under_root().iter().any(|l| l.contains("idmap-volumes")),
        "{:?}",
        i.mounts_under_root()
    );
    // --mount with readonly, and a named volume: a fresh one stays host root's.
    let m = format!("type=bind,source={},target=/v,readonly,idmap", idm.display());
    let out = i.ok(&[
        "run",
        "--rm",
        "--mount",
        &m,
        "-v",
        "named:/n:idmap",
        img,
        "sh",
        "-c",
        "cat /v/new; touch /v/ro || echo refused; touch /n/f; stat -c %u /n/f",
    ]);
    assert_eq!(out, "x\nrefused\n0\n", "{out}");
    let named = i.root().join("volumes/named/_data");
    assert_eq!(owner(&named), (0, 0));
    assert_eq!(owner(&named.join("f")), (0, 0));
    // A detached container keeps its idmapped volume across a restart.
    let a = sleeper(&i, &["-v", &format!("{}:/v:idmap", idm.display())], img);
    i.ok(&["restart", "-t", "0", &a]);
    i.ok(&["exec", &a, "touch", "/v/after-restart"]);
    assert_eq!(owner(&idm.join("after-restart")), (0, 0));
    i.ok(&["rm", "-f", &a]);
    // A file system that cannot be idmapped (ramfs): the error names the path and the
    // file system, and nothing is left mounted.
    let ram = i.root().join("ramfs-test");
    std::fs::create_dir(&ram).unwrap();
    assert!(Command::new("mount")
        .args(["-t", "ramfs", "ramfs"])
        .arg(&ram)
        .status()
        .unwrap()
        .success());
    let o = i.v(&["run", "--rm", "-v", &format!("{}:/r:idmap", ram.display()), img, "true"]);
    let _ = Command::new("umount").arg(&ram).status();
    assert_eq!(o.status.code(), Some(125));
    let err = stderr(&o);
    assert!(
        err.contains(&ram.display().to_string()) && err.contains("ramfs") && err.contains("idmapped"),
        "{err}"
    );
    assert!(!i.mounts_under_root().iter().any(|l| l.contains("idmap-volumes")));
}

/// `tar --numeric-owner -tvf FILE`: "MODE UID/GID SIZE DATE TIME NAME" lines as
/// (owner, name).
fn tar_owners(tar: &Path) -> Vec<(String, String)> {
    let o = Command::new("tar")
        .arg("--numeric-owner")
        .arg("-tvf")
        .arg(tar)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    stdout(&o)
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f[1].to_string(), f[5].trim_end_matches('/').to_string())
        })
        .collect()
}

#[test]
fn cp_speaks_the_containers_ids() {
    let i = Instance::new();
    let img = i.busybox();
    let a = sleeper(&i, &[], img);
    let p = pid(&i, &a);
    i.ok(&[
        "exec",
        &a,
        "sh",
        "-c",
        "mkdir /d && echo x > /d/f && chown 33:33 /d/f && echo y > /d/o",
    ]);
    // A file whose host owner is outside the range shows as 65534 inside, and in the tar.
    std::os::unix::fs::chown(format!("/proc/{p}/root/d/o"), Some(12345), Some(12345)).unwrap();
    // Out: a tar of container ids, as the container sees them.
    let tar = i.dir.path().join("out.tar");
    let out = i
        .cmd()
        .args(["cp", &format!("{a}:/d"), "-"])
        .stdout(std::fs::File::create(&tar).unwrap())
        .status()
        .unwrap();
    assert!(out.success());
    let mut owners = tar_owners(&tar);
    owners.sort();
    assert_eq!(
        owners,
        [
            ("0/0".to_string(), "d".to_string()),
            ("33/33".to_string(), "d/f".to_string()),
            ("65534/65534".to_string(), "d/o".to_string())
        ]
    );
    // In, from a tar of host ids (1234) and from a file of the caller (root): the
    // container's root owns them (host uid: the range's first), or with -a the tar's
    // owners as container ids.
    let src = i.dir.path().join("in");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("t"), "t\n").unwrap();
    std::fs::write(src.join("plain"), "p\n").unwrap();
    let mk = Command::new("tar")
        .args(["--owner=1234", "--group=1234", "-cf"])
        .arg(i.dir.path().join("in.tar"))
        .arg("-C")
        .arg(&src)
        .arg("t")
        .status()
        .unwrap();
    assert!(mk.success());
    for (args, dest) in [(vec!["cp"], "/in1"), (vec!["cp", "-a"], "/in2")] {
        i.ok(&["exec", &a, "mkdir", dest]);
        let mut c = i.cmd();
        c.args(&args).args(["-", &format!("{a}:{dest}")]);
        let st = c
            .stdin(std::fs::File::open(i.dir.path().join("in.tar")).unwrap())
            .status()
            .unwrap();
        assert!(st.success());
    }
    i.ok(&["cp", &src.join("plain").display().to_string(), &format!("{a}:/plain")]);
    let inside = i.ok(&["exec", &a, "stat", "-c", "%u:%g", "/in1/t", "/in2/t", "/plain"]);
    assert_eq!(inside, "0:0\n1234:1234\n0:0\n");
    let host = |f: &str| {
        let m = std::fs::symlink_metadata(format!("/proc/{p}/root{f}")).unwrap();
        (m.uid(), m.gid())
    };
    assert_eq!(host("/in1/t"), (RANGE, RANGE));
    assert_eq!(host("/in2/t"), (RANGE + 1234, RANGE + 1234));
    assert_eq!(host("/plain"), (RANGE, RANGE));
}
