//! `rootlesskit-port-builtin`: the relay of rootlesskit's builtin port
//! driver. rootlesskit starts it (docs/driver-protocol.md §18); it is not
//! meant to be run by hand.

fn main() {
    std::process::exit(rk_ports::builtin::worker::main());
}
