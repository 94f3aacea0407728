//! A seccomp filter for the network thread, the part that parses frames
//! from the guest.
//!
//! The NAT opens sockets to wherever the guest asks and reads
//! /etc/resolv.conf, so an allow-list would have to include most of what
//! an attacker wants anyway, and one missed variant of a system call would
//! break the network in the field. Instead the filter takes away what a
//! NAT never does: executing programs, making processes or threads,
//! tracing or reading other processes, namespaces and mounts, kernel
//! modules, keys, BPF, io_uring and userfaultfd (favourites of kernel
//! exploits), and sockets other than IPv4/IPv6 (no netlink, no packet
//! sockets). The call fails with EPERM (EAFNOSUPPORT for sockets).

#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
use rk_driver::sandbox::{
    install_thread_filter, jump, ret_errno, stmt, AUDIT_ARCH, JEQ_K, JGE_K, LD_W_ABS, OFFSET_ARCH,
    OFFSET_ARG0, OFFSET_NR, RET_K, X32_BIT,
};
use std::io;

#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
fn denied() -> Vec<libc::c_long> {
    let mut v = vec![
        libc::SYS_execve,
        libc::SYS_execveat,
        libc::SYS_clone,
        libc::SYS_clone3,
        libc::SYS_ptrace,
        libc::SYS_process_vm_readv,
        libc::SYS_process_vm_writev,
        libc::SYS_mount,
        libc::SYS_umount2,
        libc::SYS_pivot_root,
        libc::SYS_chroot,
        libc::SYS_setns,
        libc::SYS_unshare,
        libc::SYS_keyctl,
        libc::SYS_add_key,
        libc::SYS_request_key,
        libc::SYS_bpf,
        libc::SYS_perf_event_open,
        libc::SYS_init_module,
        libc::SYS_finit_module,
        libc::SYS_delete_module,
        libc::SYS_kexec_load,
        libc::SYS_kexec_file_load,
        libc::SYS_reboot,
        libc::SYS_swapon,
        libc::SYS_swapoff,
        libc::SYS_open_by_handle_at,
        libc::SYS_name_to_handle_at,
        libc::SYS_userfaultfd,
        libc::SYS_io_uring_setup,
        libc::SYS_io_uring_enter,
        libc::SYS_io_uring_register,
    ];
    #[cfg(target_arch = "x86_64")]
    v.extend([libc::SYS_fork, libc::SYS_vfork]);
    v
}

#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
fn program() -> Vec<libc::sock_filter> {
    let eperm = ret_errno(libc::EPERM);
    let mut p = vec![
        stmt(LD_W_ABS, OFFSET_ARCH),
        jump(JEQ_K, AUDIT_ARCH, 1, 0),
        stmt(RET_K, eperm),
        stmt(LD_W_ABS, OFFSET_NR),
        jump(JGE_K, X32_BIT, 0, 1),
        stmt(RET_K, eperm),
    ];
    for nr in denied() {
        p.push(jump(JEQ_K, nr as u32, 0, 1));
        p.push(stmt(RET_K, eperm));
    }
    p.extend([
        jump(JEQ_K, libc::SYS_socket as u32, 0, 5),
        stmt(LD_W_ABS, OFFSET_ARG0),
        jump(JEQ_K, libc::AF_INET as u32, 2, 0),
        jump(JEQ_K, libc::AF_INET6 as u32, 1, 0),
        stmt(RET_K, ret_errno(libc::EAFNOSUPPORT)),
        stmt(RET_K, libc::SECCOMP_RET_ALLOW),
        stmt(RET_K, libc::SECCOMP_RET_ALLOW),
    ]);
    p
}

/// Confines the calling thread (only: the main thread keeps talking to the
/// core). `no_new_privs` must be set already, as seccomp requires.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
pub fn confine_network_thread() -> io::Result<()> {
    install_thread_filter(&program())
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
pub fn confine_network_thread() -> io::Result<()> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "no seccomp filter for this architecture",
    ))
}

#[cfg(all(test, any(target_arch = "x86_64", target_arch = "aarch64")))]
mod tests {
    use super::*;

    #[test]
    fn confined_thread_cannot_exec_or_open_netlink_but_can_network() {
        let result = std::thread::spawn(|| {
            rk_driver::sandbox::no_new_privs().unwrap();
            confine_network_thread().unwrap();
            let exec = std::process::Command::new("/bin/true").status();
            // SAFETY: plain socket calls; descriptors are closed below.
            let (netlink, udp) = unsafe {
                (
                    libc::socket(libc::AF_NETLINK, libc::SOCK_RAW, 0),
                    libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0),
                )
            };
            if udp >= 0 {
                // SAFETY: closing the descriptor just made.
                unsafe { libc::close(udp) };
            }
            let file = std::fs::read_to_string("/proc/self/status").is_ok();
            (exec.is_err(), netlink, udp >= 0, file)
        })
        .join()
        .unwrap();
        assert!(result.0, "exec must fail in the confined thread");
        assert_eq!(result.1, -1, "netlink sockets must be refused");
        assert!(result.2, "UDP sockets must still work");
        assert!(result.3, "reading files (resolv.conf) must still work");
    }
}
