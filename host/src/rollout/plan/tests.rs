//! The rollout state machine against a simulated fleet: the oracle is the
//! fleet's own bookkeeping (which Database was assigned what, which became
//! Ready), never the planner's status.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::jiff::{SignedDuration, Timestamp};

use super::*;
use crate::api::{CanaryStep, Wave};

const OLD: &str = "sha256:old";
const NEW: &str = "sha256:new";

fn version(name: &str, digest: &str) -> VersionRef {
    VersionRef {
        name: name.into(),
        version: name.trim_start_matches('v').into(),
        digest: digest.into(),
    }
}

/// A fleet of Databases on `OLD`, with rules for which become Ready on what.
struct Fleet {
    dbs: Vec<Candidate>,
    /// Databases that never become Ready on `NEW`.
    unhealthy_on_new: Vec<String>,
    /// Databases the shadow render refuses.
    refused: Vec<String>,
    default: VersionRef,
    status: Option<RolloutStatus>,
    now: Timestamp,
    /// Every assignment made, in order: (db, digest, rollback, hold).
    log: Vec<(String, String, bool, bool)>,
}

impl Fleet {
    fn new(n: usize) -> Self {
        let dbs = (0..n)
            .map(|i| Candidate {
                key: format!("ns/db-{i:02}"),
                effective: OLD.into(),
                rendered: Some(OLD.into()),
                current: true,
                ready: true,
                ..Candidate::default()
            })
            .collect();
        Fleet {
            dbs,
            unhealthy_on_new: Vec::new(),
            refused: Vec::new(),
            default: version("v1", OLD),
            status: None,
            now: "2026-01-01T00:00:00Z".parse().unwrap(),
            log: Vec::new(),
        }
    }

    fn get(&mut self, key: &str) -> &mut Candidate {
        self.dbs.iter_mut().find(|c| c.key == key).unwrap()
    }

    /// One planning pass, then the controller catches up: every Database
    /// renders its effective version; Ready unless listed unhealthy.
    fn tick(&mut self, policy: Option<&RolloutPolicy>, target: &VersionRef) -> Plan {
        let refused = self.refused.clone();
        let inputs = Inputs {
            policy,
            target,
            default: &self.default.clone(),
            status: self.status.as_ref(),
            now: self.now,
        };
        let plan = plan(&inputs, &self.dbs, &mut |c| {
            refused.contains(&c.key).then(|| "would prune".to_string())
        });
        for action in &plan.actions {
            match action {
                Action::Assign {
                    db,
                    digest,
                    rollback,
                    hold,
                } => {
                    self.log
                        .push((db.clone(), digest.clone(), *rollback, *hold));
                    let c = self.get(db);
                    c.assigned = true;
                    c.effective = digest.clone();
                }
                Action::SetDefault(digest) => {
                    self.default = if digest == NEW {
                        version("v2", NEW)
                    } else {
                        version("v1", OLD)
                    };
                    for c in self.dbs.iter_mut().filter(|c| !c.assigned && !c.pinned) {
                        c.effective = digest.clone();
                    }
                }
                Action::Report { .. } => {}
            }
        }
        let unhealthy = self.unhealthy_on_new.clone();
        for c in &mut self.dbs {
            c.rendered = Some(c.effective.clone());
            c.ready = !(c.effective == NEW && unhealthy.contains(&c.key));
        }
        self.status = plan.status.clone();
        plan
    }

    fn on(&self, digest: &str) -> usize {
        self.dbs.iter().filter(|c| c.effective == digest).count()
    }

    fn moved_in_order(&self) -> Vec<String> {
        self.log
            .iter()
            .filter(|(_, d, rb, hold)| d == NEW && !rb && !hold)
            .map(|(db, ..)| db.clone())
            .collect()
    }
}

fn canary_half_all(deadline: u32, rollback: bool) -> RolloutPolicy {
    RolloutPolicy {
        canary: Some(CanaryStep {
            count: Some(2),
            selector: None,
        }),
        waves: vec![
            Wave {
                count: None,
                percent: Some(50),
            },
            Wave {
                count: None,
                percent: Some(100),
            },
        ],
        gate_deadline_seconds: Some(deadline),
        rollback_on_failure: rollback,
    }
}

#[test]
fn canary_two_then_half_then_all_each_after_its_gate() {
    let mut fleet = Fleet::new(20);
    let policy = canary_half_all(60, false);
    let target = version("v2", NEW);

    let plan = fleet.tick(Some(&policy), &target);
    assert_eq!(fleet.on(NEW), 2, "the canary: 2 of 20");
    let s = plan.status.unwrap();
    assert_eq!((s.step, s.steps, s.phase.as_str()), (1, 3, PROGRESSING));
    assert_eq!(s.step_databases.len(), 2);

    // The gate passed (the fleet became Ready on the new digest): 50%.
    fleet.tick(Some(&policy), &target);
    assert_eq!(fleet.on(NEW), 10, "cumulative 50% of 20");
    fleet.tick(Some(&policy), &target);
    assert_eq!(fleet.on(NEW), 20);
    let s = fleet.tick(Some(&policy), &target).status.unwrap();
    assert_eq!(s.phase, COMPLETE);
    assert_eq!((s.moved, s.total), (20, 20));
    assert_eq!(fleet.default.digest, NEW, "the target is the default now");
    let moved = fleet.moved_in_order();
    assert_eq!(moved.len(), 20, "each moved once: {moved:?}");
    // Complete stays complete.
    let again = fleet.tick(Some(&policy), &target);
    assert!(again.actions.is_empty(), "{:?}", again.actions);
}

#[test]
fn a_step_waits_for_its_gate_until_the_deadline() {
    let mut fleet = Fleet::new(10);
    let policy = canary_half_all(60, false);
    let target = version("v2", NEW);
    fleet.tick(Some(&policy), &target);
    // Not Ready yet: the canary stays where it is, nothing else moves.
    for c in fleet.dbs.iter_mut().filter(|c| c.effective == NEW) {
        c.ready = false;
    }
    let refused = Vec::<String>::new();
    let inputs = Inputs {
        policy: Some(&policy),
        target: &target,
        default: &fleet.default,
        status: fleet.status.as_ref(),
        now: fleet.now + SignedDuration::from_secs(59),
    };
    let plan = plan(&inputs, &fleet.dbs, &mut |c| {
        refused.contains(&c.key).then(String::new)
    });
    let s = plan.status.unwrap();
    assert_eq!((s.step, s.phase.as_str()), (1, PROGRESSING));
    assert!(s.message.contains("waiting for 2"), "{}", s.message);
    assert!(
        !plan
            .actions
            .iter()
            .any(|a| matches!(a, Action::Assign { .. })),
        "no move while the gate is pending"
    );

    // An old generation, or the old digest, does not pass either.
    for c in fleet.dbs.iter_mut().filter(|c| c.effective == NEW) {
        c.ready = true;
        c.current = false;
    }
    let plan2 = plan_at(&fleet, &policy, &target, 10);
    assert!(plan2.status.unwrap().message.contains("waiting"));
}

fn plan_at(fleet: &Fleet, policy: &RolloutPolicy, target: &VersionRef, secs: i64) -> Plan {
    let inputs = Inputs {
        policy: Some(policy),
        target,
        default: &fleet.default,
        status: fleet.status.as_ref(),
        now: fleet.now + SignedDuration::from_secs(secs),
    };
    plan(&inputs, &fleet.dbs, &mut |_| None)
}

#[test]
fn a_failed_canary_halts_leaves_the_rest_and_rolls_the_failed_back() {
    let mut fleet = Fleet::new(20);
    let bad = ["ns/db-03", "ns/db-07"];
    for key in bad {
        fleet.get(key).labels = [("tier".to_string(), "canary".to_string())].into();
    }
    fleet.unhealthy_on_new = bad.iter().map(|s| s.to_string()).collect();
    let mut policy = canary_half_all(30, true);
    policy.canary = Some(CanaryStep {
        count: None,
        selector: Some(LabelSelector {
            match_labels: Some([("tier".to_string(), "canary".to_string())].into()),
            match_expressions: None,
        }),
    });
    let target = version("v2", NEW);
    fleet.tick(Some(&policy), &target);
    assert_eq!(fleet.moved_in_order(), bad.map(String::from).to_vec());

    // Past the deadline the canary is still not Ready: halt, roll back.
    fleet.now += SignedDuration::from_secs(31);
    let plan = fleet.tick(Some(&policy), &target);
    let s = plan.status.unwrap();
    assert_eq!(s.phase, HALTED);
    assert_eq!(s.failed, bad.map(String::from).to_vec());
    assert_eq!(s.rolled_back, 2);
    assert!(s.message.contains("ns/db-03"), "{}", s.message);
    assert!(plan.actions.iter().any(
        |a| matches!(a, Action::Report { warning: true, reason, .. } if *reason == "RolloutHalted")
    ));
    assert_eq!(fleet.on(NEW), 0, "failed ones back, the others never moved");
    assert_eq!(fleet.default.digest, OLD);
    // Halted stays halted.
    fleet.now += SignedDuration::from_secs(300);
    assert!(fleet.tick(Some(&policy), &target).actions.is_empty());
}

#[test]
fn without_rollback_a_halt_leaves_the_failed_where_they_are() {
    let mut fleet = Fleet::new(6);
    fleet.unhealthy_on_new = vec!["ns/db-00".into()];
    let policy = canary_half_all(10, false);
    let target = version("v2", NEW);
    fleet.tick(Some(&policy), &target);
    fleet.now += SignedDuration::from_secs(11);
    let s = fleet.tick(Some(&policy), &target).status.unwrap();
    assert_eq!((s.phase.as_str(), s.rolled_back), (HALTED, 0));
    assert_eq!(s.failed, vec!["ns/db-00".to_string()]);
    assert_eq!(fleet.on(NEW), 2, "the canary stays on the new version");
}

#[test]
fn pinned_and_refused_databases_never_move_and_are_counted() {
    let mut fleet = Fleet::new(8);
    fleet.get("ns/db-01").pinned = true;
    fleet.get("ns/db-02").pinned = true;
    fleet.refused = vec!["ns/db-05".into()];
    let policy = canary_half_all(10, false);
    let target = version("v2", NEW);
    let mut last = None;
    for _ in 0..6 {
        last = fleet.tick(Some(&policy), &target).status;
    }
    let s = last.unwrap();
    assert_eq!(s.phase, COMPLETE);
    assert_eq!((s.skipped_pinned, s.skipped_refused), (2, 1));
    assert_eq!((s.moved, s.total), (5, 5));
    assert!(s.message.contains("ns/db-05: would prune"), "{}", s.message);
    for key in ["ns/db-01", "ns/db-02", "ns/db-05"] {
        assert_eq!(fleet.get(key).effective, OLD, "{key} stayed");
        assert!(!fleet.moved_in_order().contains(&key.to_string()));
    }
    // The refused one was held on its version before the default changed
    // (pinned ones too: a requirement the target satisfies would move them).
    assert!(
        fleet
            .log
            .iter()
            .any(|(db, d, _, hold)| db == "ns/db-05" && d == OLD && *hold)
    );
}

#[test]
fn a_rollout_resumes_from_its_persisted_status() {
    let policy = canary_half_all(60, false);
    let target = version("v2", NEW);
    let mut fleet = Fleet::new(20);
    fleet.tick(Some(&policy), &target);
    fleet.tick(Some(&policy), &target);
    assert_eq!(fleet.on(NEW), 10);
    // "Restart": the status goes through JSON (as through the API), the
    // fleet is what the API shows; nothing else carries over.
    let json = serde_json::to_string(&fleet.status).unwrap();
    fleet.status = serde_json::from_str(&json).unwrap();
    fleet.log.clear();
    fleet.tick(Some(&policy), &target);
    assert_eq!(fleet.on(NEW), 20);
    assert_eq!(
        fleet.moved_in_order().len(),
        10,
        "only the ten not yet moved"
    );
    let s = fleet.tick(Some(&policy), &target).status.unwrap();
    assert_eq!(s.phase, COMPLETE);
}

#[test]
fn rolling_back_is_a_rollout_to_the_previous_version() {
    let policy = canary_half_all(60, false);
    let mut fleet = Fleet::new(10);
    let v2 = version("v2", NEW);
    for _ in 0..4 {
        fleet.tick(Some(&policy), &v2);
    }
    assert_eq!((fleet.on(NEW), fleet.default.digest.as_str()), (10, NEW));
    let v1 = version("v1", OLD);
    let mut last = None;
    for _ in 0..4 {
        last = fleet.tick(Some(&policy), &v1).status;
    }
    let s = last.unwrap();
    assert_eq!((s.phase.as_str(), s.from.digest.as_str()), (COMPLETE, NEW));
    assert_eq!(fleet.on(OLD), 10);
    assert_eq!(fleet.default.digest, OLD);
}

#[test]
fn without_a_policy_everything_moves_at_once_without_a_gate() {
    let mut fleet = Fleet::new(5);
    fleet.unhealthy_on_new = vec!["ns/db-00".into()];
    let s = fleet.tick(None, &version("v2", NEW)).status.unwrap();
    assert_eq!((s.phase.as_str(), s.steps), (COMPLETE, 1));
    assert_eq!(fleet.on(NEW), 5);
}

#[test]
fn a_wave_by_count_moves_that_many_more_and_a_final_step_takes_the_rest() {
    let policy = RolloutPolicy {
        canary: None,
        waves: vec![Wave {
            count: Some(3),
            percent: None,
        }],
        gate_deadline_seconds: Some(60),
        rollback_on_failure: false,
    };
    assert_eq!(step_count(Some(&policy)), 2);
    let mut fleet = Fleet::new(7);
    let target = version("v2", NEW);
    fleet.tick(Some(&policy), &target);
    assert_eq!(fleet.on(NEW), 3);
    fleet.tick(Some(&policy), &target);
    assert_eq!(fleet.on(NEW), 7);
}

#[test]
fn label_selectors_match_like_kubernetes() {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;
    let labels: BTreeMap<String, String> = [("a".to_string(), "1".to_string())].into();
    let req = |op: &str, values: &[&str]| LabelSelector {
        match_labels: None,
        match_expressions: Some(vec![LabelSelectorRequirement {
            key: "a".into(),
            operator: op.into(),
            values: Some(values.iter().map(|v| v.to_string()).collect()),
        }]),
    };
    assert!(matches(&req("In", &["1", "2"]), &labels));
    assert!(!matches(&req("NotIn", &["1"]), &labels));
    assert!(matches(&req("Exists", &[]), &labels));
    assert!(!matches(&req("DoesNotExist", &[]), &labels));
    assert!(matches(&LabelSelector::default(), &labels));
}
