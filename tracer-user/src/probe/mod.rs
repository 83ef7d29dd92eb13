//! The kernel side, seen from userspace: which hooks to attach on this
//! kernel (`plan`), the programs' configuration from BTF (`config`), and
//! loading/attaching (`loader`, the only aya user besides the reader).

pub mod config;
pub mod loader;
pub mod plan;
pub mod ringbuf;
