//! Write a synthetic but realistic refscope trace, for trying the live view
//! without a DAX host:
//!
//! ```sh
//! cargo run -p refscope --example synth_trace -- /tmp/synth.jsonl [PAGES]
//! refscope live --replay /tmp/synth.jsonl --speed 2
//! ```
//!
//! The scenario (`refscope::live::synth`): `fio` maps PAGES pages of an
//! FS-DAX file and pins some for O_DIRECT, a few events are lost, a process
//! leaks a long-term pin, and the namespace is destroyed while `stale_map`
//! still maps one page. PAGES defaults to 4096; use 1000000 to load-test the
//! pages table.

use std::{fs::File, io::BufWriter, process::ExitCode};

use refscope::live::synth::Synth;

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let Some(path) = args.next() else {
        eprintln!("usage: synth_trace OUTPUT.jsonl [PAGES]");
        return ExitCode::FAILURE;
    };
    let mut synth = Synth::default();
    if let Some(n) = args.next() {
        match n.parse() {
            Ok(n) => synth.pages = n,
            Err(e) => {
                eprintln!("synth_trace: PAGES `{n}`: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    let written = File::create(&path).and_then(|f| synth.write(BufWriter::new(f)));
    match written.and_then(|w| w.into_inner().map_err(|e| e.into_error())) {
        Ok(_) => {
            eprintln!(
                "synth_trace: wrote {path}: {} pages; the bad page is {:#x}",
                synth.pages,
                synth.bad_pfn()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("synth_trace: {path}: {e}");
            ExitCode::FAILURE
        }
    }
}
