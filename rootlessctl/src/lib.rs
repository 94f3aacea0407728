//! `rootlessctl`: the command-line client of rootlesskit's REST API, with
//! RootlessKit's subcommands, flags and output. The library holds its
//! command line ([`cli::Cli`], for rk-docgen's man page and completions)
//! and what each subcommand does ([`run`]).

pub mod cli;
mod format;

use cli::{Cli, Command};
use rk_ports::api::Client;
use rk_ports::PortSpec;
use std::path::PathBuf;

fn client(cli: &Cli) -> Result<Client, String> {
    let path = match &cli.socket {
        Some(p) => p.clone(),
        None => match std::env::var_os("ROOTLESSKIT_STATE_DIR") {
            Some(d) if !d.is_empty() => PathBuf::from(d).join(rk_ports::api::SOCKET_NAME),
            _ => return Err("please specify --socket or set $ROOTLESSKIT_STATE_DIR".into()),
        },
    };
    if cli.debug {
        eprintln!("rootlessctl: using {}", path.display());
    }
    Ok(Client::new(&path))
}

/// Runs the command `cli` asks for.
pub fn run(cli: &Cli) -> Result<(), String> {
    match &cli.command {
        Command::ListPorts { json } => {
            let ports = client(cli)?.list_ports().map_err(|e| e.to_string())?;
            if *json {
                for p in &ports {
                    println!("{}", serde_json::to_string(p).expect("serializable"));
                }
            } else {
                print!("{}", format::port_table(&ports));
            }
        }
        Command::AddPorts { json, specs } => {
            if specs.is_empty() {
                return Err("no port specified".into());
            }
            let parsed = specs
                .iter()
                .map(|s| PortSpec::parse(s).map_err(|e| e.to_string()))
                .collect::<Result<Vec<_>, _>>()?;
            let c = client(cli)?;
            for spec in &parsed {
                let st = c.add_port(spec).map_err(|e| e.to_string())?;
                if *json {
                    println!("{}", serde_json::to_string(&st).expect("serializable"));
                } else {
                    println!("{}", st.id);
                }
            }
        }
        Command::RemovePorts { ids } => {
            if ids.is_empty() {
                return Err("no ID specified".into());
            }
            let parsed = ids
                .iter()
                .map(|s| {
                    s.parse::<i64>()
                        .map_err(|_| format!("strconv.Atoi: parsing {s:?}: invalid syntax"))
                })
                .collect::<Result<Vec<_>, _>>()?;
            let c = client(cli)?;
            for id in parsed {
                c.remove_port(id).map_err(|e| e.to_string())?;
                println!("{id}");
            }
        }
        Command::Info { json, driver_info } => {
            let mut info = client(cli)?.info().map_err(|e| e.to_string())?;
            if !*driver_info {
                if let Some(n) = info.network_driver.as_mut() {
                    n.info.clear();
                }
            }
            if *json {
                println!("{}", format::indented_json(&info));
            } else {
                print!("{}", format::info_text(&info));
            }
        }
    }
    Ok(())
}
