//! `vessel network create|ls|inspect|connect|disconnect|rm`, in podman's conventions. Parsing and printing
//! only; `vessel_net` keeps the networks and `vessel_engine::network` the attachments.

use anyhow::Result;
use clap::Subcommand;
use vessel_engine::Engine;

use crate::containers::Format;

/// `vessel network ...`.
#[derive(Subcommand, Debug)]
pub enum NetworkCommand {
    /// Create a bridge network.
    Create {
        /// Subnet in CIDR form [default: the next free 10.89.N.0/24].
        #[arg(long)]
        subnet: Option<String>,
        /// Gateway address [default: the subnet's first].
        #[arg(long)]
        gateway: Option<String>,
        /// No route out and no masquerade: containers reach only each other.
        #[arg(long)]
        internal: bool,
        /// How many attachments of ended containers to keep attached for the next
        /// containers (each holds an address and a veth); 0: every container runs its own
        /// CNI ADD and DEL.
        #[arg(long, default_value_t = vessel_net::DEFAULT_WARM)]
        warm: u32,
        /// The network's name.
        name: String,
    },
    /// List networks.
    #[command(alias = "list")]
    Ls {
        /// Output format.
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
    },
    /// Show networks (JSON).
    Inspect {
        /// Networks.
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Connect a container to one more network (a running one gets the interface at once).
    Connect {
        /// The network.
        network: String,
        /// The container (name or id).
        container: String,
    },
    /// Disconnect a container from a network (a running one loses the interface at once).
    Disconnect {
        /// The network.
        network: String,
        /// The container (name or id).
        container: String,
    },
    /// Remove networks (refused while containers use them).
    Rm {
        /// Networks.
        #[arg(required = true)]
        names: Vec<String>,
    },
}

pub fn network(engine: &Engine, c: &NetworkCommand) -> Result<i32> {
    let nets = vessel_net::Networks::open(&engine.paths.root);
    match c {
        NetworkCommand::Create {
            subnet,
            gateway,
            internal,
            warm,
            name,
        } => {
            let n = nets.create(name, subnet.as_deref(), gateway.as_deref(), *internal, *warm)?;
            println!("{}", n.name);
        }
        NetworkCommand::Ls { format } => {
            // The default network exists from the first look on, as podman's.
            nets.get(vessel_net::DEFAULT_NETWORK)?;
            let list = nets.list()?;
            if *format == Format::Json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                let mut t = comfy_table::Table::new();
                t.load_preset(comfy_table::presets::NOTHING);
                t.set_header(["NETWORK ID", "NAME", "DRIVER", "SUBNET", "GATEWAY", "INTERNAL"]);
                for n in list {
                    t.add_row([
                        n.id[..12].to_string(),
                        n.name.clone(),
                        "bridge".into(),
                        n.subnet.clone(),
                        n.gateway.clone().unwrap_or_default(),
                        n.internal.to_string(),
                    ]);
                }
                println!("{t}");
            }
        }
        NetworkCommand::Inspect { names } => {
            let mut out = Vec::new();
            for n in names {
                let net = nets.get(n)?;
                let containers: Vec<serde_json::Value> = engine
                    .list()?
                    .iter()
                    .filter(|r| vessel_engine::networks::is_on(r, &net.name))
                    .map(|r| {
                        let a = vessel_engine::network::attachments(&engine.paths, &r.id)
                            .into_iter()
                            .find(|a| a.network == net.name);
                        serde_json::json!({"Id": r.id, "Name": r.name, "State": r.state.as_str(), "Attachment": a})
                    })
                    .collect();
                let pool = vessel_engine::network::pool(&engine.paths);
                let warm: Vec<serde_json::Value> = pool
                    .free(&net.name)
                    .iter()
                    .map(|id| serde_json::json!({"CniId": id, "Netns": pool.netns(id)}))
                    .collect();
                let mut v = serde_json::to_value(&net)?;
                v["containers"] = serde_json::Value::Array(containers);
                v["warm_attachments"] = serde_json::Value::Array(warm);
                out.push(v);
            }
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
        NetworkCommand::Connect { network, container } => {
            let r = engine.find(container)?;
            vessel_engine::networks::connect(engine, &r, network)?;
        }
        NetworkCommand::Disconnect { network, container } => {
            let r = engine.find(container)?;
            if !vessel_engine::networks::disconnect(engine, &r, network)? {
                anyhow::bail!("container {} is not connected to network {network}", r.name);
            }
        }
        NetworkCommand::Rm { names } => {
            for n in names {
                vessel_engine::networks::remove(engine, n)?;
                println!("{n}");
            }
        }
    }
    Ok(0)
}
