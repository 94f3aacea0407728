//! `rk-vpnkit`: the `--net=vpnkit` driver of rootlesskit (Rust).

mod address;
mod confinement;
mod driver;
mod link;
mod pump;
mod settings;
mod tap;
mod uuid;
mod vpnkit;

// In the library so that the fuzz targets reach them; `crate::wire` and
// `crate::framing` keep working through these imports.
use rk_vpnkit::{coalesce, framing, offload, wire};

fn main() {
    rk_driver::serve(driver::VpnkitDriver::default())
}
