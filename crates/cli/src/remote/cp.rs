//! `vessel --remote NAME cp` through the Docker API's archive endpoints: `GET
//! /containers/{id}/archive?path=SRC` (a tar of SRC) and `PUT ...?path=DIR` (a tar
//! unpacked into DIR). The tar is made or unpacked here, streamed both ways (nothing is
//! held whole in memory), with docker's rules for the destination: an existing
//! directory receives the copy under the source's name, another path is the copy's
//! new name. `-`: the tar itself on stdout or from stdin.

use std::io::{Read, Write};
use std::path::{Component, Path, PathBuf};
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};

use anyhow::{bail, Context, Result};
use http_body_util::BodyExt;
use hyper::body::{Bytes, Frame};
use hyper::Method;
use tokio::sync::mpsc;
use vessel_api::client::{query_escape, ClientError, Remote};

use crate::cp::{container_path, CpArgs};

/// A request body fed by a thread (the tar being made, or stdin).
struct Fed(mpsc::Receiver<std::io::Result<Bytes>>);

impl hyper::body::Body for Fed {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<std::io::Result<Frame<Bytes>>>> {
        self.0.poll_recv(cx).map(|o| o.map(|r| r.map(Frame::data)))
    }
}

/// The `Write` end of a [`Fed`] body.
struct Feeder(mpsc::Sender<std::io::Result<Bytes>>);

impl Write for Feeder {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .blocking_send(Ok(Bytes::copy_from_slice(buf)))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the remote stopped reading"))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn archive_path(name: &str, path: &str) -> String {
    let path = if path.is_empty() { "/" } else { path };
    format!(
        "/v1.41/containers/{}/archive?path={}",
        query_escape(name),
        query_escape(path)
    )
}

/// The remote's error answer as an error.
async fn api_error(resp: hyper::Response<hyper::body::Incoming>) -> anyhow::Error {
    let status = resp.status();
    let bytes = resp
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let message = serde_json::from_slice::<serde_json::Value>(&bytes)
        .ok()
        .and_then(|v| v["message"].as_str().map(String::from))
        .unwrap_or_else(|| String::from_utf8_lossy(&bytes).into_owned());
    ClientError::Api { status, message }.into()
}

/// `GET` the tar of `src` in container `name`; the answer, its body to read.
async fn tar_of(remote: &Remote, name: &str, src: &str) -> Result<hyper::Response<hyper::body::Incoming>> {
    let resp = remote
        .request_stream(
            Method::GET,
            &archive_path(name, src),
            "application/json",
            http_body_util::Empty::<Bytes>::new(),
        )
        .await?;
    if !resp.status().is_success() {
        return Err(api_error(resp).await);
    }
    Ok(resp)
}

/// Whether `path` is a directory in container `name` (None: it does not exist): the
/// type of the first entry of its tar, which is the path itself (the rest is not read).
async fn remote_kind(remote: &Remote, name: &str, path: &str) -> Result<Option<bool>> {
    let resp = remote
        .request_stream(
            Method::GET,
            &archive_path(name, path.trim_end_matches("/.")),
            "application/json",
            http_body_util::Empty::<Bytes>::new(),
        )
        .await?;
    if resp.status().is_client_error() {
        return Ok(None);
    }
    if !resp.status().is_success() {
        return Err(api_error(resp).await);
    }
    let mut body = resp.into_body();
    let mut head = Vec::new();
    while head.len() < 512 {
        match body.frame().await {
            Some(f) => {
                if let Ok(d) = f.context("read from the remote")?.into_data() {
                    head.extend_from_slice(&d);
                }
            }
            None => break,
        }
    }
    Ok(Some(head.len() >= 512 && head[156] == b'5'))
}

/// Streams `resp`'s body into a thread running `f` on it as a `Read`.
async fn with_body_reader<T: Send + 'static>(
    resp: hyper::Response<hyper::body::Incoming>,
    f: impl FnOnce(&mut dyn Read) -> Result<T> + Send + 'static,
) -> Result<T> {
    let (tx, mut rx) = mpsc::channel::<Bytes>(8);
    let worker = std::thread::spawn(move || {
        let mut r = ChanReader {
            rx: &mut rx,
            cur: Bytes::new(),
        };
        f(&mut r)
    });
    let mut body = resp.into_body();
    let mut cut = None;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(f) => {
                if let Ok(d) = f.into_data() {
                    if tx.send(d).await.is_err() {
                        break;
                    }
                }
            }
            Err(e) => {
                cut = Some(e);
                break;
            }
        }
    }
    drop(tx);
    let out = tokio::task::spawn_blocking(move || worker.join())
        .await
        .context("join the copy")?
        .map_err(|_| anyhow::anyhow!("the copy thread panicked"))??;
    if let Some(e) = cut {
        bail!("the remote's tar stream broke off: {e}");
    }
    Ok(out)
}

struct ChanReader<'a> {
    rx: &'a mut mpsc::Receiver<Bytes>,
    cur: Bytes,
}

impl Read for ChanReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.cur.is_empty() {
            match self.rx.blocking_recv() {
                Some(b) => self.cur = b,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.cur.len());
        buf[..n].copy_from_slice(&self.cur[..n]);
        self.cur = self.cur.slice(n..);
        Ok(n)
    }
}

/// A relative entry name without `..` or a root: the only names unpacked here.
fn safe_relative(p: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            _ => return None,
        }
    }
    (!out.as_os_str().is_empty()).then_some(out)
}

/// Unpacks the tar on `input` at `dest` on this host: under `dest` when it is an
/// existing directory, else with the first component of each name replaced by
/// `dest`'s own name (in its parent). Entries whose names leave the destination are
/// refused; `archive` keeps the owners.
fn unpack_here(input: &mut dyn Read, dest: &Path, archive: bool) -> Result<()> {
    let into_dir = dest.is_dir();
    let (base, rename) = if into_dir {
        (dest.to_path_buf(), None)
    } else {
        let parent = match dest.parent().filter(|p| !p.as_os_str().is_empty()) {
            Some(p) => p.to_path_buf(),
            None => PathBuf::from("."),
        };
        if !parent.is_dir() {
            bail!("the destination's directory {} does not exist", parent.display());
        }
        let name = dest.file_name().context("the destination has no name")?;
        (parent, Some(PathBuf::from(name)))
    };
    let mut a = tar::Archive::new(input);
    a.set_preserve_permissions(true);
    a.set_preserve_ownerships(archive);
    a.set_overwrite(true);
    for entry in a.entries().context("read the tar")? {
        let mut e = entry.context("read the tar")?;
        let raw = e.path().context("a tar entry's name")?.into_owned();
        let rel = safe_relative(&raw)
            .with_context(|| format!("tar entry {} leads out of the destination: refused", raw.display()))?;
        let rel = match &rename {
            Some(new) => {
                let mut c = rel.components();
                c.next();
                match c.as_path() {
                    rest if rest.as_os_str().is_empty() => new.clone(),
                    rest => new.join(rest),
                }
            }
            None => rel,
        };
        // Nothing is written through a symlink (one the tar made, or one that was here).
        let full = base.join(&rel);
        let mut at = base.clone();
        for c in rel.parent().unwrap_or(Path::new("")).components() {
            at.push(c);
            match std::fs::symlink_metadata(&at) {
                Ok(m) if m.file_type().is_symlink() => {
                    bail!(
                        "tar entry {} leads through the symlink {}: refused",
                        raw.display(),
                        at.display()
                    )
                }
                Ok(_) => {}
                Err(_) => std::fs::create_dir_all(&at).with_context(|| format!("create {}", at.display()))?,
            }
        }
        e.unpack(&full).with_context(|| format!("unpack {}", full.display()))?;
    }
    Ok(())
}

/// `vessel --remote R cp`.
pub(super) async fn cp(remote: &Remote, a: &CpArgs) -> Result<i32> {
    match (container_path(&a.source), container_path(&a.destination)) {
        (Some((name, src)), None) if a.destination == "-" => {
            let resp = tar_of(remote, name, src).await?;
            with_body_reader(resp, |r| {
                let mut out = std::io::stdout().lock();
                std::io::copy(r, &mut out).context("write the tar to stdout")?;
                out.flush()?;
                Ok(())
            })
            .await?;
        }
        (None, Some((name, dest))) if a.source == "-" => {
            let (tx, rx) = mpsc::channel(8);
            std::thread::spawn(move || {
                let mut f = Feeder(tx.clone());
                if let Err(e) = std::io::copy(&mut std::io::stdin().lock(), &mut f) {
                    let _ = tx.blocking_send(Err(e));
                }
            });
            put(remote, name, dest, a.archive, Fed(rx)).await?;
        }
        (Some((name, src)), None) => {
            let dest = PathBuf::from(&a.destination);
            if src.ends_with("/.") && !dest.exists() {
                // `SRC/.`: its content goes into DEST, made now.
                std::fs::create_dir(&dest).with_context(|| format!("create {}", dest.display()))?;
            }
            let resp = tar_of(remote, name, src).await?;
            let archive = a.archive;
            with_body_reader(resp, move |r| unpack_here(r, &dest, archive)).await?;
        }
        (None, Some((name, dest))) => {
            let src = PathBuf::from(&a.source);
            let meta = std::fs::symlink_metadata(&src)
                .with_context(|| format!("could not find the file {} on this host", src.display()))?;
            let dest = if dest.is_empty() { "/" } else { dest };
            // An existing directory receives the copy under the source's name (`SRC/.`:
            // its content); another path is the copy's new name, made in its parent.
            let contents = a.source.ends_with("/.");
            let (dir, top) = match remote_kind(remote, name, dest).await? {
                Some(true) if contents => (dest.to_string(), None),
                Some(true) => (dest.to_string(), src.file_name().map(PathBuf::from)),
                Some(false) if meta.is_dir() => {
                    bail!("cannot copy directory {} onto the file {dest}", src.display())
                }
                _ => {
                    let p = Path::new(dest);
                    let parent = p.parent().map_or("/".to_string(), |x| x.display().to_string());
                    (parent, p.file_name().map(PathBuf::from))
                }
            };
            let (tx, rx) = mpsc::channel(8);
            std::thread::spawn(move || {
                let mut b = tar::Builder::new(Feeder(tx.clone()));
                b.follow_symlinks(false);
                let made = match top {
                    Some(t) if meta.is_dir() => b.append_dir_all(&t, &src),
                    Some(t) => b.append_path_with_name(&src, &t),
                    None => append_children(&mut b, &src),
                };
                if let Err(e) = made.and_then(|()| b.finish()) {
                    let _ = tx.blocking_send(Err(e));
                }
            });
            put(remote, name, &dir, a.archive, Fed(rx)).await?;
        }
        (Some(_), Some(_)) => bail!("copying between containers is not supported: copy to the host first"),
        (None, None) => bail!("one of source and destination must be CONTAINER:PATH"),
    }
    Ok(0)
}

/// The entries of directory `src`, each under its own name (`cp SRC/. ...`).
fn append_children(b: &mut tar::Builder<Feeder>, src: &Path) -> std::io::Result<()> {
    for e in std::fs::read_dir(src)? {
        let e = e?;
        if e.file_type()?.is_dir() {
            b.append_dir_all(e.file_name(), e.path())?;
        } else {
            b.append_path_with_name(e.path(), e.file_name())?;
        }
    }
    Ok(())
}

async fn put(remote: &Remote, name: &str, dir: &str, archive: bool, body: Fed) -> Result<()> {
    let path = format!("{}&copyUIDGID={}", archive_path(name, dir), u8::from(archive));
    let resp = remote
        .request_stream(Method::PUT, &path, "application/x-tar", body)
        .await?;
    if !resp.status().is_success() {
        return Err(api_error(resp).await);
    }
    Ok(())
}
