//! `rootlessctl`: the command-line client of rootlesskit's REST API.

use clap::Parser;
use rootlessctl::cli::Cli;

fn main() {
    let cli = Cli::parse();
    if let Err(e) = rootlessctl::run(&cli) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
