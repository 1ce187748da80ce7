//! `memcpy` and `memmove` for the static x86_64 builds.
//!
//! musl's x86_64 `memcpy` copies every size with `rep movsq`, after aligning the destination
//! and before the tail with one `movsb` per byte. String instructions take tens of cycles to
//! start, and a proxied request makes about 230 copies, most of them moves of 16 bytes to 1 KiB
//! (structs of ureq, ureq-proto and http passed by value, TLS records): perf put 17 % of the
//! static build's CPU per request in `memcpy`, where the glibc build spends under 2 %. The
//! versions here (`x86_64.s`) copy up to 64 bytes with overlapping register and SSE2 moves
//! and up to 2 KiB with a 64-byte SSE2 loop; only larger copies use `rep movsq`.
//!
//! On x86_64 musl they replace the C library's symbols: a definition in the executable keeps
//! the linker from taking `memcpy.o` and `memmove.o` out of `libc.a`. `memmove` has to come
//! along, because musl's `memmove` jumps into its `memcpy` (and would drag in a second
//! definition). Elsewhere nothing is replaced: glibc picks a tuned version for the CPU at run
//! time, and musl's aarch64 versions are already Arm's optimized routines. On every x86_64
//! target the functions exist under their own names, so the tests check them on any host.

#![no_std]

#[cfg(target_arch = "x86_64")]
core::arch::global_asm!(include_str!("x86_64.s"));

#[cfg(all(target_arch = "x86_64", target_env = "musl"))]
core::arch::global_asm!(
    ".globl memcpy",
    ".type memcpy, @function",
    ".set memcpy, fast_memcpy",
    ".globl memmove",
    ".type memmove, @function",
    ".set memmove, fast_memmove",
);

#[cfg(target_arch = "x86_64")]
unsafe extern "C" {
    /// `memcpy(3)`: copies `n` bytes from `src` to `dst` and returns `dst`.
    ///
    /// # Safety
    /// `src` must be valid for reads and `dst` for writes of `n` bytes, and the two ranges must
    /// not overlap.
    pub fn fast_memcpy(dst: *mut u8, src: *const u8, n: usize) -> *mut u8;

    /// `memmove(3)`: copies `n` bytes from `src` to `dst`, which may overlap, and returns `dst`.
    ///
    /// # Safety
    /// `src` must be valid for reads and `dst` for writes of `n` bytes.
    pub fn fast_memmove(dst: *mut u8, src: *const u8, n: usize) -> *mut u8;
}
