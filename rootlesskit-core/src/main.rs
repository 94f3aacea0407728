//! `rootlesskit`: runs a command as "root" in new user, mount and network
//! namespaces, with the network provided by a separate driver binary.

use clap::Parser;
use rootlesskit_core::{activation, child, cli, driver, parent, settings, sync, START};

fn main() {
    let start = *START.get_or_init(std::time::Instant::now);
    use rk_driver::logger::init_with_prefix;
    if let Some(fd) = std::env::var_os(sync::CHILD_FD_ENV) {
        init_with_prefix("[rootlesskit:child]", false, None);
        std::process::exit(child::main(&fd.to_string_lossy()));
    }
    if activation::is_helper() {
        init_with_prefix("[rootlesskit:activation_helper]", false, None);
        std::process::exit(activation::helper_main());
    }
    init_with_prefix("[rootlesskit:parent]", false, Some(start));
    let cli = match cli::Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            use clap::error::ErrorKind;
            // Help goes to stdout with status 0; any other mistake on the
            // command line is status 1, as RootlessKit's.
            let code = match e.kind() {
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => 0,
                _ => 1,
            };
            let _ = e.print();
            std::process::exit(code)
        }
    };
    if cli.version {
        std::process::exit(driver::print_versions());
    }
    if let Some(component) = &cli.print_semver {
        std::process::exit(print_semver(component));
    }
    if cli.list_drivers {
        std::process::exit(driver::list_drivers());
    }
    let (settings, warnings) = match settings::validate(&cli) {
        Ok(s) => s,
        Err(e) => fail(&e),
    };
    rk_driver::logger::set_debug(settings.debug);
    for w in warnings {
        log::warn!("{w}");
    }
    match parent::run(settings) {
        Ok(code) => std::process::exit(code),
        Err(e) => fail(&e),
    }
}

fn fail(msg: &str) -> ! {
    log::error!("{msg}");
    std::process::exit(1)
}

fn print_semver(component: &str) -> i32 {
    let mut parts = env!("CARGO_PKG_VERSION").split('.');
    let (major, minor, patch) = (parts.next(), parts.next(), parts.next());
    let value = match component {
        "major" => major,
        "minor" => minor,
        "patch" => patch.map(|p| p.split('-').next().unwrap_or(p)),
        other => {
            log::error!("expected --print-semver=(major|minor|patch), got {other:?}");
            return 1;
        }
    };
    use std::io::Write;
    let _ = writeln!(std::io::stdout(), "{}", value.unwrap_or("0"));
    0
}
