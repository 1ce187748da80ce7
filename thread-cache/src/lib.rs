//! Per-thread free lists of small blocks in front of the system allocator.
//!
//! musl's malloc (the allocator of the static builds) serialises every `malloc` and `free` on one
//! global lock. A proxied request makes about 80 small allocations, so under load the worker
//! threads spent a quarter of their CPU in that lock, in the futex calls of its contention and in
//! the allocator itself (measured with perf). Here a thread that opted in with [`enable`] keeps
//! the small blocks it frees (up to [`MAX_BLOCK`] bytes, [`THREAD_BYTES`] in all) in per-size
//! free lists and takes its next allocations from them, without a lock. Everything else goes
//! straight to [`System`].
//!
//! Memory is bounded and given back: a thread holds at most [`THREAD_BYTES`], at most
//! [`MAX_THREADS`] threads cache at once, and a thread returns its blocks when it ends (a
//! thread-local destructor) and whenever its owner calls [`flush`] (a worker that went idle).
//! Threads that never call [`enable`] hold nothing.
//!
//! Why not a complete allocator (mimalloc, jemalloc): they cost far more of the 2.5 MiB aarch64
//! size budget than these 200 lines, and mimalloc held 430 MiB with 256 streaming threads.

mod system;

pub use system::{limit_arenas, trim};

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::UnsafeCell;
use std::ptr;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Class sizes are 16n - 4 bytes: musl's malloc puts a 4-byte header before each block in slots
/// of 16n bytes, so a class fills its slot exactly (16n would take the next slot, a third more
/// memory for the smallest). Every block is 16-aligned, as `malloc` returns it.
const GRANULE: usize = 16;
const HEADER: usize = 4;
const CLASSES: usize = 64;
/// Blocks larger than this go straight to the system allocator: buffers are few per request,
/// the many small ones (header values and maps, strings, boxed state) are what costs.
pub const MAX_BLOCK: usize = CLASSES * GRANULE - HEADER;
/// Most bytes one thread keeps in its free lists: a proxied request frees about 10 KiB of small
/// blocks.
pub const THREAD_BYTES: usize = 16 * 1024;
/// Most threads caching at once, so at most 1 MiB is cached. A burst of hundreds of long streams
/// would otherwise hold several MiB in lists, and the system allocator, grown for that peak,
/// could not give all of it back after. More threads than this rarely run between two blocking
/// calls on the small hosts this is for; the ones beyond it allocate as before.
pub const MAX_THREADS: usize = 64;

static CACHING: AtomicUsize = AtomicUsize::new(0);

/// The global allocator: `#[global_allocator] static A: ThreadCache = ThreadCache;`
pub struct ThreadCache;

/// A cached block's first bytes: the link to the next free block of its class.
struct Free {
    next: *mut Free,
}

struct Lists {
    heads: [*mut Free; CLASSES],
    bytes: usize,
    /// Set by [`enable`], cleared when the thread's destructors run: frees after that (from
    /// other thread-locals' destructors) go to the system allocator.
    enabled: bool,
}

thread_local! {
    // No destructor: a global allocator may only use thread-locals that do not register one,
    // as registering allocates. The exit flush lives in `EXIT_FLUSH`, registered by `enable`.
    static LISTS: UnsafeCell<Lists> = const {
        UnsafeCell::new(Lists { heads: [ptr::null_mut(); CLASSES], bytes: 0, enabled: false })
    };
    static EXIT_FLUSH: ExitFlush = const { ExitFlush };
}

/// Lets this thread keep the small blocks it frees for its own later allocations, unless
/// [`MAX_THREADS`] already do; true if it now caches. Call it at the start of a thread that
/// allocates and frees a lot (a worker); the blocks are returned when the thread ends or calls
/// [`flush`].
pub fn enable() -> bool {
    // SAFETY: a read of a thread-local no allocator call is running on.
    if LISTS.with(|lists| unsafe { (*lists.get()).enabled }) {
        return true;
    }
    let slot = CACHING.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
        (n < MAX_THREADS).then_some(n + 1)
    });
    if slot.is_err() {
        return false;
    }
    // Touching the thread-local registers its destructor now, outside the allocator.
    if EXIT_FLUSH.try_with(|_| {}).is_err() {
        CACHING.fetch_sub(1, Ordering::AcqRel);
        return false;
    }
    LISTS.with(|lists| {
        // SAFETY: the allocator's calls do not run while this reference lives (nothing here
        // allocates), and the thread-local is only reached from its own thread.
        unsafe { (*lists.get()).enabled = true }
    });
    true
}

/// Returns this thread's cached blocks to the system allocator, e.g. before an idle wait, so
/// they do not pin the system allocator's pages while nothing runs. Caching goes on.
pub fn flush() {
    release(take(false));
}

/// Bytes this thread holds in its free lists (for tests and diagnostics).
pub fn cached_bytes() -> usize {
    // SAFETY: a read of a thread-local no allocator call is running on.
    LISTS.with(|lists| unsafe { (*lists.get()).bytes })
}

struct ExitFlush;

impl Drop for ExitFlush {
    fn drop(&mut self) {
        // Only registered by a successful `enable`, so this thread held a slot.
        release(take(true));
        CACHING.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Empties this thread's lists, and stops caching on it when `disable`.
fn take(disable: bool) -> [*mut Free; CLASSES] {
    LISTS.with(|lists| {
        // SAFETY: nothing allocates while this reference lives.
        let lists = unsafe { &mut *lists.get() };
        if disable {
            lists.enabled = false;
        }
        lists.bytes = 0;
        std::mem::replace(&mut lists.heads, [ptr::null_mut(); CLASSES])
    })
}

fn release(heads: [*mut Free; CLASSES]) {
    for (class, mut block) in heads.into_iter().enumerate() {
        while !block.is_null() {
            // SAFETY: every listed block came from `System.alloc(class_layout(class))` and is
            // owned by the list alone; its link was written when it was listed.
            unsafe {
                let next = (*block).next;
                System.dealloc(block.cast(), class_layout(class));
                block = next;
            }
        }
    }
}

/// The size class serving `layout`, or `None` if it goes straight to the system allocator.
fn class_of(layout: Layout) -> Option<usize> {
    (layout.align() <= GRANULE && layout.size() <= MAX_BLOCK)
        .then(|| (layout.size() + HEADER - 1) / GRANULE)
}

fn class_size(class: usize) -> usize {
    (class + 1) * GRANULE - HEADER
}

fn class_layout(class: usize) -> Layout {
    // SAFETY: a non-zero size far below isize::MAX, a power-of-two alignment.
    unsafe { Layout::from_size_align_unchecked(class_size(class), GRANULE) }
}

/// Takes a block of `class` from this thread's list, or null if there is none.
fn pop(class: usize) -> *mut u8 {
    LISTS.with(|lists| {
        // SAFETY: nothing allocates while this reference lives; a listed block is ours to hand
        // out, and its first bytes hold the link written by `push`.
        unsafe {
            let lists = &mut *lists.get();
            let block = lists.heads[class];
            if !block.is_null() {
                lists.heads[class] = (*block).next;
                lists.bytes -= class_size(class);
            }
            block.cast()
        }
    })
}

/// Lists a freed block of `class` if this thread caches and has room; false if it does not.
///
/// # Safety
/// `block` must have come from `System.alloc(class_layout(class))` and be owned by the caller.
unsafe fn push(class: usize, block: *mut u8) -> bool {
    LISTS.with(|lists| {
        // SAFETY: nothing allocates while this reference lives; the block is at least 12 bytes
        // and 16-aligned, so the link fits.
        unsafe {
            let lists = &mut *lists.get();
            let size = class_size(class);
            if !lists.enabled || lists.bytes + size > THREAD_BYTES {
                return false;
            }
            let block = block.cast::<Free>();
            block.write(Free {
                next: lists.heads[class],
            });
            lists.heads[class] = block;
            lists.bytes += size;
            true
        }
    })
}

// SAFETY: small blocks are always obtained from and returned to `System` with their class's
// layout, whichever thread lists them in between; a block is either handed out or listed, never
// both. Everything else is passed to `System` with the caller's layout unchanged.
unsafe impl GlobalAlloc for ThreadCache {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let Some(class) = class_of(layout) else {
            // SAFETY: the caller's contract, passed on.
            return unsafe { System.alloc(layout) };
        };
        let block = pop(class);
        if !block.is_null() {
            return block;
        }
        // SAFETY: a valid non-zero layout.
        unsafe { System.alloc(class_layout(class)) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if class_of(layout).is_none() {
            // SAFETY: the caller's contract; calloc skips zeroing pages that are fresh.
            return unsafe { System.alloc_zeroed(layout) };
        }
        // SAFETY: the caller's contract; a non-null block has at least `layout.size()` bytes.
        unsafe {
            let block = self.alloc(layout);
            if !block.is_null() {
                ptr::write_bytes(block, 0, layout.size());
            }
            block
        }
    }

    unsafe fn dealloc(&self, block: *mut u8, layout: Layout) {
        let Some(class) = class_of(layout) else {
            // SAFETY: the caller's contract, passed on.
            return unsafe { System.dealloc(block, layout) };
        };
        // SAFETY: `alloc` gave out this block for this layout, hence from this class.
        if !unsafe { push(class, block) } {
            // SAFETY: as above, with the layout it was allocated with.
            unsafe { System.dealloc(block, class_layout(class)) }
        }
    }

    unsafe fn realloc(&self, block: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller guarantees `new_size` is valid for this alignment.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        match (class_of(layout), class_of(new_layout)) {
            // The block already has room for the new size.
            (Some(old), Some(new)) if old == new => block,
            // SAFETY: allocated by `System` with `layout`; the caller's contract otherwise.
            (None, None) => unsafe { System.realloc(block, layout, new_size) },
            // SAFETY: both blocks hold at least the bytes copied; the old one is ours to free.
            _ => unsafe {
                let moved = self.alloc(new_layout);
                if !moved.is_null() {
                    ptr::copy_nonoverlapping(block, moved, layout.size().min(new_size));
                    self.dealloc(block, layout);
                }
                moved
            },
        }
    }
}

#[cfg(test)]
#[allow(
    clippy::undocumented_unsafe_blocks,
    reason = "each test frees or resizes only blocks it allocated, with their layouts"
)]
mod tests {
    use super::*;

    fn layout(size: usize) -> Layout {
        Layout::from_size_align(size, 8).unwrap()
    }

    /// The caching slots are global: tests take turns, or the one that fills every slot would
    /// leave the others without one.
    static SLOTS: std::sync::Mutex<()> = std::sync::Mutex::new(());

    /// Each test runs on its own thread: caching is per thread, and ending the thread runs the
    /// exit flush.
    fn on_thread(f: impl FnOnce() + Send + 'static) {
        let _turn = SLOTS.lock().unwrap_or_else(|e| e.into_inner());
        std::thread::spawn(f).join().unwrap();
    }

    #[test]
    fn a_freed_small_block_is_reused_by_the_next_allocation_of_its_class() {
        on_thread(|| unsafe {
            assert!(enable());
            let a = ThreadCache.alloc(layout(40));
            ThreadCache.dealloc(a, layout(40));
            assert_eq!(cached_bytes(), 44);
            // 29..=44 bytes share the class (a 48-byte slot of musl's malloc).
            let b = ThreadCache.alloc(layout(29));
            assert_eq!(a, b);
            assert_eq!(cached_bytes(), 0);
            ThreadCache.dealloc(b, layout(29));
            // 45 bytes do not fit it.
            let c = ThreadCache.alloc(layout(45));
            assert_ne!(a, c);
            ThreadCache.dealloc(c, layout(45));
        });
    }

    #[test]
    fn a_thread_that_did_not_enable_caching_keeps_nothing() {
        on_thread(|| unsafe {
            let a = ThreadCache.alloc(layout(64));
            ThreadCache.dealloc(a, layout(64));
            assert_eq!(cached_bytes(), 0);
        });
    }

    #[test]
    fn flush_empties_the_lists_and_caching_goes_on() {
        on_thread(|| unsafe {
            assert!(enable());
            let sizes = (1..=20).map(|i| i * 16 - 4);
            let blocks: Vec<_> = sizes
                .clone()
                .map(|n| (ThreadCache.alloc(layout(n)), n))
                .collect();
            for (b, n) in blocks {
                ThreadCache.dealloc(b, layout(n));
            }
            assert_eq!(cached_bytes(), sizes.sum::<usize>());
            flush();
            assert_eq!(cached_bytes(), 0);
            let a = ThreadCache.alloc(layout(1));
            ThreadCache.dealloc(a, layout(1));
            assert_eq!(cached_bytes(), 12);
        });
    }

    #[test]
    fn a_thread_keeps_at_most_its_byte_budget() {
        on_thread(|| unsafe {
            assert!(enable());
            let n = 2 * THREAD_BYTES / MAX_BLOCK;
            let blocks: Vec<_> = (0..n)
                .map(|_| ThreadCache.alloc(layout(MAX_BLOCK)))
                .collect();
            for b in blocks {
                ThreadCache.dealloc(b, layout(MAX_BLOCK));
            }
            assert!(cached_bytes() <= THREAD_BYTES);
            assert!(cached_bytes() > THREAD_BYTES - MAX_BLOCK);
        });
    }

    #[test]
    fn at_most_max_threads_cache_at_once_and_an_ended_thread_frees_its_slot() {
        use std::sync::{Arc, Barrier};
        let turn = SLOTS.lock().unwrap_or_else(|e| e.into_inner());
        let n = MAX_THREADS + 8;
        let all_enabled = Arc::new(Barrier::new(n));
        let threads: Vec<_> = (0..n)
            .map(|_| {
                let all_enabled = Arc::clone(&all_enabled);
                std::thread::spawn(move || {
                    let caching = enable();
                    all_enabled.wait();
                    caching
                })
            })
            .collect();
        let caching = threads
            .into_iter()
            .map(|t| t.join().unwrap())
            .filter(|&c| c)
            .count();
        assert_eq!(caching, MAX_THREADS, "threads caching at once");
        drop(turn);
        // All of those threads have ended and given their slots back.
        on_thread(|| assert!(enable()));
    }

    #[test]
    fn large_and_overaligned_blocks_bypass_the_lists() {
        on_thread(|| unsafe {
            assert!(enable());
            let big = layout(MAX_BLOCK + 1);
            let a = ThreadCache.alloc(big);
            ThreadCache.dealloc(a, big);
            let aligned = Layout::from_size_align(64, 64).unwrap();
            let b = ThreadCache.alloc(aligned);
            assert_eq!(b as usize % 64, 0);
            ThreadCache.dealloc(b, aligned);
            assert_eq!(cached_bytes(), 0);
        });
    }

    #[test]
    fn zeroed_blocks_are_zero_even_when_reused() {
        on_thread(|| unsafe {
            assert!(enable());
            let a = ThreadCache.alloc(layout(100));
            ptr::write_bytes(a, 0xAB, 100);
            ThreadCache.dealloc(a, layout(100));
            let b = ThreadCache.alloc_zeroed(layout(100));
            assert_eq!(a, b);
            assert!(std::slice::from_raw_parts(b, 100).iter().all(|&x| x == 0));
            ThreadCache.dealloc(b, layout(100));
        });
    }

    #[test]
    fn realloc_keeps_the_contents_within_a_class_and_across_classes_and_to_large() {
        on_thread(|| unsafe {
            assert!(enable());
            let a = ThreadCache.alloc(layout(20));
            for i in 0..20 {
                *a.add(i) = i as u8;
            }
            // 20 -> 28 bytes: same class, same block.
            let b = ThreadCache.realloc(a, layout(20), 28);
            assert_eq!(a, b);
            let c = ThreadCache.realloc(b, layout(28), 500);
            let d = ThreadCache.realloc(c, layout(500), 5000);
            let e = ThreadCache.realloc(d, layout(5000), 10);
            for i in 0..10 {
                assert_eq!(*e.add(i), i as u8);
            }
            ThreadCache.dealloc(e, layout(10));
        });
    }
}
