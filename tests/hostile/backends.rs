//! Backends that hang, and more streams than there are workers.
