//! What arrived: the credentials (RFC 6750 §2) and the JSON-RPC body with its
//! MCP routing headers, read into types before anything is decided.
pub mod bearer;
pub mod jsonrpc;
pub mod version;
