//! Intentionally empty: see Cargo.toml (`[lib]`). The programs are in main.rs.
#![no_std]
