//! `rk-slirp4netns`: the rootlesskit network driver that runs slirp4netns.
//!
//! The core hands over the child's user and network namespaces; this driver
//! probes the slirp4netns binary, starts it on those namespaces (as
//! `/proc/self/fd/N` paths), waits for its ready signal and answers with the
//! addresses the core then configures over netlink.

mod args;
mod confinement;
mod driver;
mod host;
mod hostfwd;
mod launch;
mod options;
mod plan;
mod probe;

fn main() {
    rk_driver::serve(driver::Slirp4netns::default())
}
