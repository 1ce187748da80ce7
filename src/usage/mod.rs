//! Usage accounting: what each request used ([`Tokens`], from the backend's `usage`), counted
//! by UTC day × model × backend × key name ([`Ledger`]), kept in a small file next to the
//! certificates ([`store`]), and the calendar arithmetic it needs ([`day`]). Nothing here knows
//! about requests or configs; the application records into it and the status page, the metrics
//! and `trae-proxy usage` read from it.

pub mod day;
pub mod ledger;
pub mod store;
mod tokens;

pub use ledger::{Counts, Ledger, Row, sum_by};
pub use tokens::Tokens;
