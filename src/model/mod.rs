//! The compiled runtime model that `config` builds and the pipeline, the MCP layer and the
//! authorization server only read. New compiled types go here; the older ones (routes,
//! verifier sets, identity header names) still live in `pipeline` and move here over time.

pub mod glob;
pub mod rate;
pub mod rules;
