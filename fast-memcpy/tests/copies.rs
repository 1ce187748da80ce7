//! Every size class and its boundaries, every relative alignment, overlap in both directions,
//! and guard bytes around the destination: the copies must be exact and touch nothing else.

#![cfg(target_arch = "x86_64")]

use fast_memcpy::{fast_memcpy, fast_memmove};

/// The boundaries of each path in x86_64.s (16, 32, 64, 2048) and a few sizes on each side,
/// plus one copy large enough for many rep movsq rounds.
fn sizes() -> Vec<usize> {
    let mut sizes: Vec<usize> = (0..=200).collect();
    for edge in [256, 511, 512, 1023, 1024, 2048, 4096] {
        sizes.extend(edge - 3..=edge + 3);
    }
    sizes.push(70_001);
    sizes
}

/// Distinct bytes that never repeat with a period dividing a block, so a copy from the wrong
/// offset shows.
fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 8) as u8)
        .collect()
}

const GUARD: usize = 64;

#[test]
fn memcpy_copies_exactly_n_bytes_at_every_size_and_alignment() {
    for n in sizes() {
        let src_buf = pattern(n + 16, 7);
        for src_off in 0..16 {
            for dst_off in 0..16 {
                let mut dst_buf = vec![0xA5u8; GUARD + dst_off + n + GUARD];
                let src = &src_buf[src_off..src_off + n];
                let dst_start = GUARD + dst_off;
                // SAFETY: both ranges are in bounds of their own vectors, which do not overlap.
                let ret =
                    unsafe { fast_memcpy(dst_buf[dst_start..].as_mut_ptr(), src.as_ptr(), n) };
                assert_eq!(ret, dst_buf[dst_start..].as_mut_ptr(), "n={n}: returns dst");
                assert_eq!(
                    &dst_buf[dst_start..dst_start + n],
                    src,
                    "n={n} src+{src_off} dst+{dst_off}"
                );
                assert!(
                    dst_buf[..dst_start].iter().all(|&b| b == 0xA5)
                        && dst_buf[dst_start + n..].iter().all(|&b| b == 0xA5),
                    "n={n} src+{src_off} dst+{dst_off}: wrote outside the destination"
                );
            }
        }
    }
}

/// What memmove must leave: the buffer with `n` bytes from `from` written at `to`, computed
/// one byte at a time from a copy of the original. Not `copy_from_slice`: under musl that is the
/// memcpy being tested (`black_box` keeps the optimizer from turning the loop into one too).
#[allow(clippy::manual_memcpy)]
fn moved(buf: &[u8], from: usize, to: usize, n: usize) -> Vec<u8> {
    let original = buf.to_vec();
    let mut expected = buf.to_vec();
    for i in 0..n {
        expected[to + i] = std::hint::black_box(original[from + i]);
    }
    expected
}

#[test]
fn memmove_handles_overlap_in_both_directions() {
    for n in sizes().into_iter().filter(|&n| n <= 4100) {
        // Distances from 0 to 130 bytes either way cover overlap within a block, across one
        // and across several, with every alignment mod 16.
        for distance in 0..=130usize {
            for forwards in [true, false] {
                let base = 3;
                let (from, to) = if forwards {
                    (base + distance, base)
                } else {
                    (base, base + distance)
                };
                let mut buf = pattern(base + distance + n + GUARD, 99);
                let expected = moved(&buf, from, to, n);
                let ptr = buf.as_mut_ptr();
                // SAFETY: from + n and to + n are within buf's length.
                let ret = unsafe { fast_memmove(ptr.add(to), ptr.add(from), n) };
                assert_eq!(ret, ptr.wrapping_add(to), "n={n}: returns dst");
                assert!(
                    buf == expected,
                    "n={n} distance={distance} forwards={forwards}: wrong result"
                );
            }
        }
    }
}

#[test]
fn memmove_of_disjoint_buffers_is_a_copy() {
    for n in sizes() {
        let src = pattern(n, 3);
        let mut dst = vec![0u8; n + GUARD];
        // SAFETY: both ranges are in bounds of their own vectors.
        unsafe { fast_memmove(dst.as_mut_ptr(), src.as_ptr(), n) };
        assert_eq!(&dst[..n], &src[..], "n={n}");
        assert!(
            dst[n..].iter().all(|&b| b == 0),
            "n={n}: wrote past the end"
        );
    }
}

/// In the static x86_64 build the C library's names must be these functions: a change in
/// link order that brought musl's back would otherwise go unnoticed.
#[cfg(target_env = "musl")]
#[test]
fn the_c_library_names_resolve_to_these_functions() {
    unsafe extern "C" {
        fn memcpy(dst: *mut u8, src: *const u8, n: usize) -> *mut u8;
        fn memmove(dst: *mut u8, src: *const u8, n: usize) -> *mut u8;
    }
    assert_eq!(memcpy as *const (), fast_memcpy as *const ());
    assert_eq!(memmove as *const (), fast_memmove as *const ());
}
