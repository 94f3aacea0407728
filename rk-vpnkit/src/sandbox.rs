//! Giving up what the pump does not need.
//!
//! After the tap is open the driver starts no program, so the whole process
//! sets `no_new_privs`. Each pump thread then confines itself with a seccomp
//! filter (a per-thread filter: the main thread keeps talking to the core
//! and tearing down): moving frames needs reading, writing, waiting, and what
//! the allocator, locks and thread exit use. Any other system call fails with
//! EPERM, so a pump subverted by a hostile frame can open no file, socket or
//! process.

pub use rk_driver::sandbox::no_new_privs;
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
use rk_driver::sandbox::{
    install_thread_filter, jump, ret_errno, stmt, AUDIT_ARCH, JEQ_K, JGE_K, LD_W_ABS, OFFSET_ARCH,
    OFFSET_NR, RET_K, X32_BIT,
};
use std::io;

/// The system calls a pump thread makes.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
fn allowed() -> Vec<libc::c_long> {
    let mut v = vec![
        libc::SYS_read,
        libc::SYS_readv,
        libc::SYS_write,
        libc::SYS_writev,
        // std's UnixStream reads with recv and writes with send(MSG_NOSIGNAL)
        libc::SYS_recvfrom,
        libc::SYS_sendto,
        libc::SYS_ppoll,
        libc::SYS_futex,
        libc::SYS_close,
        // std checks a descriptor with F_GETFD before closing it
        libc::SYS_fcntl,
        libc::SYS_exit,
        libc::SYS_exit_group,
        libc::SYS_rt_sigreturn,
        libc::SYS_rt_sigprocmask,
        libc::SYS_sigaltstack,
        libc::SYS_restart_syscall,
        libc::SYS_sched_yield,
        libc::SYS_clock_gettime,
        // malloc and free, and the thread's exit
        libc::SYS_brk,
        libc::SYS_mmap,
        libc::SYS_munmap,
        libc::SYS_mprotect,
        libc::SYS_madvise,
    ];
    #[cfg(target_arch = "x86_64")]
    v.push(libc::SYS_poll);
    v
}

/// Confines the calling thread to [`allowed`] system calls. Sets
/// `no_new_privs` for the thread first, as seccomp requires.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
pub fn confine_pump_thread() -> io::Result<()> {
    no_new_privs()?;
    install_thread_filter(&filter(&allowed()))
}

/// Other architectures run the pump without a filter.
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
pub fn confine_pump_thread() -> io::Result<()> {
    no_new_privs()
}

/// The classic-BPF program: right architecture, then one comparison per
/// allowed call; everything else gets EPERM.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
fn filter(allowed: &[libc::c_long]) -> Vec<libc::sock_filter> {
    let n = allowed.len();
    // Layout: 0 ld arch; 1 jeq arch; 2 ld nr; 3 jge x32 bit; 4.. jeq each;
    // then deny; then allow.
    let first_check = 4;
    let deny = first_check + n;
    let allow = deny + 1;
    let to = |from: usize, target: usize| (target - from - 1) as u8;
    let mut p = vec![
        stmt(LD_W_ABS, OFFSET_ARCH),
        jump(JEQ_K, AUDIT_ARCH, 0, to(1, deny)),
        stmt(LD_W_ABS, OFFSET_NR),
        // x32 system calls (x86_64 numbers with bit 30 set) are refused; on
        // aarch64 no valid number is that large either.
        jump(JGE_K, X32_BIT, to(3, deny), 0),
    ];
    for (i, nr) in allowed.iter().enumerate() {
        p.push(jump(JEQ_K, *nr as u32, to(first_check + i, allow), 0));
    }
    p.push(stmt(RET_K, ret_errno(libc::EPERM)));
    p.push(stmt(RET_K, libc::SECCOMP_RET_ALLOW));
    assert!(allow - first_check < 255, "jump offsets fit in a byte");
    p
}

#[cfg(all(test, any(target_arch = "x86_64", target_arch = "aarch64")))]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;

    #[test]
    fn confined_thread_moves_bytes_but_cannot_open_anything() {
        let (mut a, b) = UnixStream::pair().unwrap();
        let t = std::thread::spawn(move || {
            confine_pump_thread().unwrap();
            let mut b = b;
            // What the pump does: read, write, allocate, lock.
            let mut buf = [0u8; 4];
            b.read_exact(&mut buf).unwrap();
            let reply: Vec<u8> = buf.iter().rev().copied().collect();
            b.write_all(&reply).unwrap();
            let m = std::sync::Mutex::new(format!("{}", reply.len()));
            drop(m.lock().unwrap());
            // What it must not do.
            let open = std::fs::File::open("/etc/hostname").map_err(|e| e.raw_os_error());
            // SAFETY: plain socket(2); the result is only inspected.
            let sock = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) };
            let sock_err = io::Error::last_os_error().raw_os_error();
            (open.err(), sock, sock_err)
        });
        a.write_all(b"abcd").unwrap();
        let mut back = [0u8; 4];
        a.read_exact(&mut back).unwrap();
        assert_eq!(&back, b"dcba");
        let (open, sock, sock_err) = t.join().unwrap();
        assert_eq!(open, Some(Some(libc::EPERM)));
        assert_eq!((sock, sock_err), (-1, Some(libc::EPERM)));
        // The filter stayed on that thread: this one may still open files.
        assert!(std::fs::File::open("/proc/self/stat").is_ok());
    }

    #[test]
    fn program_jumps_land_on_deny_and_allow() {
        let p = filter(&[1, 2, 3]);
        let ret_deny = p.len() - 2;
        let ret_allow = p.len() - 1;
        assert_eq!(1 + 1 + p[1].jf as usize, ret_deny);
        assert_eq!(3 + 1 + p[3].jt as usize, ret_deny);
        for (i, check) in p.iter().enumerate().skip(4).take(3) {
            assert_eq!(i + 1 + check.jt as usize, ret_allow);
        }
        assert_eq!(p[ret_allow].k, libc::SECCOMP_RET_ALLOW);
    }
}
