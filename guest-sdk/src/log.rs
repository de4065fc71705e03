//! Structured logging to the host.
//!
//! In a component, lines go to the host's `log` import, which tags them with
//! the plugin's name. Natively (unit tests), they go to stderr.

use crate::Level;

/// Write one log line.
pub fn log(level: Level, message: &str) {
    #[cfg(target_arch = "wasm32")]
    crate::wasm::log(level, message);
    #[cfg(not(target_arch = "wasm32"))]
    eprintln!("[{level:?}] {message}");
}

/// `log(Level::Info, ...)`.
pub fn info(message: &str) {
    log(Level::Info, message)
}

/// `log(Level::Warn, ...)`.
pub fn warn(message: &str) {
    log(Level::Warn, message)
}

/// `log(Level::Debug, ...)`.
pub fn debug(message: &str) {
    log(Level::Debug, message)
}
