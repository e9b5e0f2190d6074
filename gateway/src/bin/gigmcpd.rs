fn main() {
    std::process::exit(gateway::daemon::main());
}
