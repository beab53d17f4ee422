//! `vessel`: the user's command line, in podman/docker conventions. One module per command
//! group (`images`: pull, images, image ..., rmi, login, logout); the logic lives in the
//! library crates.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

mod images;

/// vessel: OS-level virtualization (containers and images).
#[derive(Parser, Debug)]
#[command(name = "vessel", version, about)]
struct Cli {
    /// Root directory of vessel's state (images, snapshots, containers).
    #[arg(long, global = true, env = "VESSEL_ROOT", default_value = "/var/lib/vessel")]
    root: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Pull an image from a registry.
    Pull(images::PullArgs),
    /// List local images.
    Images(images::ListArgs),
    /// Manage images.
    #[command(subcommand)]
    Image(images::ImageCommand),
    /// Remove images (the name given; by id: the image and all its names).
    Rmi(images::RmiArgs),
    /// Log in to a registry (credentials saved in ROOT/auth.json).
    Login(images::LoginArgs),
    /// Remove saved credentials of a registry.
    Logout(images::LogoutArgs),
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Pull(a) => images::pull(&cli.root, a),
        Command::Images(a) => images::list(&cli.root, a),
        Command::Image(c) => images::image(&cli.root, c),
        Command::Rmi(a) => images::rmi(&cli.root, a),
        Command::Login(a) => images::login(&cli.root, a),
        Command::Logout(a) => images::logout(&cli.root, a),
    };
    if let Err(e) = result {
        eprintln!("vessel: {e:#}");
        std::process::exit(125);
    }
}
