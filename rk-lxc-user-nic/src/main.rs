//! `rk-lxc-user-nic`: rootlesskit's `--net=lxc-user-nic` driver. A veth on a
//! host bridge made by the setuid `lxc-user-nic`, addressed by the bridge's
//! DHCP server; the lease is renewed while the child runs and released when
//! it ends.

mod binary;
mod bridge;
mod confinement;
mod dhcp;
mod driver;
mod guard;
mod inside;
mod mac;
mod options;
mod usernic;

fn main() {
    rk_driver::serve(driver::LxcUserNic::default())
}
