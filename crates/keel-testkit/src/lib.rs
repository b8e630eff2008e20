//! Fakes for Keel's tests, written as real code: a mock OpenAI upstream that speaks OpenAI's
//! JSON and SSE with scripted delays and faults, and an in-process gateway on 127.0.0.1:0.
//!
//! Never a dependency of non-test code.

pub mod gateway;
pub mod mock;
