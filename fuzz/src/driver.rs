//! The fixed-seed driver: replays a target's committed corpus, then feeds it a budget of
//! pseudo-random inputs derived from one seed, so every CI run tries the same cases and a
//! failure names the exact input to replay.
//!
//! A hand-written splitmix64 rather than a `rand` dependency: the driver needs reproducible
//! bytes, nothing statistical, and the generator is four lines.

use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::path::{Path, PathBuf};

use crate::{Target, run_bytes};

/// The seed CI uses (any fixed value; changing it changes which cases CI tries).
pub const CI_SEED: u64 = 0x6769_676d_6370_2121;

/// Raw inputs are at most this long: every target's structure fits in far less.
const MAX_INPUT: usize = 4096;

/// The case budget and seed for one run: `GIGMCP_FUZZ_CASES` and `GIGMCP_FUZZ_SEED` override
/// CI's fixed values (to fuzz longer by hand).
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    pub cases: u32,
    pub seed: u64,
}

impl Budget {
    pub fn for_target(target: &Target) -> Self {
        let env = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<u64>().ok());
        Self {
            cases: env("GIGMCP_FUZZ_CASES").map_or(target.ci_cases, |c| c as u32),
            seed: env("GIGMCP_FUZZ_SEED").unwrap_or(CI_SEED),
        }
    }
}

fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Case `case` of `seed` for `target`: the same bytes on every machine.
pub fn input(target: &Target, seed: u64, case: u32) -> Vec<u8> {
    let name_hash = target.name.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    let mut state = seed ^ name_hash ^ (u64::from(case) << 32);
    // Mostly short inputs (most structure is decided by the first bytes), some long.
    let len = match splitmix(&mut state) % 8 {
        0 => (splitmix(&mut state) as usize) % MAX_INPUT,
        _ => (splitmix(&mut state) as usize) % 512,
    };
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        out.extend_from_slice(&splitmix(&mut state).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// The committed corpus of `target`: seeds and regressions (each file one raw input).
pub fn corpus_dir(target: &Target) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target.name)
}

fn corpus(target: &Target) -> Vec<(PathBuf, Vec<u8>)> {
    let Ok(dir) = std::fs::read_dir(corpus_dir(target)) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = dir.filter_map(|e| Some(e.ok()?.path())).collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let bytes =
                std::fs::read(&p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()));
            (p, bytes)
        })
        .collect()
}

/// Runs one input; on a failure says how to replay it (the input is saved under `target/`,
/// to be committed to the corpus with the fix) and fails with the property's message.
fn run_case(target: &Target, what: &str, data: &[u8]) {
    if let Err(panic) = catch_unwind(AssertUnwindSafe(|| run_bytes(target, data))) {
        let saved = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../target/fuzz-failures")
            .join(format!("{}-{}", target.name, what.replace('/', "_")));
        let _ = std::fs::create_dir_all(saved.parent().expect("has a parent"));
        let _ = std::fs::write(&saved, data);
        eprintln!(
            "fuzz target {}: {what} broke the property; input saved as {} (copy it into {} \
             with the fix)",
            target.name,
            saved.display(),
            corpus_dir(target).display()
        );
        resume_unwind(panic);
    }
}

/// Replays the corpus, then runs the budget; returns how many inputs ran.
pub fn drive(target: &Target) -> usize {
    let corpus = corpus(target);
    for (path, data) in &corpus {
        let name = path.file_name().map_or_else(
            || "corpus".into(),
            |n| format!("corpus/{}", n.to_string_lossy()),
        );
        run_case(target, &name, data);
    }
    let budget = Budget::for_target(target);
    for case in 0..budget.cases {
        let data = input(target, budget.seed, case);
        run_case(
            target,
            &format!("seed-{:#x}-case-{case}", budget.seed),
            &data,
        );
    }
    corpus.len() + budget.cases as usize
}
