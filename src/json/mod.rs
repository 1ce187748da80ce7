//! Reading and rewriting JSON bodies without building them as values: a request's or a reply's
//! top-level fields ([`Fields`]), found by a scan that also checks the text is JSON ([`scan`]).

mod fields;
mod scan;

pub use fields::Fields;
pub use scan::Invalid;
pub(crate) use scan::max_depth;
