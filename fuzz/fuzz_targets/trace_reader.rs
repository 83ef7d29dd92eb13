//! A trace file (JSON Lines) through the reader and the analysis, as
//! `refscope report`, `export` and `live --replay` read it.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| refscope_core::fuzzing::trace_reader(data));
