//! refscope's userspace: everything but the command-line entry point, so
//! integration tests and benchmarks can use it. The analysis itself lives
//! in the `refscope-core` crate (pure, no aya).

pub mod audit;
pub mod bench_floor;
pub mod btf;
pub mod cli;
pub mod doctor;
pub mod export;
pub mod hash;
pub mod kernel;
pub mod live;
pub mod output;
pub mod pagetable;
pub mod pipeline;
pub mod probe;
pub mod record;
pub mod recorder;
pub mod report;
pub mod session;
pub mod snapshot;
