//! Images from containers (`vessel commit`) and a container's changes (`vessel diff`), as
//! docker has them: the writable upper dir of the container's active snapshot over its
//! image's layers becomes a new top layer ([`vessel_image::commit`]); a running container is
//! paused while the layer is read, so that it is one consistent state.

use std::collections::HashSet;
use std::path::PathBuf;

use vessel_image::commit::{CommitOptions, ConfigChange};
use vessel_image::diff::{self, Change};
use vessel_image::{ImageError, ImageRecord, Reference};

use crate::containers::Engine;
use crate::db::{Record, State};
use crate::error::{Error, Result};
use crate::rootfs::{self, HOST_IMAGE};

/// What `vessel commit` asks for besides the container.
#[derive(Clone, Debug, Default)]
pub struct CommitRequest {
    /// `IMAGE[:TAG]`; None makes an image without a name (docker's `<none>`).
    pub name: Option<String>,
    /// `--message`.
    pub message: Option<String>,
    /// `--author`.
    pub author: Option<String>,
    /// `--change` instructions, as given (`CMD ["a"]`, `ENV=K=V`, ...).
    pub changes: Vec<String>,
    /// `--pause` (docker's default: true): freeze a running container while its layer is read.
    pub pause: bool,
}

/// Thaws a container paused for a commit, also when the commit fails.
struct Thaw<'a> {
    engine: &'a Engine,
    record: Option<&'a Record>,
}

impl Drop for Thaw<'_> {
    fn drop(&mut self) {
        if let Some(r) = self.record {
            if let Err(e) = self.engine.pause(r, false) {
                eprintln!("vessel: warning: unpause {} after commit: {e}", r.name);
            }
        }
    }
}

/// What the container was run with, as config changes (docker's commit keeps the container's
/// own command, entrypoint, env, working dir and user in the new image).
fn run_defaults(r: &Record) -> Vec<ConfigChange> {
    let o = &r.options;
    let mut out = Vec::new();
    if let Some(e) = &o.entrypoint {
        out.push(ConfigChange::Entrypoint(if e.is_empty() {
            Vec::new()
        } else {
            vec![e.clone()]
        }));
    }
    if !o.command.is_empty() {
        out.push(ConfigChange::Cmd(o.command.clone()));
    }
    let env: Vec<(String, String)> = o
        .env
        .iter()
        .filter_map(|e| e.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())))
        .collect();
    if !env.is_empty() {
        out.push(ConfigChange::Env(env));
    }
    if let Some(w) = &o.workdir {
        out.push(ConfigChange::Workdir(w.clone()));
    }
    if let Some(u) = &o.user {
        out.push(ConfigChange::User(u.clone()));
    }
    out
}

impl Engine {
    /// The mount destinations of `r`'s config.json (none when it cannot be read).
    fn mount_points(&self, r: &Record) -> Vec<PathBuf> {
        self.spec(r)
            .ok()
            .and_then(|s| s.mounts().clone())
            .unwrap_or_default()
            .iter()
            .map(|m| m.destination().clone())
            .collect()
    }

    /// `vessel commit`: a new image of `r`'s image layers plus its changes, named `req.name`,
    /// created now.
    ///
    /// # Errors
    /// [`Error::BadInput`] for a container of the `host` image (its /usr is the host's: back
    /// it up or export it instead), a malformed `--change` or name; [`Error::Image`] when the
    /// container's image is gone from the store or the layer cannot be written;
    /// [`Error::Runtime`] when a running container cannot be paused.
    pub fn commit(&self, r: &Record, req: &CommitRequest) -> Result<ImageRecord> {
        if r.image_id == HOST_IMAGE || r.image == HOST_IMAGE {
            return Err(Error::BadInput(format!(
                "container {} runs the built-in host image, whose /usr is the host's own: it cannot become an image; \
                 copy its files out with `vessel cp` or back it up instead",
                r.name
            )));
        }
        let mut changes = Vec::new();
        for c in &req.changes {
            changes.push(ConfigChange::parse(c).map_err(Error::BadInput)?);
        }
        let names = match &req.name {
            Some(n) => vec![Reference::parse(n)?.to_string()],
            None => Vec::new(),
        };
        let store = self.store()?;
        let base = match vessel_image::records::find_image(&store, &r.image_id) {
            Ok(b) => b,
            Err(ImageError::ImageNotFound { .. }) => {
                return Err(Error::BadInput(format!(
                "the image of container {} ({}, {}) is no longer in the store: pull it again to commit the container",
                r.name, r.image, r.image_id
            )))
            }
            Err(e) => return Err(e.into()),
        };
        let active = store.snapshots().active(&r.id)?;
        // A stopped container with a disk quota has its upper on its own file system.
        let _writable = rootfs::writable(&store, &self.paths.bundle(&r.id), &r.id)?;
        let owners = owner_map(r);
        let skip = diff::placeholders(&active.upper, &active.lowers, &self.mount_points(r), owners.as_ref());
        let opts = CommitOptions {
            names,
            created: vessel_runtime::state::now_rfc3339(),
            message: req.message.clone(),
            author: req.author.clone(),
            created_by: r.command.join(" "),
            defaults: run_defaults(r),
            changes,
            skip,
            owners,
        };
        let fresh = self.find(&r.id)?;
        let _thaw = if req.pause && fresh.state == State::Running {
            self.pause(&fresh, true)?;
            Thaw {
                engine: self,
                record: Some(&fresh),
            }
        } else {
            Thaw {
                engine: self,
                record: None,
            }
        };
        Ok(vessel_image::commit::commit(&store, Some(&base), &active.upper, &opts)?)
    }

    /// `vessel diff`: the container's changes, sorted by path (docker's `A`/`C`/`D`). For a
    /// container of the `host` image: its own files (all `A` over the empty skeleton) and
    /// its private /etc's changes over the host's /etc.
    ///
    /// # Errors
    /// [`Error::Image`] when the container's snapshot or its image's layers are gone or the
    /// upper dir cannot be read.
    pub fn diff(&self, r: &Record) -> Result<Vec<Change>> {
        let store = self.store()?;
        let active = store.snapshots().active(&r.id)?;
        let _writable = rootfs::writable(&store, &self.paths.bundle(&r.id), &r.id)?;
        let mut lowers = active.lowers.clone();
        if r.image_id == HOST_IMAGE {
            // Its root's lower: the skeleton (empty /usr, /var, /root, ...).
            lowers.push(rootfs::host_skeleton(&store)?);
        }
        let skip = diff::placeholders(&active.upper, &lowers, &self.mount_points(r), owner_map(r).as_ref());
        let mut out = diff::changes(&active.upper, &lowers, &skip)?;
        if r.image_id == HOST_IMAGE {
            let etc_upper = self.paths.bundle(&r.id).join("host-etc/upper");
            if etc_upper.is_dir() {
                out.retain(|c| c.path != "/etc");
                out.push(Change {
                    path: "/etc".into(),
                    kind: diff::ChangeKind::Changed,
                });
                for mut c in diff::changes(&etc_upper, &[PathBuf::from("/etc")], &HashSet::new())? {
                    c.path = format!("/etc{}", c.path);
                    out.push(c);
                }
                out.sort();
            }
        }
        Ok(out)
    }
}

/// The maps of a container in its own user namespace, for layers and diffs made from its
/// upper dir (None with the host's ids).
fn owner_map(r: &Record) -> Option<diff::OwnerMap> {
    r.options.id_mappings.as_ref().map(|m| {
        let lines = |v: &[crate::options::IdMap]| v.iter().map(|l| (l.container, l.host, l.size)).collect();
        diff::OwnerMap {
            uid: lines(&m.uid),
            gid: lines(&m.gid),
        }
    })
}
