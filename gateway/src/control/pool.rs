//! What the interface needs of the server pool, object-safe so that `Control` is not generic
//! over the launcher (the daemon's sandboxes, a test's plain processes).

use std::future::Future;
use std::pin::Pin;

use crate::mcp::servers::{Launcher, ServerPool};
use crate::mcp::stdio::CallError;

type BoxFut<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

pub trait PoolControl: Send + Sync {
    fn start<'a>(&'a self, name: &'a str) -> BoxFut<'a, Result<(), CallError>>;
    /// Whether it was running.
    fn stop<'a>(&'a self, name: &'a str) -> BoxFut<'a, bool>;
    fn logs(&self, name: &str, lines: usize) -> Vec<String>;
}

impl<L: Launcher> PoolControl for ServerPool<L> {
    fn start<'a>(&'a self, name: &'a str) -> BoxFut<'a, Result<(), CallError>> {
        Box::pin(self.start_now(name))
    }

    fn stop<'a>(&'a self, name: &'a str) -> BoxFut<'a, bool> {
        Box::pin(ServerPool::stop(self, name))
    }

    fn logs(&self, name: &str, lines: usize) -> Vec<String> {
        ServerPool::logs(self).tail(name, lines)
    }
}
