//! What we ask of the system allocator beneath the caches: to keep fewer arenas, and to hand
//! free memory back after a burst. Both matter for glibc only, which keeps what its per-thread
//! arenas freed: 256 streams on 256 threads left the glibc build 14 MiB above idle for good.
//! With two arenas and a trim once the burst's workers have ended it comes back to within 3-4 MiB
//! of idle (live connections' buffers, the arenas' fragments, glibc's cache of thread stacks).
//! musl's allocator has one heap and unmaps freed groups itself; there both do nothing.

/// Caps the number of glibc malloc arenas at `arenas` (glibc's default is eight per core). Every
/// arena keeps its own free memory and fragments; with the small blocks served from the
/// threads' caches, the few larger ones contend little for fewer arenas (no throughput change at
/// 32 clients with two). Call it before starting threads: arenas are created on demand.
pub fn limit_arenas(arenas: u16) {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        /// `M_ARENA_MAX` from glibc's malloc.h.
        const M_ARENA_MAX: std::ffi::c_int = -8;
        unsafe extern "C" {
            fn mallopt(param: std::ffi::c_int, value: std::ffi::c_int) -> std::ffi::c_int;
        }
        // SAFETY: mallopt takes no pointers; glibc takes its own lock to change the setting.
        unsafe {
            mallopt(M_ARENA_MAX, std::ffi::c_int::from(arenas));
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    let _ = arenas;
}

/// Hands the free pages of every glibc arena back to the kernel (`malloc_trim`). It walks every
/// arena under its lock: call it once a burst is over, not per request.
pub fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        unsafe extern "C" {
            fn malloc_trim(pad: usize) -> std::ffi::c_int;
        }
        // SAFETY: malloc_trim takes no pointers and may be called from any thread at any time
        // (it takes each arena's lock in turn).
        unsafe {
            malloc_trim(0);
        }
    }
}
