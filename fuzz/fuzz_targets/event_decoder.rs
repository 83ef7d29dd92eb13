//! Ring-buffer records through the ABI decoder, the trace writer and reader,
//! and the analysis, as `refscope record` handles them.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| refscope_core::fuzzing::event_decoder(data));
