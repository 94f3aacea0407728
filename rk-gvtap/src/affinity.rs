//! Keeps the network thread on one CPU while the guest sends in bulk.
//!
//! A transfer out of the guest keeps three tasks busy: the guest's sender,
//! this thread, and the receiver on the host. The sender wakes this thread
//! through the tap with a synchronous wakeup, which makes the scheduler
//! pull the thread onto the sender's CPU, where the two then take turns
//! while another CPU idles. Pinned, the thread stays put, the scheduler
//! moves the sender instead, and the host's receiver (woken by this
//! thread) tends to join it, where the data it reads is still in the cache.
//! On two CPUs at MTU 1500 that took child→host from 68 % to 86 % of a
//! rootful veth pair (docs/gvisor-tap-vsock.md, Performance).
//!
//! Traffic is bulk when [`BULK_FRAMES`] frames arrive within one
//! [`WINDOW`], counted per round, so that a round delayed by the scheduler
//! still counts everything it found. The pin is a hint, never a fence: it
//! only narrows the CPUs the thread had at start and gives them back
//! whole, after [`IDLE_AFTER`] without frames and in any case after
//! [`PIN_FOR`], so that a CPU that another task has come to need holds the
//! thread no longer than that; if the traffic goes on, the thread pins
//! again wherever the scheduler has put it. `--net-opt pin-cpu=false`
//! turns it off.

use std::time::{Duration, Instant};

/// [`BULK_FRAMES`] frames within one window this long make traffic bulk
/// (64 KiB frames: 84 MB/s; MTU-sized ones: 2 MB/s).
pub const WINDOW: Duration = Duration::from_millis(50);
pub const BULK_FRAMES: usize = 64;
/// No frames for this long: the pin goes.
pub const IDLE_AFTER: Duration = Duration::from_millis(500);
/// The longest a pin lasts.
pub const PIN_FOR: Duration = Duration::from_secs(1);

/// What the policy needs from the system (the real one is [`ThreadCpus`]).
pub trait Cpus {
    /// The CPU the calling thread runs on.
    fn current(&mut self) -> Option<usize>;
    /// Restricts the calling thread to `cpu`; whether that worked.
    fn pin(&mut self, cpu: usize) -> bool;
    /// Gives the calling thread back the CPUs it had at start.
    fn release(&mut self);
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum State {
    Free,
    Pinned { cpu: usize, since: Instant },
}

/// The pinning policy of the network thread; fed once per engine round.
pub struct Pinning<C: Cpus> {
    cpus: Option<C>,
    state: State,
    /// When the current window began, and the frames counted in it.
    window_start: Option<Instant>,
    window_frames: usize,
    last_frame: Option<Instant>,
}

impl<C: Cpus> Pinning<C> {
    /// `None`: never pins (turned off, or a single CPU to run on).
    pub fn new(cpus: Option<C>) -> Pinning<C> {
        Pinning {
            cpus,
            state: State::Free,
            window_start: None,
            window_frames: 0,
            last_frame: None,
        }
    }

    /// The CPU the thread is pinned to, if it is.
    pub fn pinned(&self) -> Option<usize> {
        match self.state {
            State::Pinned { cpu, .. } => Some(cpu),
            State::Free => None,
        }
    }

    /// After an engine round at `now` that read `frames` frames from the tap.
    pub fn after_round(&mut self, now: Instant, frames: usize) {
        let Some(cpus) = self.cpus.as_mut() else {
            return;
        };
        if frames > 0 {
            if self.window_start.is_none_or(|t| now - t >= WINDOW) {
                self.window_start = Some(now);
                self.window_frames = 0;
            }
            self.window_frames += frames;
            self.last_frame = Some(now);
        }
        match self.state {
            State::Free => {
                if frames == 0 || self.window_frames < BULK_FRAMES {
                    return;
                }
                if let Some(cpu) = cpus.current() {
                    if cpus.pin(cpu) {
                        self.state = State::Pinned { cpu, since: now };
                    } else {
                        // Not allowed here (a cpuset that changed): stop
                        // trying instead of failing every round.
                        self.cpus = None;
                    }
                }
            }
            State::Pinned { since, .. } => {
                let idle = self.last_frame.is_none_or(|t| now - t >= IDLE_AFTER);
                if idle || now - since >= PIN_FOR {
                    cpus.release();
                    self.state = State::Free;
                    self.window_start = None;
                }
            }
        }
    }
}

/// The calling thread's CPUs, through `sched_setaffinity(0, …)`.
pub struct ThreadCpus {
    allowed: libc::cpu_set_t,
}

impl ThreadCpus {
    /// The CPUs the calling thread may use now (a thread started later
    /// inherits them); `None` when fewer than two or unknown.
    pub fn at_start() -> Option<ThreadCpus> {
        // SAFETY: cpu_set_t is plain bits; all zeroes is the empty set.
        let mut allowed: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        // SAFETY: the kernel writes at most the size given into `allowed`.
        let r = unsafe {
            libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut allowed)
        };
        // SAFETY: counting the bits of a set we own.
        if r != 0 || unsafe { libc::CPU_COUNT(&allowed) } < 2 {
            return None;
        }
        Some(ThreadCpus { allowed })
    }

    fn set(set: &libc::cpu_set_t) -> bool {
        // SAFETY: `set` is a whole cpu_set_t; pid 0 is the calling thread.
        unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), set) == 0 }
    }
}

impl Cpus for ThreadCpus {
    fn current(&mut self) -> Option<usize> {
        // SAFETY: no arguments; returns the CPU number or -1.
        let cpu = unsafe { libc::sched_getcpu() };
        usize::try_from(cpu).ok()
    }

    fn pin(&mut self, cpu: usize) -> bool {
        // SAFETY: CPU_ISSET reads a set we own.
        if cpu >= libc::CPU_SETSIZE as usize || !unsafe { libc::CPU_ISSET(cpu, &self.allowed) } {
            return false;
        }
        // SAFETY: as above; all zeroes is the empty set, CPU_SET writes into it.
        let mut one: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        // SAFETY: `cpu` < CPU_SETSIZE (checked above).
        unsafe { libc::CPU_SET(cpu, &mut one) };
        Self::set(&one)
    }

    fn release(&mut self) {
        Self::set(&self.allowed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pretend system: the thread runs on CPU 1.
    #[derive(Default)]
    struct Fake {
        refuse: bool,
        pinned: Option<usize>,
        pins: usize,
        releases: usize,
    }

    impl Cpus for &mut Fake {
        fn current(&mut self) -> Option<usize> {
            Some(1)
        }
        fn pin(&mut self, cpu: usize) -> bool {
            self.pins += 1;
            if self.refuse {
                return false;
            }
            self.pinned = Some(cpu);
            true
        }
        fn release(&mut self) {
            self.pinned = None;
            self.releases += 1;
        }
    }

    const MS: Duration = Duration::from_millis(1);

    /// Rounds every millisecond after `from` for `ms`, each reading
    /// `frames` frames.
    fn rounds(p: &mut Pinning<&mut Fake>, from: Instant, ms: u32, frames: usize) -> Instant {
        let mut now = from;
        for _ in 0..ms {
            now += MS;
            p.after_round(now, frames);
        }
        now
    }

    #[test]
    fn pins_once_traffic_is_bulk_and_lets_go_when_idle() {
        let mut fake = Fake::default();
        let mut p = Pinning::new(Some(&mut fake));
        let t = rounds(&mut p, Instant::now(), 31, 2);
        assert_eq!(p.pinned(), None, "62 frames: not bulk yet");
        let t = rounds(&mut p, t, 1, 2);
        assert_eq!(p.pinned(), Some(1));
        // Rounds without frames (other events), not yet for IDLE_AFTER.
        p.after_round(t + IDLE_AFTER / 2, 0);
        assert_eq!(p.pinned(), Some(1));
        p.after_round(t + IDLE_AFTER, 0);
        assert_eq!(p.pinned(), None);
        assert_eq!((fake.pins, fake.releases, fake.pinned), (1, 1, None));
    }

    #[test]
    fn a_trickle_of_frames_is_not_bulk() {
        let mut fake = Fake::default();
        let mut p = Pinning::new(Some(&mut fake));
        // 50 frames a window, for ten seconds.
        rounds(&mut p, Instant::now(), 10_000, 1);
        assert_eq!(p.pinned(), None);
        assert_eq!(fake.pins, 0);
    }

    #[test]
    fn a_late_round_that_finds_many_frames_counts_them_all() {
        // The thread was kept from running: one round takes what queued.
        let mut fake = Fake::default();
        let mut p = Pinning::new(Some(&mut fake));
        p.after_round(Instant::now(), BULK_FRAMES);
        assert_eq!(p.pinned(), Some(1));
    }

    #[test]
    fn a_pin_lasts_at_most_pin_for_then_comes_again_while_traffic_goes_on() {
        let mut fake = Fake::default();
        let mut p = Pinning::new(Some(&mut fake));
        let mut now = Instant::now();
        while p.pinned().is_none() {
            now = rounds(&mut p, now, 1, 2);
        }
        let pinned_at = now;
        let mut released = None;
        while now - pinned_at < PIN_FOR * 2 {
            now = rounds(&mut p, now, 1, 2);
            if released.is_none() && p.pinned().is_none() {
                released = Some(now);
            }
        }
        let released = released.expect("the pin went");
        assert!(released - pinned_at >= PIN_FOR && released - pinned_at < PIN_FOR + 2 * MS);
        // Bulk again: pinned anew.
        assert_eq!(p.pinned(), Some(1));
        assert_eq!((fake.pins, fake.releases), (2, 1));
    }

    #[test]
    fn a_refused_pin_is_not_tried_again() {
        let mut fake = Fake {
            refuse: true,
            ..Fake::default()
        };
        let mut p = Pinning::new(Some(&mut fake));
        rounds(&mut p, Instant::now(), 1000, BULK_FRAMES);
        assert_eq!(p.pinned(), None);
        assert_eq!(fake.pins, 1);
    }

    #[test]
    fn without_cpus_nothing_happens() {
        let mut p: Pinning<&mut Fake> = Pinning::new(None);
        rounds(&mut p, Instant::now(), 1000, BULK_FRAMES);
        assert_eq!(p.pinned(), None);
    }

    #[test]
    fn the_real_thread_pins_and_gets_its_cpus_back() {
        // In a thread of its own, so that the test harness is not affected.
        std::thread::spawn(|| {
            let Some(mut cpus) = ThreadCpus::at_start() else {
                // One CPU: the policy is off (tested above), nothing to pin.
                assert!(std::thread::available_parallelism().map_or(1, |n| n.get()) < 2);
                return;
            };
            let before = cpus.allowed;
            let cpu = cpus.current().expect("sched_getcpu");
            assert!(cpus.pin(cpu));
            assert_eq!(cpus.current(), Some(cpu));
            cpus.release();
            // SAFETY: cpu_set_t is plain bits; all zeroes is the empty set.
            let mut now: libc::cpu_set_t = unsafe { std::mem::zeroed() };
            // SAFETY: the kernel writes at most the size given into `now`.
            unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut now) };
            // SAFETY: comparing sets we own.
            assert!(unsafe { libc::CPU_EQUAL(&before, &now) });
            assert!(!cpus.pin(libc::CPU_SETSIZE as usize), "out of range");
        })
        .join()
        .unwrap();
    }
}
