//! rootlessctl's command line (clap), also used by rk-docgen for its man
//! page and completions.

use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(name = "rootlessctl", version, about = "RootlessKit API client")]
pub struct Cli {
    /// debug mode
    #[arg(long, global = true)]
    pub debug: bool,
    /// Path to api.sock (under the "rootlesskit --state-dir" directory), defaults to $ROOTLESSKIT_STATE_DIR/api.sock
    #[arg(long, global = true, value_name = "value")]
    pub socket: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// List ports
    ListPorts {
        /// Prints as JSON
        #[arg(long)]
        json: bool,
    },
    /// Add ports
    #[command(
        long_about = "Add exposed ports. The port spec is similar to `docker run -p`. e.g. \"127.0.0.1:8080:80/tcp\"."
    )]
    AddPorts {
        /// Prints as JSON
        #[arg(long)]
        json: bool,
        /// PARENTIP:PARENTPORT[:CHILDIP]:CHILDPORT/PROTO
        // (Help text, not rustdoc: the brackets are the spec's syntax.)
        #[allow(rustdoc::broken_intra_doc_links)]
        #[arg(value_name = "PARENTIP:PARENTPORT:CHILDPORT/PROTO")]
        specs: Vec<String>,
    },
    /// Remove ports
    RemovePorts {
        #[arg(value_name = "ID")]
        ids: Vec<String>,
    },
    /// Show info
    Info {
        /// Prints as JSON
        #[arg(long)]
        json: bool,
        /// Also prints the network driver's own facts (its `info`, e.g. the
        /// version of the program it runs); without it the output is
        /// RootlessKit's, byte for byte
        #[arg(long)]
        driver_info: bool,
    },
}
