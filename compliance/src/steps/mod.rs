//! The step library, in business language. Steps register themselves with the cucumber
//! World through the `given`/`when`/`then` attributes.

pub mod api;
pub mod audit;
pub mod evidence;
pub mod keys;
pub mod tls;
