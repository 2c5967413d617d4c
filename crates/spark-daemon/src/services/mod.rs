//! One folder per service. `blob_cache` is the protocol adapter the two blob caches share; each cache folder
//! only says how its keys map to store keys and which extra messages it has.

pub mod asset;
pub mod blob_cache;
pub mod collab;
pub mod compile;
pub mod control;
pub mod shader;
#[cfg(feature = "test-services")]
pub mod testing;
pub mod watch;
