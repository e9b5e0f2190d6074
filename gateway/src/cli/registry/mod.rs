//! `gigmcp registry`: the registry verbs. The author's verbs (`author.rs`) are offline: they
//! run before any state directory or master key is opened.

use clap::Subcommand;

pub mod author;

#[derive(Debug, Subcommand)]
pub enum RegistryCommand {
    #[command(flatten)]
    Author(author::AuthorCommand),
}
