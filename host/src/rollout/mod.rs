//! Plugin versions declared in StoragePlugin specs, and staged rollouts of a
//! new version to the Databases using the plugin, with health gates.
//!
//! - [`plan`]: the rollout state machine as pure logic (steps, gates,
//!   halts, rollback, pinned and refused Databases);
//! - [`versions`]: loading the versions a spec declares into the registry;
//! - [`driver`]: the task that watches StoragePlugins, follows persisted
//!   rollouts on every replica and drives them on the leader.
//!
//! Where the state lives: each moved Database's assignment is its
//! annotation `atoll.dev/plugin-digest`, the rollout's progress is
//! `StoragePlugin.status.rollout`; the default version of a managed plugin
//! follows from that status (`from` while in progress or halted, `to` once
//! complete). Nothing is kept only in memory.

pub mod driver;
pub mod plan;
pub mod versions;

pub use driver::Driver;
