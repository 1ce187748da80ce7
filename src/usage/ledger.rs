//! Usage totals in memory: by UTC day × model × backend × key name, and requests and tokens per
//! hour for the last day (the status page's chart). One mutex, held for a map lookup per
//! request; readers take copies.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use super::Tokens;
use super::day;

/// Rows one day may have; past it, further models are counted as [`OTHER`]. The model is the
/// client's id, and behind a catch-all entry a client may send any number of them.
const MAX_ROWS_PER_DAY: usize = 1000;
pub const OTHER: &str = "(other)";
/// Hours the chart shows.
pub const HOURS: usize = 24;
const HOUR: u64 = 3600;

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Row {
    pub day: u32,
    /// The model id as clients sent it.
    pub model: String,
    /// The backend's `name`.
    pub backend: String,
    /// The access key's name (`-` without access keys).
    pub key: String,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub requests: u64,
    /// Requests whose backend reported no usage: their tokens are unknown, not zero.
    pub unknown: u64,
    pub prompt: u64,
    pub completion: u64,
    pub reasoning: u64,
    pub cached: u64,
}

impl Counts {
    pub fn add(&mut self, tokens: Option<Tokens>) {
        self.requests += 1;
        match tokens {
            Some(t) => {
                self.prompt += t.prompt;
                self.completion += t.completion;
                self.reasoning += t.reasoning;
                self.cached += t.cached;
            }
            None => self.unknown += 1,
        }
    }

    pub fn merge(&mut self, other: &Counts) {
        self.requests += other.requests;
        self.unknown += other.unknown;
        self.prompt += other.prompt;
        self.completion += other.completion;
        self.reasoning += other.reasoning;
        self.cached += other.cached;
    }

    pub fn tokens(&self) -> u64 {
        self.prompt + self.completion
    }
}

/// Requests and tokens in the hour starting at `start` (Unix seconds).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Hour {
    pub start: u64,
    pub requests: u64,
    pub tokens: u64,
}

/// Every row and the kept hours, as the store writes them.
pub type Snapshot = (Vec<(Row, Counts)>, Vec<Hour>);

#[derive(Default)]
pub struct Ledger {
    book: Mutex<Book>,
    /// Something was recorded since the store last wrote.
    changed: AtomicBool,
}

#[derive(Default)]
struct Book {
    rows: BTreeMap<Row, Counts>,
    hours: VecDeque<Hour>,
}

impl Ledger {
    /// A ledger holding what a store kept.
    pub fn with(rows: BTreeMap<Row, Counts>, hours: Vec<Hour>) -> Ledger {
        Ledger {
            book: Mutex::new(Book {
                rows,
                hours: hours.into(),
            }),
            changed: AtomicBool::new(false),
        }
    }

    /// Counts one request at `unix` seconds.
    pub fn record(&self, unix: u64, model: &str, backend: &str, key: &str, tokens: Option<Tokens>) {
        let day = day::of(unix);
        let mut book = self.lock();
        let book = &mut *book;
        let found = book
            .rows
            .iter_mut()
            .rev()
            .take_while(|(row, _)| row.day >= day)
            .find(|(row, _)| {
                row.day == day && row.model == model && row.backend == backend && row.key == key
            });
        match found {
            Some((_, counts)) => counts.add(tokens),
            None => {
                let today = book.rows.range(Row::first_of(day)..).count();
                let model = if today < MAX_ROWS_PER_DAY {
                    model
                } else {
                    OTHER
                };
                let row = Row {
                    day,
                    model: model.to_owned(),
                    backend: backend.to_owned(),
                    key: key.to_owned(),
                };
                book.rows.entry(row).or_default().add(tokens);
            }
        }
        let start = unix - unix % HOUR;
        if book.hours.back().is_none_or(|h| h.start != start) {
            book.hours.push_back(Hour {
                start,
                ..Hour::default()
            });
            while book.hours.len() > HOURS {
                book.hours.pop_front();
            }
        }
        if let Some(hour) = book.hours.back_mut() {
            hour.requests += 1;
            hour.tokens += tokens.map_or(0, |t| t.total());
        }
        self.changed.store(true, Ordering::Release);
    }

    /// Tokens `key` used on `day`, over every model and backend.
    pub fn tokens_of_key(&self, key: &str, day: u32) -> u64 {
        self.lock()
            .rows
            .range(Row::first_of(day)..Row::first_of(day + 1))
            .filter(|(row, _)| row.key == key)
            .map(|(_, c)| c.tokens())
            .sum()
    }

    /// The rows of `first_day` and later.
    pub fn rows_since(&self, first_day: u32) -> Vec<(Row, Counts)> {
        self.lock()
            .rows
            .range(Row::first_of(first_day)..)
            .map(|(r, c)| (r.clone(), *c))
            .collect()
    }

    /// The last [`HOURS`] hours up to the one `unix` is in, oldest first, empty ones included.
    pub fn last_hours(&self, unix: u64) -> Vec<Hour> {
        let now = unix - unix % HOUR;
        let book = self.lock();
        (0..HOURS as u64)
            .rev()
            .map(|back| now.saturating_sub(back * HOUR))
            .map(|start| {
                book.hours
                    .iter()
                    .find(|h| h.start == start)
                    .copied()
                    .unwrap_or(Hour {
                        start,
                        ..Hour::default()
                    })
            })
            .collect()
    }

    /// Everything, for the store, and whether anything changed since the last call.
    pub fn take_for_store(&self, oldest_day: u32) -> Option<Snapshot> {
        if !self.changed.swap(false, Ordering::AcqRel) {
            return None;
        }
        let mut book = self.lock();
        // Days past the keeping period go when the file is written.
        book.rows = book.rows.split_off(&Row::first_of(oldest_day));
        let rows = book.rows.iter().map(|(r, c)| (r.clone(), *c)).collect();
        Some((rows, book.hours.iter().copied().collect()))
    }

    /// Marks the ledger changed (a store write failed and must be tried again).
    pub fn mark_changed(&self) {
        self.changed.store(true, Ordering::Release);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Book> {
        // Counting continues after a panic elsewhere: the book is only ever added to.
        self.book.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Rows summed by what `group` makes of each, in the order of that text. (A sorted vector,
/// not a map: the groups are few, and one instance of this serves every table.)
pub fn sum_by(rows: &[(Row, Counts)], group: &dyn Fn(&Row) -> String) -> Vec<(String, Counts)> {
    let mut sums: Vec<(String, Counts)> = Vec::new();
    for (row, counts) in rows {
        let name = group(row);
        match sums.binary_search_by(|(n, _)| n.as_str().cmp(&name)) {
            Ok(i) => sums[i].1.merge(counts),
            Err(i) => sums.insert(i, (name, *counts)),
        }
    }
    sums
}

impl Row {
    /// Sorts before every row of `day`.
    fn first_of(day: u32) -> Row {
        Row {
            day,
            model: String::new(),
            backend: String::new(),
            key: String::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: u64 = 20_424 * day::SECONDS;

    fn tokens(prompt: u64, completion: u64) -> Option<Tokens> {
        Some(Tokens {
            prompt,
            completion,
            ..Tokens::default()
        })
    }

    #[test]
    fn counts_by_day_model_backend_and_key() {
        let ledger = Ledger::default();
        ledger.record(DAY + 10, "m", "b", "alice", tokens(3, 4));
        ledger.record(DAY + 20, "m", "b", "alice", tokens(1, 1));
        ledger.record(DAY + 30, "m", "b", "bob", None);
        ledger.record(DAY + day::SECONDS, "m", "b", "alice", tokens(5, 5));
        let rows = ledger.rows_since(0);
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[0].0.key, "alice");
        assert_eq!(
            rows[0].1,
            Counts {
                requests: 2,
                prompt: 4,
                completion: 5,
                ..Counts::default()
            }
        );
        assert_eq!((rows[1].1.requests, rows[1].1.unknown), (1, 1));
        assert_eq!(ledger.tokens_of_key("alice", 20_424), 9);
        assert_eq!(ledger.tokens_of_key("alice", 20_425), 10);
        assert_eq!(ledger.tokens_of_key("bob", 20_424), 0);
        assert_eq!(ledger.rows_since(20_425).len(), 1);
    }

    #[test]
    fn sums_by_any_field_in_name_order() {
        let ledger = Ledger::default();
        ledger.record(DAY, "m2", "b", "bob", tokens(1, 1));
        ledger.record(DAY, "m1", "b", "alice", tokens(2, 2));
        ledger.record(DAY, "m2", "b", "alice", tokens(3, 3));
        let rows = ledger.rows_since(0);
        let by_key = sum_by(&rows, &|r| r.key.clone());
        let names: Vec<(&str, u64)> = by_key
            .iter()
            .map(|(n, c)| (n.as_str(), c.tokens()))
            .collect();
        assert_eq!(names, [("alice", 10), ("bob", 2)]);
        assert_eq!(sum_by(&rows, &|r| r.backend.clone()).len(), 1);
    }

    #[test]
    fn models_past_the_daily_row_cap_are_counted_as_other() {
        let ledger = Ledger::default();
        for i in 0..MAX_ROWS_PER_DAY + 5 {
            ledger.record(DAY, &format!("model-{i}"), "b", "-", tokens(1, 0));
        }
        let rows = ledger.rows_since(0);
        assert_eq!(rows.len(), MAX_ROWS_PER_DAY + 1);
        let other = rows.iter().find(|(r, _)| r.model == OTHER).unwrap();
        assert_eq!(other.1.requests, 5);
    }

    #[test]
    fn hours_cover_the_last_day_and_old_days_are_dropped_on_store() {
        let ledger = Ledger::default();
        ledger.record(DAY + 100, "m", "b", "-", tokens(10, 5));
        ledger.record(DAY + 3 * HOUR, "m", "b", "-", tokens(1, 1));
        let hours = ledger.last_hours(DAY + 3 * HOUR + 5);
        assert_eq!(hours.len(), HOURS);
        assert_eq!(hours[HOURS - 1].tokens, 2);
        assert_eq!(hours[HOURS - 4].tokens, 15);
        assert_eq!(hours.iter().map(|h| h.requests).sum::<u64>(), 2);
        assert!(ledger.take_for_store(0).is_some());
        assert!(ledger.take_for_store(0).is_none(), "nothing changed since");
        ledger.record(DAY + day::SECONDS, "m", "b", "-", None);
        let (rows, _) = ledger.take_for_store(20_425).unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(ledger.rows_since(0).len(), 1);
    }
}
