//! aos-audit-export: exports the AvePoint Online Services audit log into a data lake, exactly
//! once.
//!
//! Data flows one way:
//! [`config`] → [`auth`] (token cache) → [`api`] (paging, retries) → [`planner`] (windows) →
//! [`pipeline`] (fingerprint + multiset dedup) → [`sink`] (Parquet | NDJSON, partitioned) →
//! [`store`] (local dir | object storage, atomic publish) → [`checkpoint`] (SQLite commit).
//! [`job`] runs one window through those steps; [`scheduler`] orders windows and commits,
//! [`daemon`] repeats runs on a schedule. [`commands`] and [`cli`] are the command-line glue.

pub mod api;
pub mod auth;
pub mod checkpoint;
pub mod cli;
pub mod commands;
pub mod config;
pub mod daemon;
pub mod error;
pub mod job;
pub mod pipeline;
pub mod planner;
pub mod scheduler;
pub mod shutdown;
pub mod sink;
pub mod store;
