//! `worker`: the nexingest queue consumer and its subcommands.
#![warn(missing_docs)]
