//! `atomix.database.DatabaseService`: where each Database's partitions are
//! served.
//!
//! What counts as present: a Database (not being deleted) with at least one
//! ready partition. Only ready partitions are returned, so a client never
//! gets an endpoint that cannot answer; while a Database is not Ready it
//! shows the partitions that are, and with none ready it is NOT_FOUND (with
//! a message saying it exists but is not ready) and left out of
//! GetDatabases. Partitions come from the Partition records atoll keeps for
//! each Database (spec `serviceName` and `port`, status `ready`), and are
//! counted only when the Database controls them (owner uid).

use std::collections::BTreeMap;

use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};
use tonic::{Request, Response, Status};

use super::error::{GrpcError, check_name, check_namespace};
use super::namespace_or_default;
use super::proto::atomix::database as pb;
use crate::api::{Database, LABEL_DATABASE, Partition};

/// Serves DatabaseService from Database and Partition objects.
pub struct DatabaseApi {
    client: Client,
    cluster_domain: String,
}

impl DatabaseApi {
    pub fn new(client: Client, cluster_domain: String) -> Self {
        DatabaseApi {
            client,
            cluster_domain,
        }
    }

    /// Databases and Partitions in `namespace` (every namespace if `None`).
    async fn list(&self, namespace: Option<&str>) -> Result<Vec<pb::Database>, GrpcError> {
        let (databases, partitions): (Api<Database>, Api<Partition>) = match namespace {
            Some(ns) => (
                Api::namespaced(self.client.clone(), ns),
                Api::namespaced(self.client.clone(), ns),
            ),
            None => (Api::all(self.client.clone()), Api::all(self.client.clone())),
        };
        let where_ = namespace.map_or("all namespaces".to_string(), |ns| format!("namespace {ns}"));
        let databases = databases
            .list(&ListParams::default())
            .await
            .map_err(GrpcError::kube(format!("listing Databases in {where_}")))?;
        let partitions = partitions
            .list(&ListParams::default().labels(LABEL_DATABASE))
            .await
            .map_err(GrpcError::kube(format!("listing Partitions in {where_}")))?;
        let mut by_owner: BTreeMap<String, Vec<Partition>> = BTreeMap::new();
        for p in partitions {
            if let Some(owner) = controller_uid(&p) {
                by_owner.entry(owner).or_default().push(p);
            }
        }
        Ok(databases
            .iter()
            .filter_map(|db| {
                let parts = by_owner.get(&db.uid()?).map(Vec::as_slice).unwrap_or(&[]);
                present(db, parts, &self.cluster_domain)
            })
            .collect())
    }
}

#[tonic::async_trait]
impl pb::database_service_server::DatabaseService for DatabaseApi {
    async fn get_database(
        &self,
        request: Request<pb::GetDatabaseRequest>,
    ) -> Result<Response<pb::GetDatabaseResponse>, Status> {
        let id = request.into_inner().id.unwrap_or_default();
        check_name("id.name", &id.name)?;
        let ns = namespace_or_default(&id.namespace);
        check_namespace("id.namespace", ns)?;
        let db = Api::<Database>::namespaced(self.client.clone(), ns)
            .get_opt(&id.name)
            .await
            .map_err(GrpcError::kube(format!(
                "reading Database {ns}/{}",
                id.name
            )))?
            .ok_or_else(|| GrpcError::NotFound(format!("Database {ns}/{} not found", id.name)))?;
        let partitions = Api::<Partition>::namespaced(self.client.clone(), ns)
            .list(&ListParams::default().labels(&format!("{LABEL_DATABASE}={}", id.name)))
            .await
            .map_err(GrpcError::kube(format!(
                "listing Partitions of {ns}/{}",
                id.name
            )))?;
        let owned: Vec<Partition> = partitions
            .into_iter()
            .filter(|p| controller_uid(p).is_some() && controller_uid(p) == db.uid())
            .collect();
        let database = present(&db, &owned, &self.cluster_domain).ok_or_else(|| {
            GrpcError::NotFound(format!(
                "Database {ns}/{} exists but has no ready partition yet (kubectl get db {} -n {ns} shows why)",
                id.name, id.name
            ))
        })?;
        Ok(Response::new(pb::GetDatabaseResponse {
            database: Some(database),
        }))
    }

    async fn get_databases(
        &self,
        request: Request<pb::GetDatabasesRequest>,
    ) -> Result<Response<pb::GetDatabasesResponse>, Status> {
        let namespace = request.into_inner().namespace;
        if !namespace.is_empty() {
            check_namespace("namespace", &namespace)?;
        }
        let databases = self
            .list((!namespace.is_empty()).then_some(namespace.as_str()))
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

/// `db` as the API returns it: its ready partitions by id, each with its
/// Service's DNS name and port; `None` when it is not present (being
/// deleted, or no ready partition).
fn present(db: &Database, partitions: &[Partition], cluster_domain: &str) -> Option<pb::Database> {
    if db.metadata.deletion_timestamp.is_some() {
        return None;
    }
    let namespace = db.namespace().unwrap_or_default();
    let mut ready: Vec<&Partition> = partitions
        .iter()
        .filter(|p| p.status.as_ref().is_some_and(|s| s.ready))
        .filter(|p| p.spec.database == db.name_any())
        .collect();
    if ready.is_empty() {
        return None;
    }
    ready.sort_by_key(|p| p.spec.partition_id);
    ready.dedup_by_key(|p| p.spec.partition_id);
    Some(pb::Database {
        id: Some(pb::DatabaseId {
            name: db.name_any(),
            namespace: namespace.clone(),
        }),
        partitions: ready
            .into_iter()
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
                    config: None,
                },
            },
        );
        db.metadata.namespace = Some("shop".into());
        db
    }

    fn partition(id: u32, ready: bool) -> Partition {
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
            endpoints: vec![],
        });
        p
    }

    #[test]
    fn only_ready_partitions_are_present_with_dns_names() {
        let parts = [partition(3, true), partition(1, true), partition(2, false)];
        let got = present(&db(), &parts, "example.org").unwrap();
        assert_eq!(got.id.unwrap().namespace, "shop");
        let ids: Vec<i32> = got
            .partitions
            .iter()
            .map(|p| p.partition_id.unwrap().partition)
            .collect();
        assert_eq!(ids, [1, 3]);
        assert_eq!(
            got.partitions[0].endpoints,
            [pb::PartitionEndpoint {
                host: "orders-1.shop.svc.example.org".into(),
                port: 5678
            }]
        );
    }

    #[test]
    fn a_database_without_ready_partitions_is_absent() {
        assert!(present(&db(), &[partition(1, false)], "cluster.local").is_none());
        assert!(present(&db(), &[], "cluster.local").is_none());
        let mut deleting = db();
        deleting.metadata.deletion_timestamp = Some(
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(Default::default()),
        );
        assert!(present(&deleting, &[partition(1, true)], "cluster.local").is_none());
    }
}
