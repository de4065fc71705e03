//! `atomix.primitive.PrimitiveService`: primitives registered in Databases,
//! one Primitive object each, named after the primitive, in the primitive's
//! namespace (the Database's when the request leaves it empty, `default`
//! when both are empty). `GetPrimitives` answers from the watch cache
//! ([`Caches`]); the calls that name one primitive read the API server.

use std::sync::Arc;

use kube::api::{Api, DeleteParams, PostParams};
use kube::{Client, ResourceExt};
use tonic::{Request, Response, Status};

use super::auth::{Access, Auth, Credentials, Scope};
use super::caches::Caches;
use super::error::{GrpcError, check_name, check_namespace};
use super::proto::atomix::database::DatabaseId;
use super::proto::atomix::primitive as pb;
use crate::api::{Database, DatabaseRef, Primitive, PrimitiveSpec, PrimitiveType};

/// Serves PrimitiveService from Primitive objects.
pub struct PrimitiveApi {
    client: Client,
    auth: Arc<Auth>,
    caches: Arc<Caches>,
}

impl PrimitiveApi {
    pub fn new(client: Client, auth: Arc<Auth>, caches: Arc<Caches>) -> Self {
        PrimitiveApi {
            client,
            auth,
            caches,
        }
    }

    /// Check the caller may `verb` primitives in the namespace of `target`.
    async fn allow(
        &self,
        credentials: &Credentials,
        verb: &'static str,
        target: &Target,
    ) -> Result<(), Status> {
        let access = Access::new(verb, "primitives", &target.namespace);
        self.auth.check(credentials, access).await
    }

    fn api(&self, namespace: &str) -> Api<Primitive> {
        Api::namespaced(self.client.clone(), namespace)
    }

    /// The Primitive `target` names, which must belong to its Database.
    async fn find(&self, target: &Target) -> Result<Primitive, GrpcError> {
        let found = self
            .api(&target.namespace)
            .get_opt(&target.name)
            .await
            .map_err(GrpcError::kube(format!("reading Primitive {target}")))?;
        match found {
            Some(p) if p.spec.database == target.database => Ok(p),
            _ => Err(GrpcError::NotFound(format!(
                "primitive {target} not found in Database {}/{}",
                target.database.namespace, target.database.name
            ))),
        }
    }
}

#[tonic::async_trait]
impl pb::primitive_service_server::PrimitiveService for PrimitiveApi {
    async fn create_primitive(
        &self,
        request: Request<pb::CreatePrimitiveRequest>,
    ) -> Result<Response<pb::CreatePrimitiveResponse>, Status> {
        let credentials = Credentials::of(&request);
        let req = request.into_inner();
        let target = Target::from_request(req.database, req.primitive)?;
        self.allow(&credentials, "create", &target).await?;
        let type_ = primitive_type(req.r#type, "type")?
            .ok_or_else(|| GrpcError::Invalid("type is required (not UNKNOWN)".into()))?;
        let db = &target.database;
        let exists = Api::<Database>::namespaced(self.client.clone(), &db.namespace)
            .get_opt(&db.name)
            .await
            .map_err(GrpcError::kube(format!(
                "reading Database {}/{}",
                db.namespace, db.name
            )))?;
        if exists.is_none() {
            return Err(GrpcError::NotFound(format!(
                "Database {}/{} not found",
                db.namespace, db.name
            ))
            .into());
        }
        let mut object = Primitive::new(
            &target.name,
            PrimitiveSpec {
                database: target.database.clone(),
                type_,
            },
        );
        object.metadata.namespace = Some(target.namespace.clone());
        let created = match self
            .api(&target.namespace)
            .create(&PostParams::default(), &object)
            .await
        {
            Ok(created) => created,
            Err(kube::Error::Api(s)) if s.code == 409 => {
                return Err(
                    GrpcError::AlreadyExists(format!("primitive {target} already exists")).into(),
                );
            }
            Err(e) => return Err(GrpcError::kube(format!("creating Primitive {target}"))(e).into()),
        };
        Ok(Response::new(pb::CreatePrimitiveResponse {
            primitive: Some(metadata(&created)),
        }))
    }

    async fn get_primitive(
        &self,
        request: Request<pb::GetPrimitiveRequest>,
    ) -> Result<Response<pb::GetPrimitiveResponse>, Status> {
        let credentials = Credentials::of(&request);
        let req = request.into_inner();
        let target = Target::from_request(req.database, req.primitive)?;
        self.allow(&credentials, "get", &target).await?;
        let found = self.find(&target).await?;
        Ok(Response::new(pb::GetPrimitiveResponse {
            primitive: Some(metadata(&found)),
        }))
    }

    async fn get_primitives(
        &self,
        request: Request<pb::GetPrimitivesRequest>,
    ) -> Result<Response<pb::GetPrimitivesResponse>, Status> {
        let credentials = Credentials::of(&request);
        let filter = Filter::from_request(request.into_inner())?;
        let scope = match &filter.namespace {
            Some(ns) => {
                let access = Access::new("list", "primitives", ns);
                self.auth.check(&credentials, access).await?;
                Scope::All
            }
            None => self.auth.scope(&credentials, "list", "primitives").await?,
        };
        let list = self
            .caches
            .synced(&self.caches.primitives, "Primitives")
            .await?
            .state();
        let mut primitives: Vec<pb::PrimitiveMetadata> = list
            .iter()
            .filter(|p| filter.matches(p))
            .filter(|p| {
                let ns = filter.namespace.as_deref();
                ns.is_none_or(|ns| p.namespace().as_deref() == Some(ns))
            })
            .filter(|p| scope.includes(&p.namespace().unwrap_or_default()))
            .map(|p| metadata(p))
            .collect();
        primitives.sort_by_key(|p| {
            let id = p.primitive.clone().unwrap_or_default();
            (id.namespace, id.name)
        });
        Ok(Response::new(pb::GetPrimitivesResponse { primitives }))
    }

    async fn delete_primitive(
        &self,
        request: Request<pb::DeletePrimitiveRequest>,
    ) -> Result<Response<pb::DeletePrimitiveResponse>, Status> {
        let credentials = Credentials::of(&request);
        let req = request.into_inner();
        let target = Target::from_request(req.database, req.primitive)?;
        self.allow(&credentials, "delete", &target).await?;
        let found = self.find(&target).await?;
        // The uid precondition: delete what was checked, not a newer one.
        let params = DeleteParams {
            preconditions: found.uid().map(|uid| kube::api::Preconditions {
                uid: Some(uid),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match self
            .api(&target.namespace)
            .delete(&target.name, &params)
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {
                return Err(GrpcError::NotFound(format!("primitive {target} not found")).into());
            }
            Err(e) => return Err(GrpcError::kube(format!("deleting Primitive {target}"))(e).into()),
        }
        Ok(Response::new(pb::DeletePrimitiveResponse {
            primitive: Some(metadata(&found)),
        }))
    }
}

/// A primitive named in a Create/Get/Delete request, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Target {
    database: DatabaseRef,
    namespace: String,
    name: String,
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

impl Target {
    fn from_request(
        database: Option<DatabaseId>,
        primitive: Option<pb::PrimitiveId>,
    ) -> Result<Target, GrpcError> {
        let database = database.unwrap_or_default();
        let primitive = primitive.unwrap_or_default();
        check_name("database.name", &database.name)?;
        check_name("primitive.name", &primitive.name)?;
        let db_namespace = super::namespace_or_default(&database.namespace).to_string();
        check_namespace("database.namespace", &db_namespace)?;
        let namespace = if primitive.namespace.is_empty() {
            db_namespace.clone()
        } else {
            check_namespace("primitive.namespace", &primitive.namespace)?;
            primitive.namespace
        };
        Ok(Target {
            database: DatabaseRef {
                name: database.name,
                namespace: db_namespace,
            },
            namespace,
            name: primitive.name,
        })
    }
}

/// GetPrimitives' filters; empty fields match everything.
#[derive(Debug, Default, PartialEq, Eq)]
struct Filter {
    database_name: Option<String>,
    database_namespace: Option<String>,
    name: Option<String>,
    /// Limits the list to one namespace.
    namespace: Option<String>,
    type_: Option<PrimitiveType>,
}

impl Filter {
    fn from_request(req: pb::GetPrimitivesRequest) -> Result<Filter, GrpcError> {
        let database = req.database.unwrap_or_default();
        let primitive = req.primitive.unwrap_or_default();
        let set = |s: String| (!s.is_empty()).then_some(s);
        let filter = Filter {
            database_name: set(database.name),
            database_namespace: set(database.namespace),
            name: set(primitive.name),
            namespace: set(primitive.namespace),
            type_: primitive_type(req.r#type, "type")?,
        };
        if let Some(ns) = &filter.namespace {
            check_namespace("primitive.namespace", ns)?;
        }
        Ok(filter)
    }

    fn matches(&self, p: &Primitive) -> bool {
        let is = |want: &Option<String>, got: &str| want.as_deref().is_none_or(|w| w == got);
        is(&self.database_name, &p.spec.database.name)
            && is(&self.database_namespace, &p.spec.database.namespace)
            && is(&self.name, &p.name_any())
            && self.type_.is_none_or(|t| t == p.spec.type_)
    }
}

/// The API's type for a wire value: `None` for UNKNOWN (0), INVALID_ARGUMENT
/// for a number the enum does not define.
fn primitive_type(value: i32, field: &str) -> Result<Option<PrimitiveType>, GrpcError> {
    use pb::PrimitiveType as W;
    let wire = W::try_from(value).map_err(|_| {
        GrpcError::Invalid(format!("{field} {value} is not a PrimitiveType (0-10)"))
    })?;
    Ok(Some(match wire {
        W::Unknown => return Ok(None),
        W::Counter => PrimitiveType::Counter,
        W::Election => PrimitiveType::Election,
        W::IndexedMap => PrimitiveType::IndexedMap,
        W::LeaderLatch => PrimitiveType::LeaderLatch,
        W::List => PrimitiveType::List,
        W::Lock => PrimitiveType::Lock,
        W::Log => PrimitiveType::Log,
        W::Map => PrimitiveType::Map,
        W::Set => PrimitiveType::Set,
        W::Value => PrimitiveType::Value,
    }))
}

fn wire_type(t: PrimitiveType) -> pb::PrimitiveType {
    use pb::PrimitiveType as W;
    match t {
        PrimitiveType::Counter => W::Counter,
        PrimitiveType::Election => W::Election,
        PrimitiveType::IndexedMap => W::IndexedMap,
        PrimitiveType::LeaderLatch => W::LeaderLatch,
        PrimitiveType::List => W::List,
        PrimitiveType::Lock => W::Lock,
        PrimitiveType::Log => W::Log,
        PrimitiveType::Map => W::Map,
        PrimitiveType::Set => W::Set,
        PrimitiveType::Value => W::Value,
    }
}

fn metadata(p: &Primitive) -> pb::PrimitiveMetadata {
    pb::PrimitiveMetadata {
        database: Some(DatabaseId {
            name: p.spec.database.name.clone(),
            namespace: p.spec.database.namespace.clone(),
        }),
        primitive: Some(pb::PrimitiveId {
            name: p.name_any(),
            namespace: p.namespace().unwrap_or_default(),
        }),
        r#type: wire_type(p.spec.type_) as i32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_type_round_trips_and_unknown_values_are_refused() {
        assert_eq!(primitive_type(0, "type").unwrap(), None);
        for value in 1..=10 {
            let t = primitive_type(value, "type").unwrap().unwrap();
            assert_eq!(wire_type(t) as i32, value);
        }
        for value in [-1, 11, i32::MAX] {
            let e = primitive_type(value, "type").unwrap_err();
            assert_eq!(e.code(), tonic::Code::InvalidArgument);
            assert!(e.to_string().contains(&value.to_string()), "{e}");
        }
        // The wire names are the API's serialised names.
        let api = serde_json::to_value(PrimitiveType::IndexedMap).unwrap();
        assert_eq!(api, pb::PrimitiveType::IndexedMap.as_str_name());
    }

    #[test]
    fn targets_default_namespaces_and_require_names() {
        let db = |name: &str, ns: &str| {
            Some(DatabaseId {
                name: name.into(),
                namespace: ns.into(),
            })
        };
        let prim = |name: &str, ns: &str| {
            Some(pb::PrimitiveId {
                name: name.into(),
                namespace: ns.into(),
            })
        };
        let t = Target::from_request(db("orders", ""), prim("counter", "")).unwrap();
        assert_eq!(
            (t.namespace.as_str(), t.database.namespace.as_str()),
            ("default", "default")
        );
        let t = Target::from_request(db("orders", "shop"), prim("counter", "")).unwrap();
        assert_eq!(t.namespace, "shop");
        let t = Target::from_request(db("orders", "shop"), prim("counter", "apps")).unwrap();
        assert_eq!(t.namespace, "apps");
        for (d, p) in [
            (db("", "x"), prim("c", "")),
            (db("o", ""), prim("", "")),
            (None, prim("c", "")),
            (db("o", ""), None),
            (db("o", "Bad"), prim("c", "")),
        ] {
            let e = Target::from_request(d, p).unwrap_err();
            assert_eq!(e.code(), tonic::Code::InvalidArgument);
        }
    }

    #[test]
    fn filters_match_on_what_is_set() {
        let mut p = Primitive::new(
            "c",
            PrimitiveSpec {
                database: DatabaseRef {
                    name: "orders".into(),
                    namespace: "shop".into(),
                },
                type_: PrimitiveType::Counter,
            },
        );
        p.metadata.namespace = Some("shop".into());
        assert!(Filter::default().matches(&p));
        let by = |f: Filter| f.matches(&p);
        assert!(by(Filter {
            database_name: Some("orders".into()),
            ..Filter::default()
        }));
        assert!(!by(Filter {
            database_name: Some("other".into()),
            ..Filter::default()
        }));
        assert!(!by(Filter {
            database_namespace: Some("x".into()),
            ..Filter::default()
        }));
        assert!(by(Filter {
            name: Some("c".into()),
            ..Filter::default()
        }));
        assert!(!by(Filter {
            type_: Some(PrimitiveType::Map),
            ..Filter::default()
        }));
        let e = Filter::from_request(pb::GetPrimitivesRequest {
            r#type: 99,
            ..Default::default()
        });
        assert!(e.is_err());
    }
}
