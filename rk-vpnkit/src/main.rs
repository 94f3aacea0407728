//! `rk-vpnkit`: the `--net=vpnkit` driver of rootlesskit (Rust).

mod address;
mod coalesce;
mod driver;
mod event;
mod framing;
mod link;
mod offload;
mod pump;
mod sandbox;
mod settings;
mod stderr_tail;
mod tap;
mod uuid;
mod vpnkit;
mod wire;

fn main() {
    rk_driver::serve(driver::VpnkitDriver::default())
}
