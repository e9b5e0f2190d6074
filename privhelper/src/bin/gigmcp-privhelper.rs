fn main() {
    std::process::exit(privhelper::helper::main::main());
}
