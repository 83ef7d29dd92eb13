//! The programs, one file per group of hooks; each is checked against the
//! ABI's hook table where it is declared (`check!` in main.rs).

mod device;
mod gup;
mod map;
mod mm;
