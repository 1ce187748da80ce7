//! The subcommands other than `serve`: each a small program over the config file and the
//! certificate folder. They print for people (one line per item or check) and return an
//! [`Error`](crate::error::Error) that `main` turns into the exit status (0 ok, 1 failure,
//! 2 usage).

pub mod api;
pub mod certs;
pub mod check;
pub mod doctor;
pub mod domain;
pub mod mock;
pub mod reload;
pub mod usage;
