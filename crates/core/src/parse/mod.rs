//! What arrived: the credentials (RFC 6750 §2) and the JSON-RPC body with its
//! MCP request metadata headers, read into types before anything is
//! decided; and the tools' header marks, learned from their schemas.
pub mod bearer;
pub mod jsonrpc;
pub mod tool_headers;
pub mod version;
