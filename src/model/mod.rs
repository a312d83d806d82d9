//! The compiled runtime model that `config` builds and the pipeline, the MCP layer and the
//! authorization server only read: routes, rules, rates and limits, identity header names,
//! Host and Origin allowlists, and the pure parsers config needs to build them (the path
//! rule, host and origin canonicalization). This module imports neither `config` nor
//! `pipeline`; verifier sets still live in `auth`.

pub mod allowlist;
pub mod forwarding;
pub mod header_spelling;
pub mod identity;
pub mod path;
pub mod rate;
pub mod route;
pub mod rules;
