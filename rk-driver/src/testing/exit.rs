//! The end of a driver: shutdown, EOF or its own exit, each checked for
//! time, status and what it leaves behind.

use super::*;

impl FakeCore {
    /// Sends `shutdown` and checks that the driver exits 0 within the
    /// grace and leaves no process behind.
    pub fn shutdown(mut self) -> Result<Exit, Violation> {
        self.note_descendants();
        self.send(&CoreMessage::Shutdown, &[])?;
        self.orderly_exit("after shutdown")
    }

    /// Closes the core's end (EOF), which means the same as `shutdown`.
    pub fn hang_up(mut self) -> Result<Exit, Violation> {
        self.note_descendants();
        self.channel = None;
        self.orderly_exit("after EOF")
    }

    fn orderly_exit(mut self, when: &str) -> Result<Exit, Violation> {
        let exit = self.wait_exit(grace(), when)?;
        if !exit.status.success() {
            return Err(self.fail(format!(
                "exited {when} with {} instead of 0 (section 10)",
                exit.status
            )));
        }
        Ok(exit)
    }

    /// Waits for the driver to exit on its own (after a failed request or
    /// a protocol error), within `limit`; a death by signal is a crash.
    pub fn expect_exit(mut self, limit: Duration, when: &str) -> Result<Exit, Violation> {
        self.note_descendants();
        let exit = self.wait_exit(limit, when)?;
        if let Some(sig) = exit.status.signal() {
            return Err(self.fail(format!("crashed {when}: killed by signal {sig}")));
        }
        Ok(exit)
    }

    /// Waits up to `limit` for the exit, then for every process the driver
    /// started to be gone (reaped, not a zombie).
    fn wait_exit(&mut self, limit: Duration, when: &str) -> Result<Exit, Violation> {
        let started = Instant::now();
        let ms = u16::try_from(limit.as_millis()).unwrap_or(u16::MAX);
        if !crate::process::wait_exit(self.pidfd.as_fd(), ms) {
            let rule = if limit == grace() {
                format!(" (section 10: exit within {SHUTDOWN_GRACE_MS} ms)")
            } else {
                String::new()
            };
            return Err(self.fail(format!(
                "still running {:?} {when}{rule}",
                started.elapsed()
            )));
        }
        let took = started.elapsed();
        let status = self
            .child
            .wait()
            .map_err(|e| Violation::setup(format!("waitpid: {e}")))?;
        std::thread::sleep(SCHEDULING_ALLOWANCE.saturating_sub(started.elapsed() - took));
        // What it started: the descendants seen, and whatever is still in
        // its process group (a pgid is not reused while a member lives).
        let mut left: Vec<u32> = in_process_group(self.child.id());
        for &(pid, start) in self.seen.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            if start_time(pid) == Some(start) && !left.contains(&pid) {
                left.push(pid);
            }
        }
        let left: Vec<String> = left.into_iter().map(describe).collect();
        if !left.is_empty() {
            return Err(self.fail(format!(
                "left processes behind {when}: {} (section 10: reap your helpers before you exit)",
                left.join(", ")
            )));
        }
        Ok(Exit { status, took })
    }

    pub(super) fn note_descendants(&mut self) {
        note_descendants(self.child.id(), &self.seen);
    }
}

impl Drop for FakeCore {
    fn drop(&mut self) {
        self.channel = None;
        if let Ok(None) = self.child.try_wait() {
            // SAFETY: kill(2) on the process group the driver leads; it is
            // our unreaped child, so the id cannot have been reused.
            unsafe { libc::kill(-(self.child.id() as libc::pid_t), libc::SIGKILL) };
            let _ = self.child.wait();
        }
        for pid in in_process_group(self.child.id()) {
            // SAFETY: kill(2) on a member of the driver's process group
            // (a pgid is not reused while a member lives).
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
        }
        for (pid, start) in self.seen.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            if start_time(*pid) == Some(*start) {
                // SAFETY: kill(2) on a process the driver started that is
                // still there (same start time).
                unsafe { libc::kill(*pid as libc::pid_t, libc::SIGKILL) };
            }
        }
        let _ = std::fs::remove_dir_all(&self.state_dir);
    }
}
