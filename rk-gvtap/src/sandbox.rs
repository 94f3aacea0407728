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

use std::io;

#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: u32 = 0xC000_003E;
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: u32 = 0xC000_00B7;

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

const LD_W_ABS: u16 = 0x20;
const JEQ_K: u16 = 0x15;
const JGE_K: u16 = 0x35;
const RET_K: u16 = 0x06;
const RET_ALLOW: u32 = 0x7fff_0000;
const RET_ERRNO: u32 = 0x0005_0000;
const OFFSET_NR: u32 = 0;
const OFFSET_ARCH: u32 = 4;
/// Low 32 bits of the first argument (little-endian).
const OFFSET_ARG0: u32 = 16;
/// x32 system calls on x86_64 have this bit set.
const X32_BIT: u32 = 0x4000_0000;

fn stmt(code: u16, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump(code: u16, k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}

#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
fn program() -> Vec<libc::sock_filter> {
    let eperm = RET_ERRNO | libc::EPERM as u32;
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
        stmt(RET_K, RET_ERRNO | libc::EAFNOSUPPORT as u32),
        stmt(RET_K, RET_ALLOW),
        stmt(RET_K, RET_ALLOW),
    ]);
    p
}

/// Confines the calling thread (only: the main thread keeps talking to the
/// core). `no_new_privs` must be set already, as seccomp requires.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
pub fn confine_network_thread() -> io::Result<()> {
    let program = program();
    let prog = libc::sock_fprog {
        len: program.len() as libc::c_ushort,
        filter: program.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: `prog` points at a valid BPF program that outlives the call;
    // the kernel copies it. Without SECCOMP_FILTER_FLAG_TSYNC it applies to
    // this thread only.
    let r = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            0,
            &prog as *const libc::sock_fprog,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
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
            // SAFETY: prctl with integer arguments.
            unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
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
