//! The first process in a sandbox: see the `sandbox_init` library for the steps and their order.
fn main() {
    sandbox_init::run(std::env::args_os())
}
