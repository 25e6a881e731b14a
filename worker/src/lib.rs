//! `worker`: the nexingest queue worker, its job pipeline and its subcommands.
//!
//! The binary (`nexingest`, `src/main.rs`) only parses flags and dispatches to
//! [`cmd::dispatch`]; each subcommand lives in its own module under [`cmd`], turns its flags
//! into validated settings (see [`config`]) and calls the library below. The long-running
//! consumer is [`consumer::run`]`(config, shutdown)`, so tests drive it with any shutdown
//! future.
//!
//! The modules form layers, each importing only those below it (`scripts/layers.py` checks it
//! in `make test`):
//!
//! | layer | modules |
//! |---|---|
//! | leaves | [`error`], [`metrics`], [`catalog`] |
//! | flags | [`cli`] |
//! | settings | [`config`], [`tls`], [`logging`] |
//! | domain and clients | [`message`], [`locations`], [`db`], [`aws`], [`s3`], [`queue`] |
//! | stages | [`pipeline`], [`consumer`], [`derive`] |
//! | commands | [`cmd`] |
//!
//! ```
//! use worker::message::{parse, Message};
//! # let aws = worker::config::AwsConfig {
//! #     endpoint_url: None, nex_gddp_bucket: "nasanex".into(), loca_bucket: "nasanex".into(),
//! #     cmip6_bucket: "nex-gddp-cmip6".into(), allowed_buckets: ["nasanex".to_string()].into(),
//! #     timeouts: Default::default(), s3: Default::default() };
//! let m = parse(r#"{"dataset":"NEX-GDDP","scenario":"rcp85","model":"CCSM4","year":2050}"#, &aws).unwrap();
//! let Message::Native(job) = m else { unreachable!() };
//! assert_eq!(job.id(), "NEX-GDDP/rcp85/CCSM4/2050");
//! assert_eq!(job.variables, ["tasmin", "tasmax", "pr"]);
//! ```
#![warn(missing_docs)]

pub mod aws;
pub mod bench;
pub mod catalog;
pub mod cli;
pub mod cmd;
pub mod config;
pub mod consumer;
pub mod db;
pub mod derive;
pub mod doctor;
pub mod error;
pub mod locations;
pub mod logging;
pub mod message;
pub mod metrics;
pub mod pipeline;
pub mod plot;
pub mod producer;
pub mod queue;
pub mod requeue;
pub mod s3;
pub mod tls;
