//! System tests: the real binary's composition (gateway + auth) on port 0, real PostgreSQL (a
//! fresh database per test) and real Redis (a unique key prefix per test), over real HTTP.

// Test code: a failed expectation should panic with a message, which is what expect() does.
#![allow(clippy::unwrap_used, clippy::expect_used)]
mod admin;
mod alerting;
mod api_keys;
mod audit;
mod auth_flow;
mod backup;
mod crash;
mod database_roles;
mod edge;
mod funds;
mod helpers;
mod hostile_input;
mod indexes;
mod instruments;
mod openapi;
mod orders;
mod rate_limits;
mod receiver;
mod risk;
mod secret_rotation;
mod service_tokens;
mod settlement;
mod stream;
mod tls;
mod tokens;
