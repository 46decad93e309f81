//! aos-audit-export: exports the AvePoint Online Services audit log into a data lake, exactly
//! once.
//!
//! The real shape is a hub: the [`exporter`] owns one adapter per concern and drives every
//! window through [`window`], which orders the steps; adapters never call each other.
//!
//! ```text
//!  cli ─► commands ─► config (raw layers ─► validated Settings)
//!                        │
//!                        ▼
//!   daemon ─► exporter ── planner: coverage gaps + look-back ─► windows (≤ 7 d)
//!                │
//!                ▼  per window (window.rs), up to export.concurrency at once
//!      auth ─► api ─► dedup ─► sink ─► store ─┐   fetch pages → identity + multiset dedup
//!   (token)  (pages,  (ids)   (files)  (publish)│   → encode → stage → publish
//!             retry)                           ▼
//!                         checkpoint: commit windows in order (one SQLite transaction)
//! ```
//!
//! Leaf modules any stage may use: [`model`] (windows, streams, record ids, output names),
//! [`retry`] (the one backoff policy), [`metrics`] (operator signals), [`error`] (exit codes).

pub mod api;
pub mod auth;
pub mod checkpoint;
pub mod cli;
pub mod commands;
pub mod config;
pub mod crashpoint;
pub mod daemon;
pub mod dedup;
pub mod error;
pub mod exporter;
pub mod metrics;
pub mod model;
pub mod planner;
pub mod retry;
pub mod sink;
pub mod store;
pub mod window;
