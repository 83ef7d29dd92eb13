//! refscope's analysis core.
//!
//! Everything here is pure: it takes events and time as arguments, never
//! touches the kernel, files or the clock, and never imports aya. The live
//! daemon and `refscope report` drive the same code, so a finding is the
//! same live and offline.

pub mod abi;
pub mod analysis;
pub mod event;
#[doc(hidden)]
pub mod fuzzing;
pub mod model;
pub mod replay;
pub mod trace;
