//! The built-in plugins, compiled to components by `build.rs` and embedded.

include!(concat!(env!("OUT_DIR"), "/builtin.rs"));

/// The component of the built-in plugin `name`, if there is one.
pub fn bytes(name: &str) -> Option<&'static [u8]> {
    BUILTIN.iter().find(|(n, _)| *n == name).map(|(_, b)| *b)
}
