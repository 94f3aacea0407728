//! Threads whose panic must not take the driver (and with it pasta and
//! the network) down.
//!
//! A panic in a thread started here is reported on stderr, which the core
//! passes on to the user, as an internal error naming the thread and what
//! stops working. With unwinding (debug builds) the thread's body returns
//! `Err` and its caller decides (the port forwarder starts again). The
//! release profile aborts on panic, where nothing can be unwound: the
//! panic hook then parks the failed thread for good instead of returning
//! (returning would abort the process), so the driver and pasta keep
//! running and only that thread's work stops.

use std::cell::Cell;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Once};

thread_local! {
    /// What stops working when this thread fails; `None` outside
    /// contained threads.
    static CONTAINED: Cell<Option<&'static str>> = const { Cell::new(None) };
    /// The main thread, which serves the core: parking it would leave the
    /// core waiting for an answer, so there an abort build aborts (the
    /// core then reports the driver gone), after the report.
    static MAY_PARK: Cell<bool> = const { Cell::new(true) };
    static FAILED: std::cell::RefCell<Option<Arc<AtomicBool>>> = const { std::cell::RefCell::new(None) };
}

fn install_hook() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let default = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            let Some(consequence) = CONTAINED.with(Cell::get) else {
                default(info);
                return;
            };
            let name = std::thread::current()
                .name()
                .unwrap_or("unnamed")
                .to_owned();
            let may_park = MAY_PARK.with(Cell::get);
            let network = if may_park {
                "; the network stays up"
            } else {
                ""
            };
            eprintln!(
                "rk-pasta: internal error (please report it): thread '{name}' {info}; \
                 {consequence}{network}"
            );
            FAILED.with(|f| {
                if let Some(flag) = f.borrow().as_ref() {
                    flag.store(true, Ordering::SeqCst);
                }
            });
            if cfg!(panic = "abort") && may_park {
                // Returning would abort the whole process.
                loop {
                    std::thread::park();
                }
            }
        }));
    });
}

/// Runs `body` in the calling thread with panics contained: `Err(())`
/// when it panicked (and could be unwound), after the report.
/// `consequence` says what stops working, for the report.
pub fn run<T>(
    consequence: &'static str,
    failed: &Arc<AtomicBool>,
    body: impl FnOnce() -> T,
) -> Result<T, ()> {
    install_hook();
    let before = CONTAINED.with(|c| c.replace(Some(consequence)));
    FAILED.with(|f| *f.borrow_mut() = Some(Arc::clone(failed)));
    let result = panic::catch_unwind(AssertUnwindSafe(body));
    CONTAINED.with(|c| c.set(before));
    result.map_err(|_| ())
}

/// Like [`run`], for the thread that serves the core: with unwinding, a
/// panic becomes `Err` (an error the core shows); an abort build reports
/// it and then aborts rather than leave the core without an answer.
pub fn run_serving<T>(consequence: &'static str, body: impl FnOnce() -> T) -> Result<T, ()> {
    let before = MAY_PARK.with(|p| p.replace(false));
    let r = run(consequence, &Arc::new(AtomicBool::new(false)), body);
    MAY_PARK.with(|p| p.set(before));
    r
}

/// A named thread running `body` with panics contained.
pub fn spawn(
    name: &str,
    stack: usize,
    consequence: &'static str,
    body: impl FnOnce() + Send + 'static,
) -> std::io::Result<Contained> {
    let failed = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&failed);
    let handle = std::thread::Builder::new()
        .name(name.to_owned())
        .stack_size(stack)
        .spawn(move || {
            let _ = run(consequence, &flag, body);
        })?;
    Ok(Contained { handle, failed })
}

/// A contained thread.
#[derive(Debug)]
pub struct Contained {
    handle: std::thread::JoinHandle<()>,
    failed: Arc<AtomicBool>,
}

impl Contained {
    /// Waits for the thread unless it failed (a failed thread may be
    /// parked for good).
    pub fn join(self) {
        if !self.failed.load(Ordering::SeqCst) {
            let _ = self.handle.join();
        }
    }

    #[cfg(test)]
    pub fn failed(&self) -> bool {
        self.failed.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_is_reported_and_contained() {
        let failed = Arc::new(AtomicBool::new(false));
        let r = run("nothing stops", &failed, || -> u8 { panic!("boom") });
        assert_eq!(r, Err(()));
        assert!(failed.load(Ordering::SeqCst));
        let ok = run("nothing stops", &Arc::new(AtomicBool::new(false)), || 7);
        assert_eq!(ok, Ok(7));
    }

    #[test]
    fn a_thread_that_panics_does_not_take_the_process_down() {
        let t = spawn("boom", 64 * 1024, "nothing stops", || panic!("boom")).unwrap();
        while !t.failed() {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        t.join();
    }
}
