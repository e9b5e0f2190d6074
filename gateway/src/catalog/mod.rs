//! What a signed registry's entries are and how they are used: the entry format, lint and
//! entitlements, the registries' verified state and its sync, and installing servers from it.

pub mod install;
pub mod pick;
