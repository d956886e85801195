//! SIGTERM / SIGINT during training (a Slurm time limit, Ctrl-C): the first signal sets a flag
//! that the training loop reads after every batch; it then writes the checkpoint of the last
//! completed epoch and stops, so an interruption loses at most the current epoch. A second
//! signal of the same kind, before the loop has stopped, ends the process the default way.
//!
//! The flag is process-wide and stays set: a process that was asked to stop does not start
//! the next training run either. The handlers are installed while a [`Guard`] lives and the
//! previous ones are restored when it drops.

use std::sync::atomic::{AtomicI32, Ordering};

/// The signal received (0: none).
static RECEIVED: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(sig: libc::c_int) {
    // Only async-signal-safe calls: an atomic swap, signal() and raise().
    if RECEIVED.swap(sig, Ordering::SeqCst) == sig {
        // SAFETY: resetting to the default disposition and re-raising are async-signal-safe.
        unsafe {
            libc::signal(sig, libc::SIG_DFL);
            libc::raise(sig);
        }
    }
}

/// The signal received since the process started, if any.
pub fn received() -> Option<i32> {
    match RECEIVED.load(Ordering::SeqCst) {
        0 => None,
        s => Some(s),
    }
}

/// The signal's name, for messages.
pub fn name(sig: i32) -> &'static str {
    match sig {
        libc::SIGTERM => "SIGTERM",
        libc::SIGINT => "SIGINT",
        _ => "a signal",
    }
}

/// Installed handlers; the previous ones come back on drop.
pub struct Guard {
    previous: Vec<(libc::c_int, libc::sigaction)>,
}

impl Guard {
    pub fn install() -> Self {
        let mut previous = Vec::new();
        for sig in [libc::SIGTERM, libc::SIGINT] {
            // SAFETY: a zeroed sigaction with a plain handler and an empty mask is valid; the
            // handler only touches an atomic (see `on_signal`).
            unsafe {
                let mut action: libc::sigaction = std::mem::zeroed();
                action.sa_sigaction = on_signal as *const () as libc::sighandler_t;
                libc::sigemptyset(&mut action.sa_mask);
                action.sa_flags = libc::SA_RESTART;
                let mut old: libc::sigaction = std::mem::zeroed();
                if libc::sigaction(sig, &action, &mut old) == 0 {
                    previous.push((sig, old));
                }
            }
        }
        Guard { previous }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        for (sig, old) in &self.previous {
            // SAFETY: restores the disposition read by `install`.
            unsafe {
                libc::sigaction(*sig, old, std::ptr::null_mut());
            }
        }
    }
}
