//! Images from containers end to end: `vessel commit` (files added, changed and deleted,
//! `--change`, a running container paused), `vessel diff`, `vessel push` to a real
//! docker-registry on 127.0.0.1 (a second push skips every blob; a registry with basic auth
//! refuses a push without `vessel login`), pull into a fresh root and run, `vessel tag`, and
//! `vessel cp` both ways for running and stopped containers, with symlinks in the container
//! aimed at a canary file in the test's temp dir.

#[path = "../../image/tests/common/mod.rs"]
mod common;
mod instance;
mod run_vessel;

use std::fs;
use std::os::unix::fs::MetadataExt;

use common::Registry;
use instance::{have, stderr, stdout, Instance};

/// The checks of what the second commit holds, run in a container of `image` of `i`.
fn assert_second_commit(i: &Instance, image: &str) {
    let script = "ls /data; cat /etc/motd /keep /added; \
                  busybox test -e /data/file || echo file-gone; busybox test -e /data/sub || echo sub-gone; \
                  busybox test -d /newdir && echo newdir";
    let out = i.ok(&["run", "--rm", image, "sh", "-c", script]);
    assert_eq!(out, "new\nkeep\nadded\nfile-gone\nsub-gone\nnewdir\n", "in {image}");
}

#[test]
fn commit_diff_run_push_pull_and_tag() {
    if !have(&["umoci", "busybox", "docker-registry"]) {
        return;
    }
    let i = Instance::new();
    let img = i.busybox();
    // Step 1: files and a directory that step 2 deletes.
    i.ok(&[
        "run",
        "--name",
        "c1",
        img,
        "sh",
        "-c",
        "mkdir -p /data/sub && echo old > /data/file && echo x > /data/sub/x && echo keep > /keep && echo orig > /etc/motd",
    ]);
    let id1 = i.ok(&["commit", "-q", "c1", "localhost/step:1"]).trim().to_string();
    assert_eq!(id1.len(), 64);
    // Step 2 on top: delete a file and a dir, change one, add a file and a dir.
    i.ok(&[
        "run",
        "--name",
        "c2",
        "localhost/step:1",
        "sh",
        "-c",
        "busybox rm /data/file && busybox rm -r /data/sub && echo new > /etc/motd && echo added > /added && mkdir /newdir",
    ]);
    let diff = i.ok(&["diff", "c2"]);
    assert_eq!(
        diff, "A /added\nC /data\nD /data/file\nD /data/sub\nC /etc\nC /etc/motd\nA /newdir\n",
        "docker's A/C/D lines"
    );
    let json: serde_json::Value = serde_json::from_str(&i.ok(&["diff", "--format", "json", "c2"])).unwrap();
    assert_eq!(json[0], serde_json::json!({"Path": "/added", "Kind": "A"}));

    let id2 = i
        .ok(&[
            "commit",
            "-m",
            "second step",
            "--author",
            "Tess <t@example.com>",
            "--change",
            r#"CMD ["cat","/added"]"#,
            "--change",
            "ENV=STEP=2",
            "c2",
            "localhost/step:2",
        ])
        .trim()
        .to_string();
    assert_ne!(id1, id2);
    // The new image runs its new CMD and holds the changes; deleted entries stay deleted.
    assert_eq!(i.ok(&["run", "--rm", "localhost/step:2"]), "added\n");
    assert_eq!(
        i.ok(&["run", "--rm", "localhost/step:2", "sh", "-c", "echo $STEP"]),
        "2\n"
    );
    assert_second_commit(&i, "localhost/step:2");

    // The image commands see it: images, inspect (history, diff ids, author), tag, rmi.
    assert!(i.ok(&["images"]).contains(&id2[..12]));
    let v: serde_json::Value = serde_json::from_str(&i.ok(&["image", "inspect", "localhost/step:2"])).unwrap();
    let config = &v[0]["Config"];
    assert_eq!(config["author"], "Tess <t@example.com>");
    assert_eq!(config["config"]["Cmd"], serde_json::json!(["cat", "/added"]));
    assert_eq!(config["rootfs"]["diff_ids"].as_array().unwrap().len(), 3);
    let history = config["history"].as_array().unwrap();
    assert_eq!(history.last().unwrap()["comment"], "second step");
    assert_eq!(v[0]["Manifest"]["layers"].as_array().unwrap().len(), 3);
    i.ok(&["tag", "localhost/step:2", "localhost/other:9"]);
    let v: serde_json::Value = serde_json::from_str(&i.ok(&["image", "inspect", "localhost/other:9"])).unwrap();
    assert_eq!(v[0]["Id"], id2.as_str());
    i.ok(&["rmi", "localhost/other:9"]);
    assert!(i.ok(&["image", "inspect", &id2[..12]]).contains("localhost/step:2"));

    // Push to a registry on loopback (plain http, as the pull uses there).
    let t = tempfile::tempdir().unwrap();
    let reg = Registry::start(&t.path().join("reg"), None);
    let dest = format!("{}/commit/step:2", reg.addr);
    let o = i.v(&["push", "localhost/step:2", &dest]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stderr(&o).matches("skipped: already exists").count(), 0);
    // A second push finds every blob there (HEAD) and uploads none.
    let o = i.v(&["push", "localhost/step:2", &dest]);
    assert!(o.status.success());
    assert_eq!(
        stderr(&o).matches("skipped: already exists").count(),
        4,
        "3 layers and the config"
    );
    assert_eq!(stderr(&o).matches(" done").count(), 0);
    let manifest = stdout(&o).trim().to_string();

    // Other tools read the layers the same way: skopeo copies it out, umoci unpacks it
    // (its OCI whiteouts applied, no runtime mount point in it).
    if have(&["skopeo"]) {
        common::sh(
            &format!(
                "skopeo copy -q --src-tls-verify=false docker://{dest} oci:from-reg:1 \
                 && umoci unpack --image from-reg:1 u >/dev/null \
                 && test ! -e u/rootfs/data/file && test ! -e u/rootfs/data/sub && test -d u/rootfs/newdir \
                 && grep -qx new u/rootfs/etc/motd && grep -qx added u/rootfs/added \
                 && test ! -e u/rootfs/proc && test ! -e u/rootfs/etc/hosts && rm -rf u"
            ),
            t.path(),
        );
    }

    // A fresh root pulls it by name and runs it as committed.
    let fresh = Instance::new();
    let pulled = fresh.ok(&["pull", "-q", &dest]).trim().to_string();
    assert_eq!(pulled, id2, "the same config digest");
    let v: serde_json::Value = serde_json::from_str(&fresh.ok(&["image", "inspect", &dest])).unwrap();
    assert_eq!(v[0]["Digest"], manifest.as_str(), "the manifest pushed byte for byte");
    assert_eq!(fresh.ok(&["run", "--rm", &dest]), "added\n");
    assert_second_commit(&fresh, &dest);
}

#[test]
fn commit_of_a_running_container_pauses_it_and_host_containers_are_refused() {
    if !have(&["umoci", "busybox"]) {
        return;
    }
    let i = Instance::new();
    let img = i.busybox();
    i.ok(&["run", "-d", "--name", "live", img, "sleep", "1000"]);
    i.ok(&["exec", "live", "sh", "-c", "echo running > /state"]);
    i.ok(&["commit", "-q", "live", "localhost/live:1"]);
    let ps: serde_json::Value = serde_json::from_str(&i.ok(&["ps", "--format", "json"])).unwrap();
    assert_eq!(ps[0]["State"], "running", "thawed after the commit");
    // docker's boolean flag: `--pause` alone takes no value, `--pause=false` does not freeze.
    i.ok(&["commit", "--pause", "live", "localhost/live:2"]);
    i.ok(&["commit", "--pause=false", "live", "localhost/live:3"]);
    let ps: serde_json::Value = serde_json::from_str(&i.ok(&["ps", "--format", "json"])).unwrap();
    assert_eq!(ps[0]["State"], "running");
    assert_eq!(i.ok(&["run", "--rm", "localhost/live:1", "cat", "/state"]), "running\n");
    // docker keeps the container's own command as the new image's CMD.
    let v: serde_json::Value = serde_json::from_str(&i.ok(&["image", "inspect", "localhost/live:1"])).unwrap();
    assert_eq!(v[0]["Config"]["config"]["Cmd"], serde_json::json!(["sleep", "1000"]));

    // What the runtime made to mount on (/proc, /dev, /sys, /etc/hosts, ...) is no change.
    i.ok(&["run", "--name", "fresh", img, "true"]);
    assert_eq!(i.ok(&["diff", "fresh"]), "");
    // A host container: its own files over the skeleton, its /etc over the host's.
    i.ok(&[
        "run",
        "--name",
        "hd",
        "host",
        "sh",
        "-c",
        "echo y > /root/y && echo x > /etc/vessel-diff-probe",
    ]);
    let d = i.ok(&["diff", "hd"]);
    for line in ["C /root\n", "A /root/y\n", "C /etc\n", "A /etc/vessel-diff-probe\n"] {
        assert!(d.contains(line), "{line:?} in {d}");
    }
    assert!(!d.contains("/proc") && !d.contains("/usr"), "{d}");

    i.ok(&["create", "--name", "h", "host", "true"]);
    let o = i.v(&["commit", "h", "localhost/h:1"]);
    assert_eq!(o.status.code(), Some(125));
    assert!(stderr(&o).contains("host image"), "{}", stderr(&o));
    assert!(!i.v(&["image", "inspect", "localhost/h:1"]).status.success());
    let o = i.v(&["commit", "--change", "FROM x", "live", "localhost/bad:1"]);
    assert_eq!(o.status.code(), Some(125));
    assert!(stderr(&o).contains("FROM"), "{}", stderr(&o));
}

#[test]
fn push_to_a_registry_with_basic_auth_needs_login() {
    if !have(&["umoci", "busybox", "docker-registry", "htpasswd"]) {
        return;
    }
    let i = Instance::new();
    let img = i.busybox();
    let t = tempfile::tempdir().unwrap();
    let htp = t.path().join("htpasswd");
    common::sh(
        &format!("htpasswd -Bbc {} alice s3cret 2>/dev/null", htp.display()),
        t.path(),
    );
    let reg = Registry::start(&t.path().join("reg"), Some(&htp));
    let dest = format!("{}/private/bb:1", reg.addr);
    let o = i.v(&["push", img, &dest]);
    assert_eq!(o.status.code(), Some(125));
    let err = stderr(&o);
    assert!(err.contains(&reg.addr) && err.contains("vessel login"), "{err}");
    assert!(!err.contains("http://"), "no URL in the message: {err}");
    assert_eq!(
        err.lines().filter(|l| l.starts_with("vessel:")).count(),
        1,
        "one error line: {err}"
    );
    assert!(err.contains("401"), "{err}");
    let o = i.with_stdin(&["login", "-u", "alice", "--password-stdin", &reg.addr], "s3cret\n");
    assert!(o.status.success(), "{}", stderr(&o));
    i.ok(&["push", img, &dest]);
    let fresh = Instance::new();
    fresh.ok(&["pull", "--creds", "alice:s3cret", &dest]);
}

#[test]
fn cp_both_ways_for_running_and_stopped_containers_never_leaves_the_root() {
    if !have(&["umoci", "busybox"]) {
        return;
    }
    let i = Instance::new();
    let img = i.busybox();
    let t = tempfile::tempdir().unwrap();
    let tp = t.path().display().to_string();
    let canary = t.path().join("canary");
    fs::write(&canary, "host secret\n").unwrap();
    i.ok(&["run", "-d", "--name", "c", img, "sleep", "1000"]);
    // Symlinks in the container that name the canary's host path, absolute and relative.
    let script = format!(
        "busybox ln -s {tp} /escape && busybox ln -s {tp}/canary /escfile \
         && busybox ln -s ../../../../../../../../..{tp} /dotdot \
         && echo inside > /inside.txt && mkdir -p /d/e && echo 1 > /d/a && echo 2 > /d/e/b"
    );
    i.ok(&["exec", "c", "sh", "-c", &script]);

    // Out: a file, a directory (into a new name, into an existing dir, its content with /.).
    i.ok(&["cp", "c:/inside.txt", &format!("{tp}/out.txt")]);
    assert_eq!(fs::read_to_string(t.path().join("out.txt")).unwrap(), "inside\n");
    i.ok(&["cp", "c:/d", &format!("{tp}/outdir")]);
    assert_eq!(fs::read_to_string(t.path().join("outdir/e/b")).unwrap(), "2\n");
    i.ok(&["cp", "c:/d", &format!("{tp}/outdir")]);
    assert_eq!(fs::read_to_string(t.path().join("outdir/d/a")).unwrap(), "1\n");
    fs::create_dir(t.path().join("flat")).unwrap();
    i.ok(&["cp", "c:/d/.", &format!("{tp}/flat")]);
    assert_eq!(fs::read_to_string(t.path().join("flat/a")).unwrap(), "1\n");

    // In: owned by root inside unless -a; a directory into an existing one.
    let h = t.path().join("h.txt");
    fs::write(&h, "from host\n").unwrap();
    std::os::unix::fs::chown(&h, Some(1234), Some(1234)).unwrap();
    i.ok(&["cp", &h.display().to_string(), "c:/in.txt"]);
    assert_eq!(i.ok(&["exec", "c", "stat", "-c", "%u:%g %s", "/in.txt"]), "0:0 10\n");
    i.ok(&["cp", "-a", &h.display().to_string(), "c:/in-a.txt"]);
    assert_eq!(i.ok(&["exec", "c", "stat", "-c", "%u:%g", "/in-a.txt"]), "1234:1234\n");
    fs::create_dir_all(t.path().join("hdir/sub")).unwrap();
    fs::write(t.path().join("hdir/sub/f"), "f\n").unwrap();
    i.ok(&["cp", &format!("{tp}/hdir"), "c:/d"]);
    assert_eq!(i.ok(&["exec", "c", "cat", "/d/hdir/sub/f"]), "f\n");

    // Escapes: every symlink resolves inside the container's root.
    for dest in ["c:/escape/canary", "c:/dotdot/canary"] {
        let o = i.v(&["cp", &h.display().to_string(), dest]);
        assert_eq!(o.status.code(), Some(125), "{dest}");
    }
    for src in ["c:/escape/canary", "c:/dotdot/canary"] {
        let stolen = t.path().join("stolen");
        let o = i.v(&["cp", src, &stolen.display().to_string()]);
        assert_eq!(o.status.code(), Some(125), "{src}");
        assert!(fs::symlink_metadata(&stolen).is_err(), "{src} reached the host");
    }
    // Copying onto a symlink replaces the link inside; copying one out copies the link.
    i.ok(&["cp", &h.display().to_string(), "c:/escfile"]);
    assert_eq!(i.ok(&["exec", "c", "cat", "/escfile"]), "from host\n");
    i.ok(&["exec", "c", "sh", "-c", &format!("busybox ln -s {tp}/canary /escfile2")]);
    let link_out = t.path().join("link-out");
    i.ok(&["cp", "c:/escfile2", &link_out.display().to_string()]);
    assert!(fs::symlink_metadata(&link_out).unwrap().file_type().is_symlink());
    assert_eq!(
        fs::read_to_string(&canary).unwrap(),
        "host secret\n",
        "the canary is untouched"
    );
    assert_eq!(fs::metadata(&canary).unwrap().uid(), 0);

    // `-`: a tar of the source on stdout; a tar on stdin unpacked into a directory.
    let o = i.cmd().args(["cp", "c:/d", "-"]).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    fs::write(t.path().join("out.tar"), &o.stdout).unwrap();
    let listing = common::sh_out("tar -tf out.tar | sort", t.path());
    assert!(listing.contains("d/\nd/a\nd/e/\nd/e/b\n"), "{listing}");
    common::sh(
        "mkdir -p src/sub && echo t > src/sub/t && tar -C src -cf in.tar sub",
        t.path(),
    );
    let tar_in = |file: &str, dest: &str| {
        let f = fs::File::open(t.path().join(file)).unwrap();
        let o = i.cmd().args(["cp", "-", dest]).stdin(f).output().unwrap();
        eprintln!("cp - {dest} < {file}: {}\n{}", o.status, stderr(&o));
        o
    };
    assert!(tar_in("in.tar", "c:/d").status.success());
    assert_eq!(i.ok(&["exec", "c", "cat", "/d/sub/t"]), "t\n");
    // Tar entries that lead out (`..`, through the /escape symlink) are refused.
    let py = format!(
        "import tarfile, io\n\
         for name, out in (('../../../../../..{tp}/canary', 'dotdot.tar'), ('escape/canary', 'link.tar')):\n\
         \x20   t = tarfile.open(out, 'w'); i = tarfile.TarInfo(name); i.size = 4\n\
         \x20   t.addfile(i, io.BytesIO(b'evil')); t.close()\n"
    );
    fs::write(t.path().join("evil.py"), py).unwrap();
    common::sh("python3 evil.py", t.path());
    for (evil, says) in [("dotdot.tar", "leads out"), ("link.tar", "passes through escape")] {
        let o = tar_in(evil, "c:/");
        assert_eq!(o.status.code(), Some(125), "{evil}");
        assert!(stderr(&o).contains(says), "{evil}: {}", stderr(&o));
    }
    assert_eq!(
        fs::read_to_string(&canary).unwrap(),
        "host secret\n",
        "the canary is untouched"
    );

    // A stopped container: its root is mounted for the copy and unmounted after.
    i.ok(&["stop", "-t", "1", "c"]);
    let before = i.mounts_under_root().len();
    i.ok(&["cp", "c:/inside.txt", &format!("{tp}/stopped.txt")]);
    assert_eq!(fs::read_to_string(t.path().join("stopped.txt")).unwrap(), "inside\n");
    i.ok(&["cp", &h.display().to_string(), "c:/after.txt"]);
    assert_eq!(i.mounts_under_root().len(), before, "nothing left mounted");
    i.ok(&["start", "c"]);
    assert_eq!(i.ok(&["exec", "c", "cat", "/after.txt"]), "from host\n");
    let o = i.v(&["cp", "c:/nothere", &tp]);
    assert_eq!(o.status.code(), Some(125));
    assert!(stderr(&o).contains("/nothere"), "{}", stderr(&o));
}

fn python_jwt() -> bool {
    let ok = std::process::Command::new("/usr/bin/python3")
        .args(["-c", "import jwt, cryptography"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !ok {
        eprintln!("\n!!!!! SKIPPED: python3 jwt/cryptography missing (apt-get install python3-jwt python3-cryptography) !!!!!\n");
    }
    ok
}

#[test]
fn push_with_bearer_token_auth_after_login() {
    if !have(&["umoci", "busybox", "docker-registry", "python3"]) || !python_jwt() {
        return;
    }
    let i = Instance::new();
    let img = i.busybox();
    let t = tempfile::tempdir().unwrap();
    // Dropped in reverse order: the registry first, then the token server (both by pid).
    let tokens = common::TokenServer::start(&t.path().join("tokens"), "alice", "s3cret");
    let reg = Registry::start_with_tokens(&t.path().join("reg"), &tokens);
    let dest = format!("{}/private/pushed:1", reg.addr);
    // Anonymous: the token grants nothing, the registry refuses.
    let o = i.v(&["push", img, &dest]);
    assert_eq!(o.status.code(), Some(125));
    assert!(stderr(&o).contains("vessel login"), "{}", stderr(&o));
    let o = i.with_stdin(&["login", "-u", "alice", "--password-stdin", &reg.addr], "s3cret\n");
    assert!(o.status.success(), "{}", stderr(&o));
    i.ok(&["push", img, &dest]);
    assert!(
        tokens.requests().contains("alice repository:private/pushed:pull,push"),
        "{}",
        tokens.requests()
    );
    let fresh = Instance::new();
    fresh.ok(&["pull", "--creds", "alice:s3cret", &dest]);
    assert_eq!(fresh.ok(&["run", "--rm", &dest, "echo", "pushed"]), "pushed\n");
}
