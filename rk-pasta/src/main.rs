//! `rk-pasta`: the `--net=pasta` network driver of rootlesskit. It runs
//! pasta (from passt), which connects the child's network namespace to the
//! host through a tap device and the host's own sockets, and, with
//! `--port-driver=implicit`, makes every port a program inside listens on
//! reachable on the host.

mod args;
mod confinement;
mod contain;
mod driver;
mod launch;
mod nspaths;
mod options;
mod output;
mod portfwd;
mod probe;

fn main() {
    rk_driver::serve(driver::PastaDriver::default())
}
