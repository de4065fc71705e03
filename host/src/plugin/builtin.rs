//! The built-in plugins, compiled to components by `build.rs` and embedded.

include!(concat!(env!("OUT_DIR"), "/builtin.rs"));
