//! The allocator as this test binary's global allocator, under the load pattern of the proxy's
//! workers: many threads allocating and freeing small blocks of every size, blocks freed on
//! other threads than the ones that allocated them, vectors growing and shrinking through
//! every class, threads starting and ending. Every block carries a pattern that is checked
//! before it is freed, so a block handed out twice or corrupted by a list link shows up.

use std::sync::mpsc;
use std::thread;

use thread_cache::ThreadCache;

#[global_allocator]
static ALLOCATOR: ThreadCache = ThreadCache;

/// A small deterministic generator, so a failure repeats.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> usize {
        (self.next() % n) as usize
    }
}

/// A block filled with a pattern derived from its tag.
fn filled(tag: u64, len: usize) -> Vec<u8> {
    (0..len).map(|i| (tag as usize ^ i) as u8).collect()
}

fn check(tag: u64, block: &[u8]) {
    for (i, &byte) in block.iter().enumerate() {
        assert_eq!(
            byte,
            (tag as usize ^ i) as u8,
            "block {tag} corrupted at byte {i}"
        );
    }
}

#[test]
fn blocks_survive_many_threads_cross_thread_frees_and_thread_exits() {
    const THREADS: u64 = 8;
    const ROUNDS: usize = 20_000;
    // Each thread sends some of its blocks to the next one, which checks and frees them.
    let (senders, receivers): (Vec<_>, Vec<_>) = (0..THREADS)
        .map(|_| mpsc::channel::<(u64, Vec<u8>)>())
        .unzip();
    let mut handles = Vec::new();
    for (id, receiver) in receivers.into_iter().enumerate() {
        let id = id as u64;
        let next = senders[((id + 1) % THREADS) as usize].clone();
        handles.push(thread::spawn(move || {
            thread_cache::enable();
            let mut rng = XorShift(0x9E37_79B9_7F4A_7C15 ^ (id + 1));
            let mut live: Vec<(u64, Vec<u8>)> = Vec::new();
            let mut received = 0usize;
            for round in 0..ROUNDS {
                let tag = id << 32 | round as u64;
                // Mostly small blocks, some past the cached sizes.
                let len = if rng.below(10) == 0 {
                    1 + rng.below(4096)
                } else {
                    1 + rng.below(1024)
                };
                live.push((tag, filled(tag, len)));
                match rng.below(4) {
                    0 if !live.is_empty() => {
                        let victim = rng.below(live.len() as u64);
                        let (tag, block) = live.swap_remove(victim);
                        check(tag, &block);
                    }
                    1 if !live.is_empty() => {
                        let victim = rng.below(live.len() as u64);
                        let item = live.swap_remove(victim);
                        next.send(item).unwrap();
                    }
                    2 if !live.is_empty() => {
                        // Grow or shrink in place or across classes.
                        let victim = rng.below(live.len() as u64);
                        let (tag, block) = &mut live[victim];
                        check(*tag, block);
                        let len = 1 + rng.below(2048);
                        *block = filled(*tag, 0);
                        block.reserve(len);
                        block.extend((0..len).map(|i| (*tag as usize ^ i) as u8));
                        block.shrink_to_fit();
                    }
                    _ => {}
                }
                while let Ok((tag, block)) = receiver.try_recv() {
                    check(tag, &block);
                    received += 1;
                }
                if live.len() > 64 {
                    let (tag, block) = live.swap_remove(0);
                    check(tag, &block);
                }
            }
            for (tag, block) in live {
                check(tag, &block);
            }
            drop(next);
            // Whatever arrives after this thread stops looking is checked by the test thread.
            (received, receiver)
        }));
    }
    drop(senders);
    let mut received = 0;
    let mut leftovers = Vec::new();
    for handle in handles {
        let (n, receiver) = handle.join().unwrap();
        received += n;
        leftovers.push(receiver);
    }
    for receiver in leftovers {
        for (tag, block) in receiver.iter() {
            check(tag, &block);
            received += 1;
        }
    }
    // About a quarter of the rounds send a block on; all of them arrived intact.
    assert!(
        received > (THREADS as usize * ROUNDS) / 8,
        "only {received} blocks passed on"
    );
}

#[test]
fn threads_that_come_and_go_give_their_blocks_back() {
    // Each short-lived thread fills its lists and ends; the exit flush returns the blocks, so
    // the next threads reuse the system allocator's memory instead of growing it.
    for generation in 0..50u64 {
        let workers: Vec<_> = (0..4u64)
            .map(|i| {
                thread::spawn(move || {
                    thread_cache::enable();
                    let tag = generation << 8 | i;
                    let blocks: Vec<_> = (1..=64).map(|len| filled(tag, len * 16)).collect();
                    for block in &blocks {
                        check(tag, block);
                    }
                    drop(blocks);
                    assert!(thread_cache::cached_bytes() > 0);
                })
            })
            .collect();
        for worker in workers {
            worker.join().unwrap();
        }
    }
}

#[test]
fn flush_then_reuse_on_a_long_lived_thread() {
    thread::spawn(|| {
        thread_cache::enable();
        for round in 0..1000u64 {
            let blocks: Vec<_> = (0..32)
                .map(|i| filled(round ^ i, 8 + i as usize * 24))
                .collect();
            for (i, block) in blocks.iter().enumerate() {
                check(round ^ i as u64, block);
            }
            drop(blocks);
            if round % 100 == 0 {
                thread_cache::flush();
                assert_eq!(thread_cache::cached_bytes(), 0);
            }
        }
        assert!(thread_cache::cached_bytes() <= thread_cache::THREAD_BYTES);
    })
    .join()
    .unwrap();
}
