//! The egress proxy (DESIGN 3.4-3.6): the only place a real credential meets the network, and
//! only for the hosts it is bound to.

pub mod rewrite;
