//! Networks as objects a user manages (`vessel network rm`, the Docker API's
//! `/networks`): which containers use a network, its removal with its warm attachments,
//! and `docker network connect`/`disconnect` ([`connect`], [`disconnect`]). The
//! attachments themselves are [`crate::network`]'s (the first) and
//! [`crate::network_more`]'s (the others).
//!
//! A container on a bridge network is connected to another as docker does it: one more
//! interface (`eth1`, ...) in its network namespace, at once when it is live and at
//! every start after (its options' `more_networks`); disconnect takes it out again. Its
//! first network is the one its namespace was made for: a live container cannot leave
//! it ([`Error::Unsupported`]); a created (never started) or exited one moves, its next
//! network becoming its first ([`reconnect`]). A container on `--network none` that
//! does not run is moved onto the network it is connected to.

use std::time::Duration;

use vessel_net::{Networks, DEFAULT_NETWORK};

use crate::containers::Engine;
use crate::db::{Record, State};
use crate::error::{Error, Result};
use crate::network::{self, Mode};
use crate::network_more;

/// The name a client's network name stands for: docker's `bridge` and `default` are
/// vessel's default network.
pub fn canonical(name: &str) -> &str {
    match name {
        "bridge" | "default" => DEFAULT_NETWORK,
        n => n,
    }
}

/// The network a container's options put it on, when it is a bridge network.
pub fn network_of(r: &Record) -> Option<String> {
    match network::mode(&r.options) {
        Mode::Bridge(n) => Some(n),
        _ => None,
    }
}

/// Whether `r` is on network `name` (its first or one of its others).
pub fn is_on(r: &Record, name: &str) -> bool {
    let name = canonical(name);
    network_of(r).as_deref() == Some(name) || r.options.more_networks.iter().any(|n| n == name)
}

/// The records of the containers (any state) on network `name` (first or further), oldest first.
///
/// Errors: [`Error::Db`].
pub fn users(engine: &Engine, name: &str) -> Result<Vec<Record>> {
    let name = canonical(name);
    Ok(engine.list()?.into_iter().filter(|r| is_on(r, name)).collect())
}

/// Removes network `name` (`vessel network rm`, `DELETE /networks/{id}`): refused while
/// containers are on it; its warm attachments are released first.
///
/// Errors: [`vessel_net::NetError::NetworkInUse`] (as [`Error::Network`]) naming the
/// containers, [`vessel_net::NetError::UnknownNetwork`], [`vessel_net::NetError::DefaultNetwork`].
pub fn remove(engine: &Engine, name: &str) -> Result<()> {
    let nets = Networks::open(&engine.paths.root);
    let users: Vec<String> = users(engine, name)?.into_iter().map(|r| r.name).collect();
    if users.is_empty() && name != DEFAULT_NETWORK {
        network::pool(&engine.paths).drain(name)?;
    }
    Ok(nets.remove(name, &users)?)
}

/// Connects container `r` to network `to` (`docker network connect`, `vessel network
/// connect`). On a bridge network: `to` is added to its networks, and a live container
/// gets its interface at once ([`network_more::attach`]); one already on `to` is left
/// as it is. A container on `--network none` that does not run (created or exited) is
/// moved onto `to` ([`reconnect`]).
///
/// Errors: [`Error::Unsupported`] for a container that shares another's or the host's
/// network namespace (`host`, `container:`, `pasta`) or runs on `none`, as docker refuses
/// them; [`vessel_net::NetError::UnknownNetwork`]; the plugins' errors (the record is
/// left as it was).
pub fn connect(engine: &Engine, r: &Record, to: &str) -> Result<()> {
    let to = canonical(to);
    Networks::open(&engine.paths.root).get(to)?;
    if is_on(r, to) {
        return Ok(());
    }
    match network::mode(&r.options) {
        Mode::Bridge(_) => {
            let mut opts = r.options.clone();
            opts.more_networks.push(to.into());
            engine
                .db
                .set_config(&r.id, &r.image_id, &opts, &r.command, r.stop_signal)?;
            if r.state.is_live() {
                let mut now = r.clone();
                now.options = opts;
                if let Err(e) = network_more::attach(&engine.paths, &now, to) {
                    engine
                        .db
                        .set_config(&r.id, &r.image_id, &r.options, &r.command, r.stop_signal)?;
                    return Err(e);
                }
            }
            Ok(())
        }
        Mode::None if !matches!(r.state, State::Running | State::Paused) => reconnect(engine, r, Some(to)),
        m => Err(Error::Unsupported(format!(
            "cannot connect container {} to network {to}: it {}",
            r.name,
            match m {
                Mode::None => "runs with --network none (no interface to add to): stop it first".to_string(),
                Mode::Host => "uses the host's network namespace".into(),
                Mode::Container(c) => format!("shares the network namespace of container {c}"),
                _ => "is on pasta's user-mode network".into(),
            }
        ))),
    }
}

/// Disconnects container `r` from network `from` (`docker network disconnect`, `vessel
/// network disconnect`). Returns false when it is not on `from`. One of its further
/// networks is dropped from its options and, when it is live, its interface taken out
/// (CNI DEL). Its first network: a container that does not run moves onto its next
/// network, or onto none when it has no other ([`reconnect`]).
///
/// Errors: [`Error::Unsupported`] for the first network of a live container (its
/// namespace was made for it); the plugins' errors (the record keeps the network).
pub fn disconnect(engine: &Engine, r: &Record, from: &str) -> Result<bool> {
    let from = canonical(from);
    if r.options.more_networks.iter().any(|n| n == from) {
        if r.state.is_live() {
            network_more::detach(&engine.paths, r, from)?;
        }
        let mut opts = r.options.clone();
        opts.more_networks.retain(|n| n != from);
        engine
            .db
            .set_config(&r.id, &r.image_id, &opts, &r.command, r.stop_signal)?;
        return Ok(true);
    }
    if network_of(r).as_deref() != Some(from) {
        return Ok(false);
    }
    if r.state.is_live() && r.state != State::Created {
        return Err(Error::Unsupported(format!(
            "cannot disconnect container {} from network {from} while it is {}: it is its first \
             network, the one its namespace was made for; stop it, disconnect it, then start it again",
            r.name,
            r.state.as_str()
        )));
    }
    let mut moved = r.clone();
    let next = (!moved.options.more_networks.is_empty()).then(|| moved.options.more_networks.remove(0));
    reconnect(engine, &moved, next.as_deref())?;
    Ok(true)
}

/// Puts container `r` on network `to` (None: `--network none`), as `docker network
/// connect` (Some) and `disconnect` (None) do. A container already there is left as it
/// is. A created container is ended (its init never ran) and created again on the new
/// network; an exited one only gets the new network for its next start.
///
/// Errors: [`Error::Unsupported`] for a running or paused container that is on another
/// network, and for a created `--rm` container (ending it would remove it);
/// [`vessel_net::NetError::UnknownNetwork`]; the monitor's errors of the new create.
pub fn reconnect(engine: &Engine, r: &Record, to: Option<&str>) -> Result<()> {
    let to = to.map(canonical);
    if let Some(n) = to {
        Networks::open(&engine.paths.root).get(n)?;
    }
    let target = to.map(String::from);
    let now = network_of(r);
    let already = match (&target, &r.options.network) {
        (Some(t), _) => now.as_ref() == Some(t),
        (None, Some(n)) => n == "none",
        (None, None) => false,
    };
    if already {
        return Ok(());
    }
    let what = match &target {
        Some(t) => format!("connect container {} to network {t}", r.name),
        None => format!("disconnect container {} from its network", r.name),
    };
    if matches!(r.state, State::Running | State::Paused) || (r.state == State::Created && r.options.rm) {
        return Err(Error::Unsupported(format!(
            "cannot {what}: it is {}; vessel joins a container's network when it is made: \
             stop it, connect it, then start it again",
            if r.options.rm && r.state == State::Created {
                "an --rm container"
            } else {
                r.state.as_str()
            }
        )));
    }
    if r.state == State::Created {
        // Its init never ran: ending it loses nothing (the monitor gives the attachment
        // back and records the exit).
        engine.kill(r, libc::SIGKILL)?;
        engine.wait_exit(&r.id, Some(Duration::from_secs(10)))?;
    }
    let mut opts = r.options.clone();
    // Its published ports stay in its options, as docker keeps the port bindings: they
    // are published again once it is on a bridge network.
    opts.network = Some(target.unwrap_or_else(|| "none".into()));
    let bundle = engine.paths.bundle(&r.id);
    let mut spec = vessel_runtime::spec::load(&bundle)?;
    new_netns(&mut spec)?;
    network::apply(&engine.paths, &engine.db, &r.id, &opts, &mut spec)?;
    let mut moved = r.clone();
    moved.options = opts;
    network::write_etc(&bundle, &moved)?;
    let path = bundle.join("config.json");
    let text = serde_json::to_vec_pretty(&spec).map_err(|e| Error::BadInput(format!("config.json: {e}")))?;
    crate::containers::write_atomic(&path, &text)?;
    engine
        .db
        .set_config(&r.id, &r.image_id, &moved.options, &r.command, r.stop_signal)?;
    if r.state == State::Created {
        let fresh = engine.find(&r.id)?;
        engine.recreate(&fresh)?;
    }
    Ok(())
}

/// Sets config.json's network namespace to a new one of its own (no path), as
/// [`crate::config::build`] makes it before [`network::apply`] points it elsewhere.
fn new_netns(spec: &mut oci_spec::runtime::Spec) -> Result<()> {
    use oci_spec::runtime::{LinuxNamespaceBuilder, LinuxNamespaceType};
    let mut linux = spec.linux().clone().unwrap_or_default();
    let mut nss: Vec<_> = linux
        .namespaces()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .filter(|n| n.typ() != LinuxNamespaceType::Network)
        .collect();
    nss.push(
        LinuxNamespaceBuilder::default()
            .typ(LinuxNamespaceType::Network)
            .build()
            .map_err(|e| Error::BadInput(format!("network namespace: {e}")))?,
    );
    linux.set_namespaces(Some(nss));
    spec.set_linux(Some(linux));
    Ok(())
}
