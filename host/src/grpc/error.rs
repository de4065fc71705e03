//! One error type for every gRPC method, mapped to the status code a gRPC
//! user expects; plus the name checks requests go through.

use tonic::{Code, Status};

/// Why a gRPC request failed.
#[derive(Debug, thiserror::Error)]
pub enum GrpcError {
    /// The request itself is wrong (empty or malformed name, bad enum value).
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    /// The request is fine but the state it needs is not there (e.g. a
    /// plugin that refuses to render).
    #[error("{0}")]
    FailedPrecondition(String),
    /// Not served yet; the caller should retry (a Database whose partitions
    /// do not all have their Service).
    #[error("{0}")]
    Unavailable(String),
    /// A Kubernetes API call failed, with what atoll was doing.
    #[error("{doing}: {source}")]
    Kube { doing: String, source: kube::Error },
    #[error("{0}")]
    Internal(String),
}

impl GrpcError {
    /// Wrap a Kubernetes API error with what was being done.
    pub fn kube(doing: impl Into<String>) -> impl FnOnce(kube::Error) -> GrpcError {
        let doing = doing.into();
        move |source| GrpcError::Kube { doing, source }
    }

    /// The gRPC code for this error.
    pub fn code(&self) -> Code {
        match self {
            GrpcError::Invalid(_) => Code::InvalidArgument,
            GrpcError::NotFound(_) => Code::NotFound,
            GrpcError::AlreadyExists(_) => Code::AlreadyExists,
            GrpcError::FailedPrecondition(_) => Code::FailedPrecondition,
            GrpcError::Unavailable(_) => Code::Unavailable,
            GrpcError::Internal(_) => Code::Internal,
            GrpcError::Kube { source, .. } => match source {
                kube::Error::Api(status) => match status.code {
                    400 | 422 => Code::InvalidArgument,
                    // atoll's own RBAC does not allow it (e.g. a namespace
                    // outside a single-namespace install).
                    401 | 403 => Code::PermissionDenied,
                    404 => Code::NotFound,
                    409 => Code::Aborted,
                    429 => Code::ResourceExhausted,
                    _ => Code::Unavailable,
                },
                _ => Code::Unavailable,
            },
        }
    }
}

/// Longest status message sent, in bytes. The message travels in the
/// `grpc-message` trailer, percent-encoded (up to three times longer), and
/// clients refuse header blocks over their limit (grpc-java: 8 KiB) with an
/// error that hides the real status; a request echoed back whole (a 3 MiB
/// name) must not turn into that.
pub const MAX_STATUS_MESSAGE: usize = 1024;

impl From<GrpcError> for Status {
    fn from(e: GrpcError) -> Status {
        Status::new(e.code(), truncate(e.to_string(), MAX_STATUS_MESSAGE))
    }
}

/// `text` cut to at most `max` bytes (on a character boundary), saying how
/// much was left out.
fn truncate(mut text: String, max: usize) -> String {
    if text.len() <= max {
        return text;
    }
    let total = text.len();
    let mut end = max.saturating_sub(40);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    text.push_str(&format!("... ({} more bytes)", total - end));
    text
}

/// A request value as shown in an error message: quoted, and cut short
/// when long (names are at most 253 bytes; a longer value is shown only in
/// part).
fn shown(value: &str) -> String {
    const MAX: usize = 64;
    if value.len() <= MAX {
        return format!("{value:?}");
    }
    let mut end = MAX;
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    format!("{:?}... ({} bytes)", &value[..end], value.len())
}

/// `value` is a Kubernetes object name (RFC 1123 subdomain: lower-case
/// alphanumerics, `-` and `.`, starting and ending alphanumeric, at most 253).
pub fn check_name(field: &str, value: &str) -> Result<(), GrpcError> {
    check_dns(field, value, 253, true)
}

/// `value` is a namespace name (RFC 1123 label, at most 63).
pub fn check_namespace(field: &str, value: &str) -> Result<(), GrpcError> {
    check_dns(field, value, 63, false)
}

fn check_dns(field: &str, value: &str, max: usize, dots: bool) -> Result<(), GrpcError> {
    if value.is_empty() {
        return Err(GrpcError::Invalid(format!("{field} is required")));
    }
    let allowed =
        |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || (dots && c == '.');
    let edge_ok = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if value.len() > max
        || !value.chars().all(allowed)
        || !edge_ok(value.chars().next())
        || !edge_ok(value.chars().last())
    {
        return Err(GrpcError::Invalid(format!(
            "{field} {} is not a valid Kubernetes name: use at most {max} lower-case letters, digits{}, and '-', starting and ending with a letter or digit",
            shown(value),
            if dots { ", '.'" } else { "" }
        )));
    }
    Ok(())
}

/// `value` can be a label value (at most 63 of alphanumerics, `-`, `_` and
/// `.`, starting and ending alphanumeric): group names are, so members can
/// be found by label.
pub fn check_label_value(field: &str, value: &str) -> Result<(), GrpcError> {
    if value.is_empty() {
        return Err(GrpcError::Invalid(format!("{field} is required")));
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    let edge_ok = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    if value.len() > 63
        || !value.chars().all(allowed)
        || !edge_ok(value.chars().next())
        || !edge_ok(value.chars().last())
    {
        return Err(GrpcError::Invalid(format!(
            "{field} {} is not valid: use at most 63 letters, digits, '-', '_' and '.', starting and ending with a letter or digit",
            shown(value)
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_kubernetes_rules() {
        assert!(check_name("n", "orders").is_ok());
        assert!(check_name("n", "a.b-1").is_ok());
        for bad in ["", "Orders", "-a", "a-", "a_b", "a b", &"a".repeat(254)] {
            let e = check_name("primitive.name", bad).unwrap_err();
            assert_eq!(e.code(), Code::InvalidArgument, "{bad:?}");
        }
        assert!(
            check_name("primitive.name", "")
                .unwrap_err()
                .to_string()
                .contains("primitive.name is required")
        );
        assert!(check_namespace("ns", "a.b").is_err());
        assert!(check_namespace("ns", &"a".repeat(64)).is_err());
        assert!(check_namespace("ns", &"a".repeat(63)).is_ok());
    }

    #[test]
    fn label_values_allow_case_and_underscores() {
        assert!(check_label_value("g", "My_Group.1").is_ok());
        for bad in ["", "_a", "a/b", &"a".repeat(64)] {
            assert!(check_label_value("g", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn kubernetes_errors_map_to_grpc_codes() {
        let api = |code| {
            GrpcError::kube("doing")(kube::Error::Api(
                kube::core::Status::failure("m", "r")
                    .with_code(code)
                    .boxed(),
            ))
        };
        assert_eq!(api(404).code(), Code::NotFound);
        assert_eq!(api(403).code(), Code::PermissionDenied);
        assert_eq!(api(422).code(), Code::InvalidArgument);
        assert_eq!(api(500).code(), Code::Unavailable);
        let status = Status::from(GrpcError::AlreadyExists("x exists".into()));
        assert_eq!(status.code(), Code::AlreadyExists);
        assert_eq!(status.message(), "x exists");
    }

    #[test]
    fn long_values_are_not_echoed_whole() {
        let huge = "é".repeat(1 << 20);
        let message = check_name("member.id.name", &huge).unwrap_err().to_string();
        assert!(message.len() < 400, "{}", message.len());
        assert!(message.contains("(2097152 bytes)"), "{message}");
        let message = check_label_value("group_id.name", &huge)
            .unwrap_err()
            .to_string();
        assert!(message.len() < 400, "{}", message.len());

        let status = Status::from(GrpcError::Invalid(huge.clone()));
        assert!(status.message().len() <= MAX_STATUS_MESSAGE);
        assert!(status.message().ends_with("more bytes)"));
        let short = Status::from(GrpcError::Invalid("short".into()));
        assert_eq!(short.message(), "short");
    }
}
