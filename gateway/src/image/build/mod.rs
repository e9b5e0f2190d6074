//! `gigmcp image build`: a server image from an npm or PyPI package or a local directory.

pub mod layer;
pub mod layout_writer;
pub mod spec;
pub mod tree;
