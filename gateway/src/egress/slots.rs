//! Connection slots: what bounds the sockets one sandbox can make the proxy hold, and the sockets
//! all sandboxes together can make the daemon hold (noisy neighbours).
//!
//! Every socket the egress proxy keeps open for a sandbox takes one slot from that sandbox's pool
//! (client connections on the proxy port and on transparent 443 together; DNS over TCP; upstream
//! connections) *and* one from the gateway-wide pool, which is the daemon's fd limit minus the
//! headroom kept for the MCP front, the store and the bus. The sandbox's own pool is asked first,
//! so a sandbox past its cap never touches the gateway-wide pool another sandbox needs.
//! A slot is returned when the socket is dropped (the [`Slot`] lives as long as the socket).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Which of a sandbox's pools a socket draws from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pool {
    /// Client connections on the proxy port and on transparent 443.
    Clients,
    /// DNS over TCP (transparent mode).
    Dns,
    /// Connections the proxy opens to upstreams for this sandbox.
    Upstream,
}

/// Why no slot was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exhausted {
    /// This sandbox's own cap for that pool.
    Sandbox,
    /// The gateway-wide bound (every sandbox's sockets together).
    Gateway,
}

/// The gateway-wide pool, shared by every sandbox's [`SandboxSlots`].
#[derive(Debug, Clone)]
pub struct GatewaySlots(Arc<Semaphore>);

impl GatewaySlots {
    pub fn new(bound: usize) -> Self {
        Self(Arc::new(Semaphore::new(bound)))
    }

    /// Slots free right now.
    pub fn available(&self) -> usize {
        self.0.available_permits()
    }
}

/// One sandbox's pools, each with its cap, over the gateway-wide pool.
#[derive(Debug)]
pub struct SandboxSlots {
    clients: Arc<Semaphore>,
    dns: Arc<Semaphore>,
    upstream: Arc<Semaphore>,
    gateway: GatewaySlots,
}

/// One open socket's place under both bounds. Held, never read.
#[derive(Debug)]
pub struct Slot {
    _sandbox: OwnedSemaphorePermit,
    _gateway: OwnedSemaphorePermit,
}

/// Per-sandbox caps.
#[derive(Debug, Clone, Copy)]
pub struct Caps {
    pub clients: usize,
    pub dns: usize,
    pub upstream: usize,
}

impl SandboxSlots {
    pub fn new(caps: Caps, gateway: GatewaySlots) -> Self {
        Self {
            clients: Arc::new(Semaphore::new(caps.clients)),
            dns: Arc::new(Semaphore::new(caps.dns)),
            upstream: Arc::new(Semaphore::new(caps.upstream)),
            gateway,
        }
    }

    fn pool(&self, pool: Pool) -> &Arc<Semaphore> {
        match pool {
            Pool::Clients => &self.clients,
            Pool::Dns => &self.dns,
            Pool::Upstream => &self.upstream,
        }
    }

    /// A slot now, or why not: for connections already accepted, which are refused at once
    /// rather than held while waiting.
    pub fn try_take(&self, pool: Pool) -> Result<Slot, Exhausted> {
        let sandbox = self
            .pool(pool)
            .clone()
            .try_acquire_owned()
            .map_err(|_| Exhausted::Sandbox)?;
        let gateway = self
            .gateway
            .0
            .clone()
            .try_acquire_owned()
            .map_err(|_| Exhausted::Gateway)?;
        Ok(Slot {
            _sandbox: sandbox,
            _gateway: gateway,
        })
    }

    /// A slot within `wait`: for sockets the proxy is about to open itself (upstream), where
    /// waiting briefly for one of the sandbox's own to close is better than failing the request.
    pub async fn take_within(&self, pool: Pool, wait: Duration) -> Result<Slot, Exhausted> {
        let deadline = tokio::time::Instant::now() + wait;
        let sandbox = tokio::time::timeout_at(deadline, self.pool(pool).clone().acquire_owned())
            .await
            .map_err(|_| Exhausted::Sandbox)?
            .map_err(|_| Exhausted::Sandbox)?;
        let gateway = tokio::time::timeout_at(deadline, self.gateway.0.clone().acquire_owned())
            .await
            .map_err(|_| Exhausted::Gateway)?
            .map_err(|_| Exhausted::Gateway)?;
        Ok(Slot {
            _sandbox: sandbox,
            _gateway: gateway,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CAPS: Caps = Caps {
        clients: 3,
        dns: 1,
        upstream: 2,
    };

    #[test]
    fn a_sandbox_past_its_cap_takes_nothing_from_the_gateway() {
        let gateway = GatewaySlots::new(10);
        let a = SandboxSlots::new(CAPS, gateway.clone());
        let held: Vec<Slot> = (0..3).map(|_| a.try_take(Pool::Clients).unwrap()).collect();
        for _ in 0..100 {
            assert_eq!(a.try_take(Pool::Clients).unwrap_err(), Exhausted::Sandbox);
        }
        assert_eq!(gateway.available(), 7, "only the admitted three count");
        let dns = a.try_take(Pool::Dns).unwrap();
        assert_eq!(a.try_take(Pool::Dns).unwrap_err(), Exhausted::Sandbox);
        drop((held, dns));
        assert_eq!(gateway.available(), 10, "slots come back with the sockets");
    }

    #[test]
    fn the_gateway_bound_holds_across_sandboxes() {
        let gateway = GatewaySlots::new(4);
        let a = SandboxSlots::new(CAPS, gateway.clone());
        let b = SandboxSlots::new(CAPS, gateway.clone());
        let _a: Vec<Slot> = (0..3).map(|_| a.try_take(Pool::Clients).unwrap()).collect();
        let _b = b.try_take(Pool::Clients).unwrap();
        assert_eq!(b.try_take(Pool::Clients).unwrap_err(), Exhausted::Gateway);
        assert_eq!(
            b.pool(Pool::Clients).available_permits(),
            2,
            "a refusal by the gateway bound gives the sandbox's slot back"
        );
    }

    #[tokio::test]
    async fn upstream_waits_for_a_slot_then_gives_up() {
        let a = SandboxSlots::new(CAPS, GatewaySlots::new(10));
        let first = a.take_within(Pool::Upstream, Duration::ZERO).await.unwrap();
        let _second = a.take_within(Pool::Upstream, Duration::ZERO).await.unwrap();
        let late = a
            .take_within(Pool::Upstream, Duration::from_millis(50))
            .await;
        assert_eq!(late.unwrap_err(), Exhausted::Sandbox);
        let slots = Arc::new(a);
        let waiter = {
            let slots = slots.clone();
            tokio::spawn(async move {
                slots
                    .take_within(Pool::Upstream, Duration::from_secs(5))
                    .await
            })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(first);
        assert!(waiter.await.unwrap().is_ok(), "a freed slot is handed on");
    }
}
