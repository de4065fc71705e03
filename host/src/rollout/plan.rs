//! The rollout state machine, as pure logic: from the persisted
//! [`RolloutStatus`], the Databases as they are now and the clock, what to
//! do next. It holds no state of its own, so a restarted atoll or a new
//! leader continues exactly where the status says.
//!
//! Rules:
//! - A rollout moves every unpinned Database whose version is not the
//!   target's, in steps: the canary (count or label selector), then the
//!   waves (`percent` cumulative of all that can move, `count` more), then
//!   a final step for whatever is left. Without a policy, one step and no
//!   gate (the labelled-ConfigMap shorthand).
//! - Before a Database is moved the shadow render of the target runs
//!   (`refuse`); a Database it fails for, or that would be refused (data
//!   loss, policy), is never moved and is counted as skipped.
//! - A step's gate passes when each of its Databases was rendered by the
//!   target (`status.plugin.digest`), for its current generation, is
//!   `Ready` and not `Degraded`. A deleted Database passes.
//! - The gate not passing within the deadline halts the rollout; with
//!   `rollbackOnFailure` the failing Databases move back to `from`.
//! - On completion every Database that stays behind while following the
//!   default (refused, or pinned by a requirement the target satisfies) is
//!   held on its version first, then the target becomes the default.

use std::collections::BTreeMap;

use k8s_openapi::jiff::{SignedDuration, Timestamp};

use crate::api::{RolloutPolicy, RolloutStatus, VersionRef};

/// `status.rollout.phase` while steps remain.
pub const PROGRESSING: &str = "Progressing";
/// `status.rollout.phase` once every movable Database is on the target.
pub const COMPLETE: &str = "Complete";
/// `status.rollout.phase` after a failed gate.
pub const HALTED: &str = "Halted";

/// A Database as the planner sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Candidate {
    /// `namespace/name`.
    pub key: String,
    pub labels: BTreeMap<String, String>,
    /// It pins a version (`spec.storage.version`) or a digest.
    pub pinned: bool,
    /// It has an assignment (annotation), so the default does not decide.
    pub assigned: bool,
    /// Digest of the version it renders with now (as the controller would
    /// choose it).
    pub effective: String,
    /// Digest in `status.plugin`, the version that last rendered it.
    pub rendered: Option<String>,
    /// `status.observedGeneration == metadata.generation`.
    pub current: bool,
    /// `Ready` is `True`.
    pub ready: bool,
    /// `Degraded` is `True`.
    pub degraded: bool,
}

impl Candidate {
    fn passes_gate(&self, to: &str) -> bool {
        self.rendered.as_deref() == Some(to) && self.current && self.ready && !self.degraded
    }
}

/// Something the driver does for the planner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Assign the Database (`namespace/name`) to the version with `digest`.
    /// `rollback`: back to `from` after a failed gate; `hold`: keeps it where
    /// it is while the default changes (neither counts as a move).
    Assign {
        db: String,
        digest: String,
        rollback: bool,
        hold: bool,
    },
    /// Make `digest` the plugin's default version.
    SetDefault(String),
    /// Report on the StoragePlugin (Event and log).
    Report {
        warning: bool,
        reason: &'static str,
        note: String,
    },
}

/// What one planning pass decided.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    /// The rollout status to persist (`None`: nothing to roll out).
    pub status: Option<RolloutStatus>,
    pub actions: Vec<Action>,
}

/// The planner's inputs besides the Databases.
#[derive(Debug, Clone)]
pub struct Inputs<'a> {
    /// `spec.rollout` (`None`: all at once, no gate).
    pub policy: Option<&'a RolloutPolicy>,
    /// The version the spec targets.
    pub target: &'a VersionRef,
    /// The plugin's default version now.
    pub default: &'a VersionRef,
    /// The persisted status, if any.
    pub status: Option<&'a RolloutStatus>,
    pub now: Timestamp,
}

/// Plan the next moves. `refuse` shadow-renders a Database with the target
/// and says why it must not move (`None`: it may).
pub fn plan(
    inputs: &Inputs<'_>,
    dbs: &[Candidate],
    refuse: &mut dyn FnMut(&Candidate) -> Option<String>,
) -> Plan {
    let mut out = Plan::default();
    let target = inputs.target;
    let mut status = match inputs.status {
        Some(s) if s.to.digest == target.digest => {
            if s.phase != PROGRESSING {
                // Complete or halted: stays so until the target changes.
                out.status = Some(s.clone());
                return out;
            }
            s.clone()
        }
        _ => {
            let behind = dbs
                .iter()
                .any(|c| !c.pinned && c.effective != target.digest);
            if !behind && target.digest == inputs.default.digest {
                out.status = inputs.status.cloned();
                return out;
            }
            let steps = step_count(inputs.policy);
            out.actions.push(Action::Report {
                warning: false,
                reason: "RolloutStarted",
                note: format!(
                    "rolling out {} ({}) from {} ({}) in {steps} step(s)",
                    target.version, target.digest, inputs.default.version, inputs.default.digest
                ),
            });
            RolloutStatus {
                from: inputs.default.clone(),
                to: target.clone(),
                phase: PROGRESSING.into(),
                step: 0,
                steps,
                ..RolloutStatus::default()
            }
        }
    };
    status.skipped_pinned = dbs.iter().filter(|c| c.pinned).count() as u32;

    // A step in flight: its gate.
    if !status.step_databases.is_empty() {
        let by_key: BTreeMap<&str, &Candidate> = dbs.iter().map(|c| (c.key.as_str(), c)).collect();
        let failing: Vec<String> = status
            .step_databases
            .iter()
            .filter(|k| {
                by_key
                    .get(k.as_str())
                    .is_some_and(|c| !c.passes_gate(&status.to.digest))
            })
            .cloned()
            .collect();
        if !failing.is_empty() {
            if !deadline_passed(&status, inputs) {
                status.message = format!(
                    "step {}/{}: waiting for {} Database(s) to be Ready on {}",
                    status.step,
                    status.steps,
                    failing.len(),
                    status.to.version
                );
                return finish(out, status);
            }
            halt(&mut out, &mut status, inputs, failing);
            return finish(out, status);
        }
        out.actions.push(Action::Report {
            warning: false,
            reason: "RolloutStepPassed",
            note: format!(
                "step {}/{} passed its gate: {} Database(s) Ready on {}",
                status.step,
                status.steps,
                status.step_databases.len(),
                status.to.version
            ),
        });
        status.step_databases.clear();
    }

    // Begin the next step (skipping empty ones), or complete.
    let mut refused: Vec<String> = Vec::new();
    let mut eligible: Vec<&Candidate> = Vec::new();
    for c in dbs
        .iter()
        .filter(|c| !c.pinned && c.effective != status.to.digest)
    {
        match refuse(c) {
            Some(why) => refused.push(format!("{}: {why}", c.key)),
            None => eligible.push(c),
        }
    }
    status.skipped_refused = refused.len() as u32;
    let on_target = dbs
        .iter()
        .filter(|c| !c.pinned && c.effective == status.to.digest)
        .count() as u32;
    status.moved = on_target;
    status.total = on_target + eligible.len() as u32;
    let mut moved_now: std::collections::BTreeSet<String> = Default::default();
    while status.step < status.steps && !eligible.is_empty() {
        status.step += 1;
        let size = step_size(inputs.policy, status.step, &status, &eligible);
        let chosen: Vec<&Candidate> = match canary_selector(inputs.policy, status.step) {
            Some(selector) => eligible
                .iter()
                .copied()
                .filter(|c| selector(&c.labels))
                .collect(),
            None => eligible.iter().copied().take(size).collect(),
        };
        if chosen.is_empty() {
            continue;
        }
        let gated = inputs.policy.is_some();
        for c in &chosen {
            out.actions.push(Action::Assign {
                db: c.key.clone(),
                digest: status.to.digest.clone(),
                rollback: false,
                hold: false,
            });
        }
        status.moved += chosen.len() as u32;
        out.actions.push(Action::Report {
            warning: false,
            reason: "RolloutStep",
            note: format!(
                "step {}/{}: moved {} Database(s) to {} ({}/{} moved, {} pinned, {} refused)",
                status.step,
                status.steps,
                chosen.len(),
                status.to.version,
                status.moved,
                status.total,
                status.skipped_pinned,
                status.skipped_refused
            ),
        });
        if gated {
            status.step_databases = chosen.iter().map(|c| c.key.clone()).collect();
            status.step_started = Some(inputs.now.to_string());
            status.message = format!(
                "step {}/{}: waiting for {} Database(s) to be Ready on {}",
                status.step,
                status.steps,
                chosen.len(),
                status.to.version
            );
            if !refused.is_empty() {
                status
                    .message
                    .push_str(&format!("; not moved: {}", refused.join("; ")));
            }
            return finish(out, status);
        }
        moved_now.extend(chosen.iter().map(|c| c.key.clone()));
        eligible.retain(|c| !moved_now.contains(&c.key));
    }
    let staying = dbs.iter().filter(|c| !moved_now.contains(&c.key));
    complete(&mut out, &mut status, staying, &refused);
    finish(out, status)
}

fn finish(mut out: Plan, mut status: RolloutStatus) -> Plan {
    status.progress = format!(
        "{}/{} {}/{}",
        status.step, status.steps, status.moved, status.total
    );
    out.status = Some(status);
    out
}

fn deadline_passed(status: &RolloutStatus, inputs: &Inputs<'_>) -> bool {
    let deadline = inputs
        .policy
        .and_then(|p| p.gate_deadline_seconds)
        .unwrap_or(crate::api::DEFAULT_GATE_DEADLINE_SECONDS);
    let Some(started) = status
        .step_started
        .as_deref()
        .and_then(|s| s.parse::<Timestamp>().ok())
    else {
        // A step without a start time (hand-edited status): start it now.
        return false;
    };
    inputs.now.duration_since(started) >= SignedDuration::from_secs(i64::from(deadline))
}

fn halt(out: &mut Plan, status: &mut RolloutStatus, inputs: &Inputs<'_>, failing: Vec<String>) {
    let rollback = inputs.policy.is_some_and(|p| p.rollback_on_failure);
    status.phase = HALTED.into();
    status.message = format!(
        "halted at step {}/{}: {} Database(s) not Ready on {} within the gate deadline: {}{}",
        status.step,
        status.steps,
        failing.len(),
        status.to.version,
        failing.join(", "),
        if rollback {
            format!("; moved back to {}", status.from.version)
        } else {
            String::new()
        }
    );
    if rollback {
        for db in &failing {
            out.actions.push(Action::Assign {
                db: db.clone(),
                digest: status.from.digest.clone(),
                rollback: true,
                hold: false,
            });
        }
        status.rolled_back = failing.len() as u32;
        status.moved = status.moved.saturating_sub(failing.len() as u32);
    }
    status.failed = failing;
    status.step_databases.clear();
    out.actions.push(Action::Report {
        warning: true,
        reason: "RolloutHalted",
        note: status.message.clone(),
    });
}

fn complete<'a>(
    out: &mut Plan,
    status: &mut RolloutStatus,
    staying: impl Iterator<Item = &'a Candidate>,
    refused: &[String],
) {
    // Whoever stays behind while following the default keeps its version.
    for c in staying.filter(|c| !c.assigned && c.effective != status.to.digest) {
        out.actions.push(Action::Assign {
            db: c.key.clone(),
            digest: c.effective.clone(),
            rollback: false,
            hold: true,
        });
    }
    out.actions
        .push(Action::SetDefault(status.to.digest.clone()));
    status.phase = COMPLETE.into();
    status.step = status.steps;
    status.step_databases.clear();
    status.step_started = None;
    status.message = format!(
        "complete: {}/{} on {} ({} pinned, {} refused)",
        status.moved,
        status.total,
        status.to.version,
        status.skipped_pinned,
        status.skipped_refused
    );
    if !refused.is_empty() {
        status
            .message
            .push_str(&format!("; not moved: {}", refused.join("; ")));
    }
    out.actions.push(Action::Report {
        warning: false,
        reason: "RolloutComplete",
        note: status.message.clone(),
    });
}

/// Steps of a rollout under `policy`: canary, waves, and a final step
/// unless the last wave is 100%.
pub fn step_count(policy: Option<&RolloutPolicy>) -> u32 {
    let Some(p) = policy else { return 1 };
    let canary = u32::from(p.canary.is_some());
    let waves = p.waves.len() as u32;
    let last_is_all = p.waves.last().is_some_and(|w| w.percent == Some(100));
    canary + waves + u32::from(!last_is_all)
}

/// How many Databases step `step` (1-based) moves.
fn step_size(
    policy: Option<&RolloutPolicy>,
    step: u32,
    status: &RolloutStatus,
    eligible: &[&Candidate],
) -> usize {
    let Some(p) = policy else {
        return eligible.len();
    };
    let mut index = step as usize - 1;
    if let Some(canary) = &p.canary {
        if index == 0 {
            return canary.count.unwrap_or(1) as usize;
        }
        index -= 1;
    }
    match p.waves.get(index) {
        Some(wave) => match (wave.count, wave.percent) {
            (Some(n), _) => n as usize,
            (None, Some(pct)) => {
                let goal = (u64::from(status.total) * u64::from(pct)).div_ceil(100) as u32;
                goal.saturating_sub(status.moved) as usize
            }
            (None, None) => eligible.len(),
        },
        None => eligible.len(),
    }
}

type Selector = Box<dyn Fn(&BTreeMap<String, String>) -> bool>;

/// The canary's label selector, when step `step` is a canary by selector.
fn canary_selector(policy: Option<&RolloutPolicy>, step: u32) -> Option<Selector> {
    let selector = policy?.canary.as_ref()?.selector.clone()?;
    (step == 1).then(|| {
        Box::new(move |labels: &BTreeMap<String, String>| matches(&selector, labels)) as Selector
    })
}

/// Whether `labels` match a Kubernetes label selector.
pub fn matches(
    selector: &k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector,
    labels: &BTreeMap<String, String>,
) -> bool {
    let equal = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let expressions = selector.match_expressions.iter().flatten().all(|e| {
        let values = e.values.clone().unwrap_or_default();
        let value = labels.get(&e.key);
        match e.operator.as_str() {
            "In" => value.is_some_and(|v| values.contains(v)),
            "NotIn" => value.is_none_or(|v| !values.contains(v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            _ => false,
        }
    });
    equal && expressions
}

#[cfg(test)]
mod tests;
