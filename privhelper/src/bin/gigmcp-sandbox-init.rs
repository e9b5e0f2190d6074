//! The first process in a sandbox: see `privhelper::init`.
fn main() {
    privhelper::init::run(std::env::args_os())
}
