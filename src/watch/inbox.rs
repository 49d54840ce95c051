//! What `watch`'s helper threads tell its loop — signals, the firewall's
//! news, pokes — kept as flags and a few numbers, so a flood of any of them
//! costs no memory: the loop reads them all each time it wakes. And the
//! thread that turns the signals into flags.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// The firewall's news since the loop last looked.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct FirewallNews {
    /// The first and the last change by another process that touched
    /// portlocker's place.
    pub touched: Option<(Instant, Instant)>,
    /// Who made the last of those, as the kernel named it.
    pub by: Option<String>,
    /// How many such changes.
    pub touches: u64,
    /// The latest generation id seen, whoever committed it.
    pub generation: Option<u32>,
    /// News was lost (ENOBUFS): anything may have changed.
    pub lost: bool,
    /// The subscription ended, and why.
    pub ended: Option<String>,
}

/// Shared between the loop and its helpers.
#[derive(Debug)]
pub struct Inbox {
    stop: AtomicBool,
    reload: AtomicBool,
    run_now: AtomicBool,
    poked: AtomicBool,
    fetched: AtomicBool,
    firewall: Mutex<FirewallNews>,
    wake: SyncSender<()>,
}

impl Inbox {
    /// An inbox, and what the loop waits on.
    pub fn new() -> (Arc<Inbox>, Receiver<()>) {
        // One pending wake is enough: the loop reads everything when it wakes.
        let (wake, woken) = sync_channel(1);
        let inbox = Inbox {
            stop: AtomicBool::new(false),
            reload: AtomicBool::new(false),
            run_now: AtomicBool::new(false),
            poked: AtomicBool::new(false),
            fetched: AtomicBool::new(false),
            firewall: Mutex::new(FirewallNews::default()),
            wake,
        };
        (Arc::new(inbox), woken)
    }

    fn wake(&self) {
        let _ = self.wake.try_send(());
    }

    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        self.wake();
    }

    pub fn reload(&self) {
        self.reload.store(true, Ordering::SeqCst);
        self.wake();
    }

    pub fn run_now(&self) {
        self.run_now.store(true, Ordering::SeqCst);
        self.wake();
    }

    pub fn poke(&self) {
        self.poked.store(true, Ordering::SeqCst);
        self.wake();
    }

    /// A fetch made ahead of its run has ended.
    pub fn fetched(&self) {
        self.fetched.store(true, Ordering::SeqCst);
        self.wake();
    }

    pub fn take_fetched(&self) -> bool {
        self.fetched.swap(false, Ordering::SeqCst)
    }

    /// Adds to the firewall's news.
    pub fn firewall(&self, add: impl FnOnce(&mut FirewallNews)) {
        add(&mut self.firewall.lock().unwrap_or_else(PoisonError::into_inner));
        self.wake();
    }

    pub fn stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    pub fn take_reload(&self) -> bool {
        self.reload.swap(false, Ordering::SeqCst)
    }

    pub fn take_run_now(&self) -> bool {
        self.run_now.swap(false, Ordering::SeqCst)
    }

    pub fn take_poke(&self) -> bool {
        self.poked.swap(false, Ordering::SeqCst)
    }

    /// The firewall's news since the last call, and empty news after it
    /// (the latest generation is kept).
    pub fn take_firewall(&self) -> FirewallNews {
        let mut news = self.firewall.lock().unwrap_or_else(PoisonError::into_inner);
        let taken = news.clone();
        *news = FirewallNews {
            generation: news.generation,
            ..FirewallNews::default()
        };
        taken
    }
}

/// Waits for a wake or `timeout`.
pub fn wait(woken: &Receiver<()>, timeout: Duration) {
    let _ = woken.recv_timeout(timeout);
}

/// The signals `watch` takes: SIGTERM and SIGINT end it, SIGHUP reads the
/// config again, SIGUSR1 (a cron run finding it alive) runs it now.
const SIGNALS: [i32; 4] = [libc::SIGTERM, libc::SIGINT, libc::SIGHUP, libc::SIGUSR1];

/// Blocks those signals in this thread, and so in every thread started
/// after it, and starts the one thread that takes them. Call before any
/// other thread starts. (Children get a clean mask: std resets it on exec.)
pub fn take_signals(inbox: Arc<Inbox>) -> std::io::Result<()> {
    // SAFETY: a sigset_t we own, filled by sigemptyset/sigaddset, then
    // given to pthread_sigmask; no other memory is involved.
    let set = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for signal in SIGNALS {
            libc::sigaddset(&mut set, signal);
        }
        let error = libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        if error != 0 {
            return Err(std::io::Error::from_raw_os_error(error));
        }
        set
    };
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            loop {
                let mut signal = 0;
                // SAFETY: sigwait(3) reads the set we own and writes one int we own.
                if unsafe { libc::sigwait(&set, &mut signal) } != 0 {
                    continue;
                }
                match signal {
                    libc::SIGHUP => inbox.reload(),
                    libc::SIGUSR1 => inbox.run_now(),
                    _ => inbox.stop(),
                }
            }
        })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn news_floods_cost_nothing_and_keep_the_latest_generation() {
        let (inbox, woken) = Inbox::new();
        let start = Instant::now();
        for n in 0..100_000u32 {
            inbox.firewall(|news| {
                news.generation = Some(n);
                news.touches += 1;
                let first = news.touched.map_or(start, |(first, _)| first);
                news.touched = Some((first, start));
            });
        }
        assert!(woken.try_recv().is_ok());
        assert!(woken.try_recv().is_err(), "one wake, however many news");
        let news = inbox.take_firewall();
        assert_eq!((news.touches, news.generation), (100_000, Some(99_999)));
        let after = inbox.take_firewall();
        assert_eq!(after.touches, 0);
        assert_eq!(after.generation, Some(99_999));
        inbox.reload();
        inbox.reload();
        assert!(inbox.take_reload());
        assert!(!inbox.take_reload(), "a storm of SIGHUPs is one reload");
    }
}
