//! The AFL++ entry point: `gigmcp-fuzz-afl TARGET` runs one fuzz target on the inputs AFL++
//! feeds it (persistent mode), the same bytes the fixed-seed driver and the corpus use.

fn main() {
    let name = std::env::args().nth(1).unwrap_or_default();
    let Some(target) = gigmcp_fuzz::target(&name) else {
        let names: Vec<&str> = gigmcp_fuzz::TARGETS.iter().map(|t| t.name).collect();
        eprintln!(
            "usage: gigmcp-fuzz-afl TARGET (one of {})",
            names.join(", ")
        );
        std::process::exit(2);
    };
    afl::fuzz!(|data: &[u8]| gigmcp_fuzz::run_bytes(target, data));
}
