//! Mounts and the rootfs: tmpfs options, bind (ro, rbind), propagation, read-only root,
//! masked and read-only paths, devices, /dev symlinks, symlink escapes, --no-pivot.

mod common;

use std::ffi::CString;
use std::fs;
use std::os::unix::fs::FileTypeExt;
use std::path::Path;

use common::*;
use serde_json::json;

#[test]
fn tmpfs_with_size_and_mode() {
    let mut c = TestContainer::new("mnt-tmpfs");
    c.add_mount(json!({
        "destination": "/scratch", "type": "tmpfs", "source": "tmpfs",
        "options": ["nosuid", "nodev", "size=1m", "mode=1770"]
    }));
    c.sh("stat -c %a /scratch; grep ' /scratch ' /proc/self/mountinfo; \
          echo data > /scratch/f && cat /scratch/f");
    let out = c.run();
    out.assert_ok("run");
    let l = out.lines();
    assert_eq!(l[0], "1770", "mode: {out}");
    assert!(l[1].contains(" - tmpfs "), "tmpfs: {out}");
    assert!(l[1].contains("size=1024k"), "size option: {out}");
    assert!(l[1].contains("nosuid") && l[1].contains("nodev"), "flags: {out}");
    assert_eq!(l[2], "data", "tmpfs is writable under a read-only root: {out}");
}

#[test]
fn bind_mount_read_only() {
    let mut c = TestContainer::new("mnt-bind-ro");
    let src = c.dir.join("hostdata");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("file"), "from-host\n").unwrap();
    c.add_mount(json!({
        "destination": "/data", "type": "bind", "source": src,
        "options": ["bind", "ro"]
    }));
    c.sh("cat /data/file; if touch /data/new 2>/dev/null; then echo writable; else echo readonly; fi");
    let out = c.run();
    out.assert_ok("run");
    assert_eq!(out.lines(), vec!["from-host", "readonly"], "{out}");
    assert!(!src.join("new").exists(), "nothing written to the host dir");
}

#[test]
fn bind_mount_read_write() {
    let mut c = TestContainer::new("mnt-bind-rw");
    let src = c.dir.join("hostdata");
    fs::create_dir(&src).unwrap();
    c.add_mount(json!({
        "destination": "/data", "type": "none", "source": src, "options": ["bind"]
    }));
    c.sh("echo inside > /data/new");
    c.run().assert_ok("run");
    assert_eq!(fs::read_to_string(src.join("new")).unwrap(), "inside\n");
}

/// Mounts a small tmpfs at `at` in the test's own mount namespace (under its temp dir;
/// the guard unmounts it).
fn host_tmpfs(at: &Path) {
    fs::create_dir_all(at).unwrap();
    let target = CString::new(at.as_os_str().as_encoded_bytes()).unwrap();
    let fstype = CString::new("tmpfs").unwrap();
    let data = CString::new("size=1m").unwrap();
    // SAFETY: mount(2) with valid C strings, onto a dir inside this test's temp dir.
    let rc = unsafe {
        libc::mount(
            fstype.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            0,
            data.as_ptr().cast(),
        )
    };
    assert_eq!(
        rc,
        0,
        "mount tmpfs on {}: {}",
        at.display(),
        std::io::Error::last_os_error()
    );
}

#[test]
fn rbind_carries_submounts_bind_does_not() {
    let mut c = TestContainer::new("mnt-rbind");
    let src = c.dir.join("tree");
    host_tmpfs(&src.join("sub"));
    fs::write(src.join("sub/inner"), "submount\n").unwrap();
    c.add_mount(json!({
        "destination": "/r", "type": "bind", "source": src, "options": ["rbind", "ro"]
    }));
    c.add_mount(json!({
        "destination": "/b", "type": "bind", "source": src, "options": ["bind", "ro"]
    }));
    c.sh("cat /r/sub/inner; ls -A /b/sub | wc -l");
    let out = c.run();
    out.assert_ok("run");
    assert_eq!(
        out.lines(),
        vec!["submount", "0"],
        "rbind shows the submount, bind not: {out}"
    );
}

#[test]
fn mount_propagation_flags() {
    let mut c = TestContainer::new("mnt-prop");
    let src = c.dir.join("p");
    fs::create_dir(&src).unwrap();
    c.add_mount(json!({
        "destination": "/shared", "type": "bind", "source": src, "options": ["rbind", "rshared"]
    }));
    c.add_mount(json!({
        "destination": "/private", "type": "bind", "source": src, "options": ["rbind", "rprivate"]
    }));
    c.sh("grep ' /shared ' /proc/self/mountinfo; grep ' /private ' /proc/self/mountinfo");
    let out = c.run();
    out.assert_ok("run");
    let l = out.lines();
    assert_eq!(l.len(), 2, "{out}");
    assert!(l[0].contains("shared:"), "rshared mount is shared: {}", l[0]);
    assert!(
        !l[1].contains("shared:") && !l[1].contains("master:"),
        "rprivate mount is private: {}",
        l[1]
    );
}

#[test]
fn readonly_root() {
    let mut c = TestContainer::new("mnt-roroot");
    c.readonly(true);
    c.sh("touch /x 2>&1; echo rc=$?");
    let out = c.run();
    out.assert_ok("run");
    assert!(out.stdout.contains("rc=1"), "touch / fails on a read-only root: {out}");
    assert!(out.stdout.contains("Read-only file system"), "{out}");
    assert!(!c.rootfs.join("x").exists());

    let mut w = TestContainer::new("mnt-rwroot");
    w.readonly(false);
    w.sh("touch /x; echo rc=$?");
    let out = w.run();
    assert!(out.stdout.contains("rc=0"), "writable root: {out}");
    assert!(w.rootfs.join("x").exists(), "file lands in the rootfs");
}

#[test]
fn masked_paths() {
    let mut c = TestContainer::new("mnt-masked");
    fs::create_dir(c.rootfs.join("secret")).unwrap();
    fs::write(c.rootfs.join("secret/key"), "hidden").unwrap();
    fs::write(c.rootfs.join("secretfile"), "hidden").unwrap();
    // /proc/kcore when the kernel has it (this one does not), else another masked
    // proc file that is never empty on the host.
    let proc_file = if Path::new("/proc/kcore").exists() {
        "/proc/kcore"
    } else {
        "/proc/timer_list"
    };
    c.masked_paths(&[proc_file, "/secret", "/secretfile", "/does/not/exist"]);
    c.sh(&format!(
        "wc -c < {proc_file}; ls -A /secret | wc -l; wc -c < /secretfile"
    ));
    let out = c.run();
    out.assert_ok("run");
    assert_eq!(
        out.lines(),
        vec!["0", "0", "0"],
        "masked file, dir and proc file are empty: {out}"
    );
    assert_eq!(fs::read_to_string(c.rootfs.join("secret/key")).unwrap(), "hidden");
}

#[test]
fn readonly_paths() {
    let mut c = TestContainer::new("mnt-ropaths");
    c.readonly(false);
    fs::create_dir(c.rootfs.join("ro")).unwrap();
    c.readonly_paths(&["/proc/sys", "/ro"]);
    // ip_forward is per network namespace (the container has its own): writing its
    // current value back is harmless even if the path were writable.
    c.sh("grep ' /proc/sys ' /proc/self/mountinfo; \
          v=$(cat /proc/sys/net/ipv4/ip_forward); \
          if echo $v > /proc/sys/net/ipv4/ip_forward; then echo sys-writable; else echo sys-ro; fi; \
          if touch /ro/x 2>/dev/null; then echo ro-writable; else echo ro-ro; fi; \
          touch /rw && echo rw-ok");
    let out = c.run();
    out.assert_ok("run");
    let l = out.lines();
    let opts = l[0].split_whitespace().nth(5).unwrap_or_default();
    assert!(opts.split(',').any(|o| o == "ro"), "/proc/sys mounted ro: {out}");
    assert_eq!(&l[1..], ["sys-ro", "ro-ro", "rw-ok"], "{out}");
}

#[test]
fn default_devices_and_dev_symlinks() {
    let mut c = TestContainer::new("mnt-devs");
    c.sh("echo hi > /dev/null && echo null-ok; head -c 4 /dev/zero | wc -c; \
          stat -c '%F %t %T' /dev/null /dev/zero /dev/full /dev/random /dev/urandom /dev/tty; \
          for l in /dev/fd /dev/stdin /dev/stdout /dev/stderr /dev/ptmx; do echo \"$l $(readlink $l)\"; done");
    let out = c.run();
    out.assert_ok("run");
    let l = out.lines();
    assert_eq!(l[0], "null-ok", "{out}");
    assert_eq!(l[1], "4", "{out}");
    let expect = [
        "character special file 1 3",
        "character special file 1 5",
        "character special file 1 7",
        "character special file 1 8",
        "character special file 1 9",
        "character special file 5 0",
    ];
    assert_eq!(&l[2..8], expect, "default devices: {out}");
    assert_eq!(
        &l[8..13],
        [
            "/dev/fd /proc/self/fd",
            "/dev/stdin /proc/self/fd/0",
            "/dev/stdout /proc/self/fd/1",
            "/dev/stderr /proc/self/fd/2",
            "/dev/ptmx pts/ptmx",
        ],
        "/dev symlinks: {out}"
    );
}

#[test]
fn linux_devices_entry() {
    let mut c = TestContainer::new("mnt-lnxdev");
    c.spec["linux"]["devices"] = json!([{
        "path": "/dev/vessel-zero", "type": "c", "major": 1, "minor": 5,
        "fileMode": 0o640, "uid": 0, "gid": 0
    }]);
    c.spec["linux"]["resources"]["devices"]
        .as_array_mut()
        .unwrap()
        .push(json!({"allow": true, "type": "c", "major": 1, "minor": 5, "access": "rwm"}));
    c.sh("stat -c '%F %t %T %a %u %g' /dev/vessel-zero; head -c 3 /dev/vessel-zero | wc -c");
    let out = c.run();
    out.assert_ok("run");
    assert_eq!(out.lines(), vec!["character special file 1 5 640 0 0", "3"], "{out}");
    // Nothing appeared on the host side of the rootfs.
    let host_dev = c.rootfs.join("dev/vessel-zero");
    assert!(
        !fs::symlink_metadata(&host_dev).is_ok_and(|m| m.file_type().is_char_device()),
        "device node made inside the container's /dev tmpfs, not in the rootfs"
    );
}

#[test]
fn symlink_mount_destination_stays_in_rootfs() {
    let mut c = TestContainer::new("mnt-escape");
    // A host dir the rootfs symlink points to; it must stay untouched.
    let host_target = Path::new("/tmp").join(format!("vessel-escape-{}", random_hex(6)));
    fs::create_dir(&host_target).unwrap();
    struct RmDir(std::path::PathBuf);
    impl Drop for RmDir {
        fn drop(&mut self) {
            for m in mounts_under(&self.0) {
                let p = CString::new(m.as_os_str().as_encoded_bytes()).unwrap();
                // SAFETY: umount2 with a valid C string.
                unsafe { libc::umount2(p.as_ptr(), libc::MNT_DETACH) };
            }
            let _ = fs::remove_dir_all(&self.0);
        }
    }
    let _rm = RmDir(host_target.clone());
    std::os::unix::fs::symlink(&host_target, c.rootfs.join("evil")).unwrap();
    let src = c.dir.join("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("payload"), "payload\n").unwrap();
    c.add_mount(json!({
        "destination": "/evil", "type": "bind", "source": src, "options": ["rbind", "rw"]
    }));
    c.sh("cat /evil/payload && echo marker > /evil/marker && echo wrote");
    let out = c.run();
    // Failing cleanly is acceptable; mounting onto the host path is not.
    if out.ok() {
        assert_eq!(out.lines(), vec!["payload", "wrote"], "{out}");
        assert!(src.join("marker").exists(), "write went to the bind source");
    }
    assert!(
        fs::read_dir(&host_target).unwrap().next().is_none(),
        "host dir {} must stay empty",
        host_target.display()
    );
    assert!(
        host_mounts_naming(&host_target).is_empty(),
        "no mount on the host path: {:?}",
        host_mounts_naming(&host_target)
    );
}

#[test]
fn no_pivot() {
    let mut c = TestContainer::new("mnt-nopivot");
    c.sh("ls /bin/busybox && cat /etc/hostname >/dev/null; echo pid=$$");
    c.write_spec();
    let out = c.oci(&["run", "--no-pivot", "--bundle", c.bundle.to_str().unwrap(), &c.id]);
    out.assert_ok("run --no-pivot");
    assert!(
        out.stdout.contains("/bin/busybox") && out.stdout.contains("pid=1"),
        "{out}"
    );
}

/// `linux.rootfsPropagation: "unbindable"` (crun applies it; runc 1.1.5 fails it with
/// "bind the rootfs onto itself: Invalid argument"-like errors): the container's "/"
/// ends up unbindable.
#[test]
fn rootfs_propagation_unbindable() {
    let mut c = TestContainer::new("mnt-unbindable");
    c.spec["linux"]["rootfsPropagation"] = json!("unbindable");
    c.sh("awk '$5 == \"/\"' /proc/self/mountinfo");
    let out = c.run();
    out.assert_ok("run");
    assert!(out.stdout.contains("unbindable"), "the new / is unbindable: {out}");
}

/// Recursive access-time options reach the submounts of a bind (mount_setattr with the
/// MOUNT_ATTR__ATIME field): `rnoatime` gives noatime, `rstrictatime` takes relatime away.
#[test]
fn recursive_atime_options_reach_submounts() {
    let mut c = TestContainer::new("mnt-ratime");
    let src = c.dir.join("tree");
    host_tmpfs(&src.join("sub"));
    c.add_mount(json!({
        "destination": "/na", "type": "bind", "source": src, "options": ["rbind", "rnoatime"]
    }));
    c.add_mount(json!({
        "destination": "/sa", "type": "bind", "source": src, "options": ["rbind", "rstrictatime"]
    }));
    c.sh("awk '$5 == \"/na/sub\" || $5 == \"/sa/sub\" {print $5, $6}' /proc/self/mountinfo");
    let out = c.run();
    out.assert_ok("run");
    let opts = |m: &str| -> Vec<String> {
        out.lines()
            .iter()
            .find_map(|l| {
                l.strip_prefix(&format!("{m} "))
                    .map(|o| o.split(',').map(String::from).collect())
            })
            .unwrap_or_else(|| panic!("no {m} in {out}"))
    };
    let na = opts("/na/sub");
    assert!(na.contains(&"noatime".to_string()), "rnoatime: {na:?}");
    let sa = opts("/sa/sub");
    assert!(
        !sa.contains(&"relatime".to_string()) && !sa.contains(&"noatime".to_string()),
        "rstrictatime: {sa:?}"
    );
}
