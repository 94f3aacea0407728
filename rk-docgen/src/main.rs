//! `rootlesskit-docgen`: the build-time tool behind `make` and `make deb`.
//! It writes the man pages and shell completions from the clap definitions
//! (rootlesskit's `Cli`, rootlessctl's `Cli`), the protocol page from
//! docs/driver-protocol.md, and checks the licences of the linked crates.
//! It is not installed.

mod drivers;
mod licences;
mod markdown;
mod pages;
mod roff;

use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "rootlesskit-docgen",
    version,
    about = "Man pages, completions and licence inventory for rootlesskit"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Write man1/*.1 and man7/*.7 under OUT.
    Man {
        /// Output directory (man1/ and man7/ are made in it).
        #[arg(long)]
        out: PathBuf,
        /// The protocol document rendered as rootlesskit-driver-protocol(7).
        #[arg(long, default_value = "docs/driver-protocol.md")]
        protocol: PathBuf,
    },
    /// Write bash, zsh and fish completions for rootlesskit and rootlessctl under OUT.
    Completions {
        /// Output directory (bash/, zsh/ and fish/ are made in it).
        #[arg(long)]
        out: PathBuf,
    },
    /// Check the licence of every crate linked into the installed binaries
    /// against an allow-list; print (or write) the inventory.
    Licences {
        /// Licence identifiers allowed, one per line (`#` comments).
        #[arg(long, default_value = "packaging/licences.allow")]
        allow: PathBuf,
        /// Where to write the inventory (default: standard output).
        #[arg(long)]
        inventory: Option<PathBuf>,
        /// The workspace's Cargo.toml.
        #[arg(long, default_value = "Cargo.toml")]
        manifest_path: PathBuf,
    },
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Man { out, protocol } => pages::write_all(&out, &protocol),
        Command::Completions { out } => pages::write_completions(&out),
        Command::Licences {
            allow,
            inventory,
            manifest_path,
        } => licences::check(&allow, inventory.as_deref(), &manifest_path),
    };
    if let Err(e) = result {
        eprintln!("rootlesskit-docgen: {e}");
        std::process::exit(1);
    }
}
