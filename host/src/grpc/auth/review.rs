//! The Kubernetes API server's own answers: `TokenReview` says who a
//! bearer token belongs to, `SubjectAccessReview` whether that user may do
//! something. atoll parses no token itself.

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::Client;
use kube::api::{Api, PostParams};

use super::{Access, User};
use crate::api::GROUP;

/// The audience a token must carry: a token minted for another service (or
/// the API server's default audience) is refused, so a token that leaks
/// from atoll's callers cannot be replayed elsewhere and vice versa.
pub const AUDIENCE: &str = "atoll";

/// Who `token` belongs to, or why it is not accepted.
///
/// # Errors
/// `Ok(Err(reason))`: the API server does not accept the token (expired,
/// wrong audience, unknown); `Err`: the review itself failed.
pub async fn token(client: &Client, token: &str) -> Result<Result<User, String>, kube::Error> {
    let review = TokenReview {
        spec: TokenReviewSpec {
            token: Some(token.to_string()),
            audiences: Some(vec![AUDIENCE.to_string()]),
        },
        ..TokenReview::default()
    };
    let reviewed = Api::<TokenReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await?;
    let status = reviewed.status.unwrap_or_default();
    if status.authenticated != Some(true) {
        let why = status
            .error
            .filter(|e| !e.is_empty())
            .unwrap_or_else(|| "not authenticated".into());
        return Ok(Err(why));
    }
    // An authenticator that ignores audiences answers without them: then
    // the token is not known to be meant for atoll.
    let audiences = status.audiences.unwrap_or_default();
    if !audiences.iter().any(|a| a == AUDIENCE) {
        return Ok(Err(format!(
            "the token's audiences ({}) do not include {AUDIENCE}",
            audiences.join(", ")
        )));
    }
    let user = status.user.unwrap_or_default();
    Ok(Ok(User {
        name: user.username.unwrap_or_default(),
        uid: user.uid,
        groups: user.groups.unwrap_or_default(),
        extra: user.extra.unwrap_or_default().into_iter().collect(),
    }))
}

/// Whether `user` may do `access`.
///
/// # Errors
/// The review itself failed.
pub async fn access(client: &Client, user: &User, access: &Access) -> Result<bool, kube::Error> {
    let review = SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: Some(user.name.clone()),
            uid: user.uid.clone(),
            groups: Some(user.groups.clone()),
            extra: (!user.extra.is_empty()).then(|| user.extra.clone().into_iter().collect()),
            resource_attributes: Some(ResourceAttributes {
                group: Some(GROUP.to_string()),
                resource: Some(access.resource.to_string()),
                verb: Some(access.verb.to_string()),
                namespace: access.namespace.clone(),
                ..ResourceAttributes::default()
            }),
            ..SubjectAccessReviewSpec::default()
        },
        ..SubjectAccessReview::default()
    };
    let reviewed = Api::<SubjectAccessReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await?;
    Ok(reviewed.status.is_some_and(|s| s.allowed))
}
