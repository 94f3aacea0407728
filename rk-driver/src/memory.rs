//! Giving back the memory of start-up once it is over. A long-lived
//! process of ours (the core, a driver) touches most of its code while it
//! starts (argument parsing, probing, netlink, JSON) and then runs a small
//! loop for hours: the pages of that start-up code stay resident for
//! nothing. After set-up it unmaps the clean pages of its own executable
//! (`MADV_DONTNEED` on read-only private file mappings that hold no
//! anonymous, i.e. written, page: what is touched again comes back from
//! the page cache with the same bytes), and asks glibc to return free heap
//! memory. (`MADV_PAGEOUT` would be the gentler call, but the kernel
//! ignores it for file pages of a binary the user may not write, such as
//! one installed by root.)

use std::path::Path;

/// A mapping of `/proc/self/maps`: start, end, permissions, path.
fn mappings(maps: &str) -> Vec<(usize, usize, &str, &str)> {
    maps.lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let range = f.next()?;
            let perms = f.next()?;
            let path = f.nth(3).unwrap_or("");
            let (a, b) = range.split_once('-')?;
            Some((
                usize::from_str_radix(a, 16).ok()?,
                usize::from_str_radix(b, 16).ok()?,
                perms,
                path,
            ))
        })
        .collect()
}

/// The read-only mappings of `exe` that hold no anonymous page (so every
/// resident page is a clean copy of the file: not relocated data made
/// read-only after start-up), from `/proc/self/smaps`.
fn clean_ranges(smaps: &str, exe: &Path) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut current: Option<(usize, usize, bool)> = None;
    let flush = |c: Option<(usize, usize, bool)>, out: &mut Vec<(usize, usize)>| {
        if let Some((a, b, true)) = c {
            out.push((a, b));
        }
    };
    for line in smaps.lines() {
        if let Some(&(a, b, perms, path)) = mappings(line).first() {
            flush(current.take(), &mut out);
            let candidate = !perms.contains('w') && perms.ends_with('p') && Path::new(path) == exe;
            current = Some((a, b, candidate));
        } else if let Some(v) = line.strip_prefix("Anonymous:") {
            if v.trim() != "0 kB" {
                if let Some(c) = current.as_mut() {
                    c.2 = false;
                }
            }
        }
    }
    flush(current.take(), &mut out);
    out
}

/// Gives back start-up memory; returns how many bytes were released from
/// the mapping. Errors are ignored: this is an optimisation, never a
/// reason to fail.
pub fn release_startup_memory() -> usize {
    trim_heap();
    let Ok(exe) = std::fs::read_link("/proc/self/exe") else {
        return 0;
    };
    let Ok(smaps) = std::fs::read_to_string("/proc/self/smaps") else {
        return 0;
    };
    let mut released = 0;
    for (start, end) in clean_ranges(&smaps, &exe) {
        // SAFETY: madvise on a private read-only mapping of our executable
        // that holds no written page: DONTNEED drops the process's copies,
        // and any access faults the same bytes in again from the file.
        let r = unsafe {
            let addr = start as *mut libc::c_void;
            // From now on a page comes back alone when it is touched, not
            // with its neighbours (the kernel's fault-around would map
            // 64 KiB around every fault of the small loop that runs on).
            libc::madvise(addr, end - start, libc::MADV_RANDOM);
            libc::madvise(addr, end - start, libc::MADV_DONTNEED)
        };
        if r == 0 {
            released += end - start;
        }
    }
    released
}

#[cfg(target_env = "gnu")]
fn trim_heap() {
    // SAFETY: malloc_trim has no preconditions (glibc only).
    unsafe { libc::malloc_trim(0) };
}

#[cfg(not(target_env = "gnu"))]
fn trim_heap() {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_clean_read_only_mappings_of_the_executable_are_chosen() {
        let smaps = "\
55d0a0000000-55d0a0100000 r--p 00000000 08:01 42 /usr/bin/x
Rss:                 100 kB
Anonymous:             0 kB
55d0a0100000-55d0a0400000 r-xp 00100000 08:01 42 /usr/bin/x
Anonymous:             0 kB
55d0a0400000-55d0a0410000 r--p 00400000 08:01 42 /usr/bin/x
Anonymous:            64 kB
55d0a0410000-55d0a0500000 rw-p 00410000 08:01 42 /usr/bin/x
Anonymous:             4 kB
7f0000000000-7f0000100000 r-xp 00000000 08:01 43 /usr/lib/libc.so.6
Anonymous:             0 kB
7ffd00000000-7ffd00021000 rw-p 00000000 00:00 0 [stack]
Anonymous:           132 kB
";
        assert_eq!(
            clean_ranges(smaps, Path::new("/usr/bin/x")),
            vec![
                (0x55d0a0000000, 0x55d0a0100000),
                (0x55d0a0100000, 0x55d0a0400000)
            ]
        );
    }

    #[test]
    fn releasing_keeps_the_process_running() {
        // Advising our own test binary's code pages must be harmless.
        let advised = release_startup_memory();
        assert!(advised > 0);
        assert_eq!(format!("{}", 1 + 1), "2");
    }
}
