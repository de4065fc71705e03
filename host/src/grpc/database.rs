//! `atomix.database.DatabaseService`: where each Database's partitions are
//! served.
//!
//! Discovery is all or nothing. Atomix clients sort the partitions they get
//! and route each key to `partitions[hash(key) % len]`, so a list missing one
//! partition would send keys to the wrong partitions. A Database is therefore
//! listed with every partition, in id order, once each of them has its
//! Service; readiness does not matter (a partition missing a replica still
//! serves through its quorum, and a client retries one that cannot answer).
//! Before that, `GetDatabase` answers `UNAVAILABLE` naming the partitions
//! still missing (Atomix clients retry it) and `GetDatabases` leaves the
//! Database out. A Database being deleted is absent.
//!
//! Partitions come from the Partition records atoll keeps for each Database
//! (counted only when the Database controls them, by owner uid), read from
//! the watch caches ([`Caches`]); so are the Databases `GetDatabases` lists.
//! `GetDatabase` reads its Database from the API server. A partition
//! has its Service once its record's `status.endpoints` is written: atoll
//! writes it after applying the partition's Service. "Every partition" is
//! 1..=`spec.partitions`, and any higher partition still recorded (a
//! decrease the data-loss guard refused keeps serving them).

use std::collections::BTreeMap;
use std::sync::Arc;

use kube::api::Api;
use kube::{Client, ResourceExt};
use tonic::{Request, Response, Status};

use super::auth::{Access, Auth, Credentials, Scope};
use super::caches::Caches;
use super::error::{GrpcError, check_name, check_namespace};
use super::namespace_or_default;
use super::proto::atomix::database as pb;
use crate::api::{Database, Partition};

/// Serves DatabaseService from Database and Partition objects.
pub struct DatabaseApi {
    client: Client,
    cluster_domain: String,
    auth: Arc<Auth>,
    caches: Arc<Caches>,
}

impl DatabaseApi {
    pub fn new(
        client: Client,
        cluster_domain: String,
        auth: Arc<Auth>,
        caches: Arc<Caches>,
    ) -> Self {
        DatabaseApi {
            client,
            cluster_domain,
            auth,
            caches,
        }
    }

    /// The cached Partitions of `namespace` (every namespace if `None`) by
    /// the uid of the Database that controls them.
    async fn partitions(
        &self,
        namespace: Option<&str>,
    ) -> Result<BTreeMap<String, Vec<Partition>>, GrpcError> {
        let store = self
            .caches
            .synced(&self.caches.partitions, "Partitions")
            .await?;
        let mut by_owner: BTreeMap<String, Vec<Partition>> = BTreeMap::new();
        for p in store.state() {
            if namespace.is_some_and(|ns| p.namespace().as_deref() != Some(ns)) {
                continue;
            }
            if let Some(owner) = controller_uid(&p) {
                by_owner
                    .entry(owner)
                    .or_default()
                    .push(Partition::clone(&p));
            }
        }
        Ok(by_owner)
    }

    /// Databases and Partitions in `namespace` (every namespace if `None`)
    /// that `scope` lets the caller see.
    async fn list(
        &self,
        namespace: Option<&str>,
        scope: &Scope,
    ) -> Result<Vec<pb::Database>, GrpcError> {
        let databases = self
            .caches
            .synced(&self.caches.databases, "Databases")
            .await?
            .state();
        let by_owner = self.partitions(namespace).await?;
        let mut listed: Vec<pb::Database> = databases
            .iter()
            .filter(|db| namespace.is_none_or(|ns| db.namespace().as_deref() == Some(ns)))
            .filter(|db| scope.includes(&db.namespace().unwrap_or_default()))
            .filter_map(|db| {
                let parts = by_owner.get(&db.uid()?).map(Vec::as_slice).unwrap_or(&[]);
                match discover(db, parts, &self.cluster_domain) {
                    Discovery::Listed(database) => Some(database),
                    Discovery::Missing(_) | Discovery::Deleting => None,
                }
            })
            .collect();
        // The cache's order is a hash map's: list as a LIST did.
        listed.sort_by(|a, b| {
            let key = |d: &pb::Database| d.id.clone().map(|id| (id.namespace, id.name));
            key(a).cmp(&key(b))
        });
        Ok(listed)
    }
}

#[tonic::async_trait]
impl pb::database_service_server::DatabaseService for DatabaseApi {
    async fn get_database(
        &self,
        request: Request<pb::GetDatabaseRequest>,
    ) -> Result<Response<pb::GetDatabaseResponse>, Status> {
        let credentials = Credentials::of(&request);
        let id = request.into_inner().id.unwrap_or_default();
        check_name("id.name", &id.name)?;
        let ns = namespace_or_default(&id.namespace);
        check_namespace("id.namespace", ns)?;
        self.auth
            .check(&credentials, Access::new("get", "databases", ns))
            .await?;
        let db = Api::<Database>::namespaced(self.client.clone(), ns)
            .get_opt(&id.name)
            .await
            .map_err(GrpcError::kube(format!(
                "reading Database {ns}/{}",
                id.name
            )))?
            .ok_or_else(|| GrpcError::NotFound(format!("Database {ns}/{} not found", id.name)))?;
        let store = self
            .caches
            .synced(&self.caches.partitions, "Partitions")
            .await?;
        let owned: Vec<Partition> = store
            .state()
            .iter()
            .filter(|p| controller_uid(p).is_some() && controller_uid(p) == db.uid())
            .map(|p| Partition::clone(p))
            .collect();
        let database = match discover(&db, &owned, &self.cluster_domain) {
            Discovery::Listed(database) => database,
            Discovery::Deleting => {
                return Err(GrpcError::NotFound(format!(
                    "Database {ns}/{} is being deleted",
                    id.name
                ))
                .into());
            }
            Discovery::Missing(missing) => {
                return Err(GrpcError::Unavailable(format!(
                    "Database {ns}/{} is not served yet: partition{} {} {} no Service yet; retry (kubectl get db {} -n {ns} shows progress)",
                    id.name,
                    if missing.len() == 1 { "" } else { "s" },
                    ids(&missing),
                    if missing.len() == 1 { "has" } else { "have" },
                    id.name,
                ))
                .into());
            }
        };
        Ok(Response::new(pb::GetDatabaseResponse {
            database: Some(database),
        }))
    }

    async fn get_databases(
        &self,
        request: Request<pb::GetDatabasesRequest>,
    ) -> Result<Response<pb::GetDatabasesResponse>, Status> {
        let credentials = Credentials::of(&request);
        let namespace = request.into_inner().namespace;
        let scope = if namespace.is_empty() {
            self.auth.scope(&credentials, "list", "databases").await?
        } else {
            check_namespace("namespace", &namespace)?;
            let access = Access::new("list", "databases", &namespace);
            self.auth.check(&credentials, access).await?;
            Scope::All
        };
        let databases = self
            .list(
                (!namespace.is_empty()).then_some(namespace.as_str()),
                &scope,
            )
            .await?;
        Ok(Response::new(pb::GetDatabasesResponse { databases }))
    }
}

fn controller_uid(p: &Partition) -> Option<String> {
    p.owner_references()
        .iter()
        .find(|o| o.controller == Some(true) && o.kind == "Database")
        .map(|o| o.uid.clone())
}

/// What discovery says of one Database.
#[derive(Debug, PartialEq)]
enum Discovery {
    /// Every partition, in id order.
    Listed(pb::Database),
    /// These partitions (ids, ascending) have no Service yet.
    Missing(Vec<u32>),
    /// Being deleted.
    Deleting,
}

/// `db` as the API returns it: every partition by id, each with its
/// Service's DNS name and port, or why it is not listed.
fn discover(db: &Database, partitions: &[Partition], cluster_domain: &str) -> Discovery {
    if db.metadata.deletion_timestamp.is_some() {
        return Discovery::Deleting;
    }
    let namespace = db.namespace().unwrap_or_default();
    let served: BTreeMap<u32, &Partition> = partitions
        .iter()
        .filter(|p| p.spec.database == db.name_any())
        .filter(|p| p.status.as_ref().is_some_and(|s| !s.endpoints.is_empty()))
        .map(|p| (p.spec.partition_id, p))
        .collect();
    let recorded = partitions.iter().map(|p| p.spec.partition_id).max();
    let last = recorded.unwrap_or(0).max(db.spec.partitions);
    let missing: Vec<u32> = (1..=last).filter(|id| !served.contains_key(id)).collect();
    if !missing.is_empty() {
        return Discovery::Missing(missing);
    }
    Discovery::Listed(pb::Database {
        id: Some(pb::DatabaseId {
            name: db.name_any(),
            namespace: namespace.clone(),
        }),
        partitions: served
            .into_values()
            .map(|p| pb::Partition {
                // partition_id is at most 1024 (CRD schema), so it fits.
                partition_id: Some(pb::PartitionId {
                    partition: i32::try_from(p.spec.partition_id).unwrap_or(i32::MAX),
                }),
                endpoints: vec![pb::PartitionEndpoint {
                    host: format!("{}.{namespace}.svc.{cluster_domain}", p.spec.service_name),
                    port: i32::from(p.spec.port),
                }],
            })
            .collect(),
    })
}

/// `1, 2, 5` for a message, at most ten of them.
fn ids(ids: &[u32]) -> String {
    let mut shown: Vec<String> = ids.iter().take(10).map(u32::to_string).collect();
    if ids.len() > 10 {
        shown.push(format!("and {} more", ids.len() - 10));
    }
    shown.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{DatabaseSpec, PartitionSpec, PartitionStatusFields, StorageSpec};

    fn db() -> Database {
        let mut db = Database::new(
            "orders",
            DatabaseSpec {
                deletion_policy: None,
                pod: None,
                partitions: 3,
                storage: StorageSpec {
                    plugin: "raft".into(),
                    version: None,
                    digest: None,
                    config: None,
                },
            },
        );
        db.metadata.namespace = Some("shop".into());
        db
    }

    fn partition(id: u32, ready: bool, has_service: bool) -> Partition {
        let mut p = Partition::new(
            &format!("orders-{id}"),
            PartitionSpec {
                database: "orders".into(),
                partition_id: id,
                service_name: format!("orders-{id}"),
                port: 5678,
                placement: None,
            },
        );
        p.status = Some(PartitionStatusFields {
            ready,
            available: ready,
            endpoints: if has_service {
                vec![format!("orders-{id}.shop.svc.cluster.local:5678")]
            } else {
                vec![]
            },
        });
        p
    }

    fn listed(d: Discovery) -> pb::Database {
        match d {
            Discovery::Listed(db) => db,
            other => panic!("expected the Database listed, got {other:?}"),
        }
    }

    /// The gRPC cache keeps a trimmed Database: discovery over it answers
    /// exactly as over the whole object.
    #[test]
    fn a_trimmed_database_is_discovered_as_the_whole_one() {
        let mut whole = db();
        whole.metadata.labels = Some([("team".to_string(), "a".to_string())].into());
        whole.metadata.uid = Some("u-1".into());
        whole.spec.storage.config = Some(serde_json::json!({"replicas": 3}));
        whole.status = Some(Default::default());
        let mut trimmed = whole.clone();
        super::super::caches::trim_database(&mut trimmed);
        assert!(trimmed.status.is_none() && trimmed.spec.storage.config.is_none());
        let parts = [
            partition(1, true, true),
            partition(2, true, true),
            partition(3, false, true),
        ];
        assert_eq!(
            listed(discover(&trimmed, &parts, "cluster.local")),
            listed(discover(&whole, &parts, "cluster.local"))
        );
        let mut deleting = whole.clone();
        deleting.metadata.deletion_timestamp = Some(
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(Default::default()),
        );
        super::super::caches::trim_database(&mut deleting);
        assert!(matches!(
            discover(&deleting, &parts, "cluster.local"),
            Discovery::Deleting
        ));
    }

    #[test]
    fn every_partition_is_listed_in_id_order_ready_or_not() {
        let parts = [
            partition(3, true, true),
            partition(1, true, true),
            partition(2, false, true),
        ];
        let got = listed(discover(&db(), &parts, "example.org"));
        assert_eq!(got.id.unwrap().namespace, "shop");
        let ids: Vec<i32> = got
            .partitions
            .iter()
            .map(|p| p.partition_id.unwrap().partition)
            .collect();
        assert_eq!(ids, [1, 2, 3], "a partition that is not ready still counts");
        assert_eq!(
            got.partitions[0].endpoints,
            [pb::PartitionEndpoint {
                host: "orders-1.shop.svc.example.org".into(),
                port: 5678
            }]
        );
    }

    #[test]
    fn a_partition_without_its_service_hides_the_whole_database() {
        // Partition 2's record exists but its Service was not applied yet
        // (no endpoints); partition 3 has no record at all.
        let parts = [partition(1, true, true), partition(2, false, false)];
        assert_eq!(
            discover(&db(), &parts, "cluster.local"),
            Discovery::Missing(vec![2, 3])
        );
        assert_eq!(
            discover(&db(), &[], "cluster.local"),
            Discovery::Missing(vec![1, 2, 3])
        );
        let mut deleting = db();
        deleting.metadata.deletion_timestamp = Some(
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(Default::default()),
        );
        let all = [1, 2, 3].map(|id| partition(id, true, true));
        assert_eq!(
            discover(&deleting, &all, "cluster.local"),
            Discovery::Deleting
        );
    }

    #[test]
    fn partitions_kept_by_a_refused_decrease_are_still_listed() {
        // spec says 3, but 4 partitions still run (lowering was refused).
        let parts = [1, 2, 3, 4].map(|id| partition(id, true, true));
        let got = listed(discover(&db(), &parts, "cluster.local"));
        assert_eq!(got.partitions.len(), 4);
        let parts = [1, 2, 4].map(|id| partition(id, true, true));
        assert_eq!(
            discover(&db(), &parts, "cluster.local"),
            Discovery::Missing(vec![3])
        );
    }

    #[test]
    fn missing_ids_are_bounded_in_messages() {
        assert_eq!(ids(&[1, 2]), "1, 2");
        let many: Vec<u32> = (1..=25).collect();
        assert_eq!(ids(&many), "1, 2, 3, 4, 5, 6, 7, 8, 9, 10, and 15 more");
    }
}
