//! The operating system calls std has no safe wrapper for, and (with the Windows half of
//! `sys.rs`) the only module of the crate with unsafe code: a worker giving back the stack
//! pages a long stream does not need, the limit on open files, and Windows' stop events.
//!
//! Stack: a request touches its deepest stack while it is sent — ureq's `run` and its connector
//! chain alone have frames of 14 and 11.6 KiB — and a touched page stays resident for the
//! thread's life. A stream then spends minutes relaying at a third of that depth, one thread
//! each, so most of its stack is memory nobody uses: 44 KiB per open stream in the static build,
//! against 12 KiB of depth while relaying. When a response starts streaming, the pages below the
//! current depth (minus a margin for the calls still to come) are handed back to the kernel
//! with `madvise(MADV_DONTNEED)`; the relay faults in the few it needs again.
//!
//! Linux only (the hosts this is for); elsewhere it does nothing.
//!
//! Open files: each open stream holds two descriptors (client and backend), and processes often
//! start with a soft limit of 1024 although the hard limit allows far more. As Go's runtime
//! does, the soft limit is raised to the hard one at start.

#![allow(unsafe_code)]

/// Kept below the current depth: the madvise call itself. What the relay needs deeper is
/// faulted in again, once.
const MARGIN: usize = 4 * 1024;

#[cfg(target_os = "linux")]
mod imp {
    use std::cell::Cell;

    thread_local! {
        /// The lowest usable address of this thread's stack; 0 until [`note_stack`] ran.
        static LOW: Cell<usize> = const { Cell::new(0) };
    }

    pub fn note_stack() {
        let mut attr = std::mem::MaybeUninit::<libc::pthread_attr_t>::uninit();
        let mut addr: *mut libc::c_void = std::ptr::null_mut();
        let mut size: libc::size_t = 0;
        // SAFETY: pthread_getattr_np initialises `attr` for the calling thread (glibc and musl
        // both provide it); it is read only after success and destroyed once.
        let low = unsafe {
            if libc::pthread_getattr_np(libc::pthread_self(), attr.as_mut_ptr()) != 0 {
                return;
            }
            let ok = libc::pthread_attr_getstack(attr.as_ptr(), &mut addr, &mut size) == 0;
            libc::pthread_attr_destroy(attr.as_mut_ptr());
            if !ok {
                return;
            }
            addr as usize
        };
        LOW.set(low);
    }

    #[inline(never)]
    pub fn release_below_here(margin: usize) {
        let low = LOW.get();
        if low == 0 {
            return;
        }
        // SAFETY: sysconf has no preconditions.
        let page = match unsafe { libc::sysconf(libc::_SC_PAGESIZE) } {
            p if p > 0 => p as usize,
            _ => return,
        };
        let marker = 0u8;
        let here = std::hint::black_box(&marker) as *const u8 as usize;
        let start = (low + page - 1) & !(page - 1);
        let Some(end) = here.checked_sub(margin).map(|e| e & !(page - 1)) else {
            return;
        };
        if end <= start {
            return;
        }
        // SAFETY: [start, end) lies within this thread's own stack (from pthread_attr_getstack)
        // and below the current frame by `margin`: no live frame is there, and no other thread
        // uses this stack. Signal handlers run on top of the current frame, never below it.
        // MADV_DONTNEED on private anonymous memory only drops the pages; touching them again
        // gives zeroed pages, which is all a stack below its pointer may hold.
        unsafe {
            libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED);
        }
    }
}

#[cfg(not(target_os = "linux"))]
mod imp {
    pub fn note_stack() {}
    pub fn release_below_here(_margin: usize) {}
}

/// Records the calling thread's stack bounds; a worker calls it once when it starts.
pub fn note_stack() {
    imp::note_stack();
}

/// Hands back the calling thread's stack pages below the current depth (see the module doc).
pub fn release_unused() {
    imp::release_below_here(MARGIN);
}

/// Raises the soft limit on open files to the hard one; returns the limit in force (None when
/// it cannot be read, or there is none to speak of).
pub fn raise_open_files_limit() -> Option<u64> {
    #[cfg(unix)]
    {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes the struct it is given; setrlimit reads one.
        unsafe {
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
                return None;
            }
            if limit.rlim_cur < limit.rlim_max {
                let mut raised = limit;
                // macOS refuses an unlimited soft limit (OPEN_MAX is 10240 there).
                raised.rlim_cur = if cfg!(target_os = "macos") {
                    limit.rlim_max.min(10240)
                } else {
                    limit.rlim_max
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                    limit = raised;
                }
            }
        }
        // rlim_t is 64 bits on the targets CI builds, 32 on some others.
        #[allow(clippy::useless_conversion)]
        Some(u64::try_from(limit.rlim_cur).unwrap_or(u64::MAX))
    }
    #[cfg(not(unix))]
    {
        None
    }
}

/// Windows: runs `on_stop` on the system's console-control thread for Ctrl+C, Ctrl+Break and
/// the console window closing (the stop signals there). It returns at once for Ctrl+C and
/// Ctrl+Break; for a closing console, the system ends the process when the handler returns,
/// so it waits there for the drain (at most `wait`; Windows itself allows about 5 s).
#[cfg(windows)]
pub fn on_console_stop(
    on_stop: Box<dyn Fn(&'static str) + Send + Sync>,
    wait: std::time::Duration,
) -> std::io::Result<()> {
    use std::sync::OnceLock;

    type Handler = unsafe extern "system" fn(u32) -> i32;
    #[link(name = "kernel32")]
    unsafe extern "system" {
        fn SetConsoleCtrlHandler(handler: Option<Handler>, add: i32) -> i32;
    }
    static STOP: OnceLock<(Box<dyn Fn(&'static str) + Send + Sync>, std::time::Duration)> =
        OnceLock::new();
    const CTRL_C: u32 = 0;
    const CTRL_BREAK: u32 = 1;
    const CTRL_CLOSE: u32 = 2;

    unsafe extern "system" fn handler(kind: u32) -> i32 {
        let Some((on_stop, wait)) = STOP.get() else {
            return 0;
        };
        match kind {
            CTRL_C => on_stop("Ctrl+C"),
            CTRL_BREAK => on_stop("Ctrl+Break"),
            CTRL_CLOSE => {
                on_stop("console closed");
                std::thread::sleep(*wait);
            }
            // Log-off and shutdown: a service's concern; the default handling ends us.
            _ => return 0,
        }
        1
    }

    let _ = STOP.set((on_stop, wait));
    // SAFETY: `handler` is a plain function that lives as long as the process; the call only
    // adds it to the process's list.
    if unsafe { SetConsoleCtrlHandler(Some(handler), 1) } == 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[inline(never)]
    fn deep(n: usize) -> u64 {
        let pad = std::hint::black_box([n as u8; 2048]);
        if n == 0 {
            return u64::from(pad[0]);
        }
        u64::from(pad[1]) + deep(n - 1)
    }

    #[test]
    fn a_thread_keeps_working_after_its_deep_pages_are_released() {
        let t = std::thread::Builder::new()
            .stack_size(1024 * 1024)
            .spawn(|| {
                note_stack();
                let before = deep(100);
                release_unused();
                // The same depth again, on pages faulted in afresh.
                let after = deep(100);
                release_unused();
                (before, after)
            })
            .unwrap();
        let (before, after) = t.join().unwrap();
        assert_eq!(before, after);
    }
}
