//! Every fuzz target under the fixed-seed driver: its committed corpus (seeds and
//! regressions), then its CI case budget (`GIGMCP_FUZZ_CASES` / `GIGMCP_FUZZ_SEED` to fuzz
//! longer or elsewhere by hand). One test per target, so a failure names the parser.

use gigmcp_fuzz::{driver, target};

fn run(name: &str) {
    let t = target(name).expect("a target of that name");
    let started = std::time::Instant::now();
    let n = driver::drive(t);
    eprintln!(
        "fuzz {name}: {n} inputs in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

#[test]
fn dns_answers_are_well_formed_and_name_only_the_proxy_for_allowlisted_names() {
    run("dns");
}

#[test]
fn jsonrpc_classifies_as_the_spec_says_and_round_trips() {
    run("jsonrpc");
}

#[test]
fn framing_refuses_lines_over_the_cap_and_relays_the_rest_in_order() {
    run("framing");
}

#[test]
fn http_requests_that_pass_the_checks_name_the_sni_and_cannot_smuggle() {
    run("http_checks");
}

#[test]
fn real_values_appear_only_in_their_declared_place_to_bound_hosts() {
    run("rewriter");
}

#[test]
fn manifests_the_checks_accept_pass_the_lint_and_the_proxy() {
    run("manifest");
}

#[test]
fn registry_entries_accepted_keep_the_entry_rules_and_round_trip() {
    run("registry_entry");
}

#[test]
fn init_args_round_trip_and_hostile_argv_is_refused() {
    run("init_args");
}

#[test]
fn layers_unpack_beneath_their_root_or_are_refused_leaving_nothing() {
    run("unpack");
}

#[test]
fn canonical_json_matches_its_definition_and_refuses_repeated_keys() {
    run("cjson");
}

#[test]
fn mutated_tuf_metadata_is_refused_or_means_exactly_what_was_signed() {
    run("tuf_metadata");
}

#[test]
fn every_target_has_a_test_here() {
    let source = include_str!("properties.rs");
    for t in gigmcp_fuzz::TARGETS {
        assert!(
            source.contains(&format!("run(\"{}\")", t.name)),
            "{} untested",
            t.name
        );
    }
}
