//! The kernel side, seen from userspace: which hooks to attach on this
//! kernel (`plan`), the programs' configuration from BTF (`config`), and
//! loading/attaching (`loader`, the only aya user besides the reader and
//! `seed`, the kernel half of the attach-time snapshot).

pub mod config;
pub mod loader;
pub mod plan;
pub mod ringbuf;
pub mod seed;
