//! The user a verified client certificate names, as the Kubernetes API
//! server reads it: the subject's common name is the user name, each
//! organization a group.

use x509_parser::prelude::{FromDer, X509Certificate};

use super::User;

/// The user of DER certificate `der`.
///
/// # Errors
/// Not a certificate, or its subject has no common name.
pub fn user(der: &[u8]) -> Result<User, String> {
    let (_, cert) = X509Certificate::from_der(der)
        .map_err(|e| format!("the client certificate cannot be read: {e}"))?;
    let subject = cert.subject();
    let name = subject
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .filter(|cn| !cn.is_empty())
        .ok_or("the client certificate's subject has no common name (CN) to name its user")?;
    let groups = subject
        .iter_organization()
        .filter_map(|o| o.as_str().ok())
        .map(str::to_string)
        .collect();
    Ok(User {
        name: name.to_string(),
        uid: None,
        groups,
        extra: Default::default(),
    })
}
