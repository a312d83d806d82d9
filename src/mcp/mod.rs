//! MCP on the wire: reading JSON-RPC envelopes without changing a byte (phase 7), and the
//! answers the gateway gives in JSON-RPC terms.

pub mod filter;
pub mod jsonrpc;
pub mod sessions;
