//! The building blocks for a driver to give up what it does not need:
//! `no_new_privs` and a per-thread seccomp filter. Which system calls a
//! thread may make is each driver's own policy; this module only assembles
//! and installs the classic-BPF program.

use std::io;

/// `PR_SET_NO_NEW_PRIVS`: no program this process (or a thread it starts)
/// could execute gains privileges from set-id bits or file capabilities.
/// Seccomp filters require it.
pub fn no_new_privs() -> io::Result<()> {
    // SAFETY: prctl with integer arguments.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Whether this architecture has a filter (its `AUDIT_ARCH` is known here).
pub const FILTER_SUPPORTED: bool = cfg!(any(target_arch = "x86_64", target_arch = "aarch64"));

/// The architecture a system call must come from (`seccomp_data.arch`).
#[cfg(target_arch = "x86_64")]
pub const AUDIT_ARCH: u32 = 0xC000_003E; // AUDIT_ARCH_X86_64
#[cfg(target_arch = "aarch64")]
pub const AUDIT_ARCH: u32 = 0xC000_00B7; // AUDIT_ARCH_AARCH64

/// Classic-BPF opcodes a seccomp program is made of.
pub const LD_W_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
pub const JEQ_K: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
pub const JGE_K: u16 = (libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K) as u16;
pub const RET_K: u16 = (libc::BPF_RET | libc::BPF_K) as u16;

/// Offsets in `struct seccomp_data`: int nr; __u32 arch; __u64 ip; __u64 args[6].
pub const OFFSET_NR: u32 = 0;
pub const OFFSET_ARCH: u32 = 4;
/// Low 32 bits of the first argument (little-endian).
pub const OFFSET_ARG0: u32 = 16;

/// x32 system calls (x86_64 numbers with bit 30 set); on aarch64 no valid
/// number is that large either, so a filter refuses everything from here.
pub const X32_BIT: u32 = 0x4000_0000;

/// `return k`.
pub fn stmt(code: u16, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

/// `if (A <code> k) skip jt else skip jf`.
pub fn jump(code: u16, k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}

/// The return value that fails a system call with `errno`.
pub fn ret_errno(errno: libc::c_int) -> u32 {
    libc::SECCOMP_RET_ERRNO | errno as u32
}

/// Installs `program` as a seccomp filter on the calling thread only (the
/// main thread keeps talking to the core). `no_new_privs` must be set
/// already, as seccomp requires.
pub fn install_thread_filter(program: &[libc::sock_filter]) -> io::Result<()> {
    let prog = libc::sock_fprog {
        len: libc::c_ushort::try_from(program.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "seccomp program too long"))?,
        filter: program.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: `prog` points at a valid BPF program that outlives the call;
    // the kernel copies it. Without SECCOMP_FILTER_FLAG_TSYNC the filter
    // applies to this thread only.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_filter_that_refuses_getppid_applies_to_its_thread_only() {
        let refused = std::thread::spawn(|| {
            no_new_privs().unwrap();
            let program = [
                stmt(LD_W_ABS, OFFSET_NR),
                jump(JEQ_K, libc::SYS_getppid as u32, 0, 1),
                stmt(RET_K, ret_errno(libc::EPERM)),
                stmt(RET_K, libc::SECCOMP_RET_ALLOW),
            ];
            install_thread_filter(&program).unwrap();
            // SAFETY: a raw getppid: no arguments, no memory.
            let r = unsafe { libc::syscall(libc::SYS_getppid) };
            (r, io::Error::last_os_error().raw_os_error())
        })
        .join()
        .unwrap();
        assert_eq!(refused, (-1, Some(libc::EPERM)));
        // SAFETY: as above.
        assert!(unsafe { libc::syscall(libc::SYS_getppid) } > 0);
    }
}
