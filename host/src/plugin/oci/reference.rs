//! OCI references: `registry/repository:tag`, `registry/repository@sha256:…`
//! and `registry/repository:tag@sha256:…`, with the registry rules of
//! `docker pull` (a first component holding `.` or `:`, or `localhost`, is a
//! registry; otherwise the reference is on Docker Hub).

use std::fmt;

use super::OciError;
use crate::contract::Digest;

/// Docker Hub's name in references and pull Secrets.
pub(super) const DOCKER_HUB: &str = "docker.io";
/// Docker Hub's API host (`docker.io` itself does not serve `/v2/`).
const DOCKER_HUB_API: &str = "registry-1.docker.io";

/// A parsed OCI reference. It always names a tag or a digest: a plugin
/// pulled by an implicit `latest` would change under a running fleet without
/// anyone having asked for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    registry: String,
    repository: String,
    tag: Option<String>,
    digest: Option<Digest>,
}

impl Reference {
    /// Parses `[registry/]repository[:tag][@sha256:hex]`.
    ///
    /// # Errors
    /// [`OciError::InvalidReference`] naming the part that is wrong
    /// (`registry`, `repository`, `tag` or `digest`) and what is expected of it.
    pub fn parse(text: &str) -> Result<Self, OciError> {
        let bad = |part: &'static str, reason: String| OciError::InvalidReference {
            reference: text.to_owned(),
            part,
            reason,
        };
        let text_trimmed = text.trim();
        if text_trimmed.is_empty() {
            return Err(bad("repository", "the reference is empty".into()));
        }
        if text_trimmed.contains("://") {
            return Err(bad(
                "registry",
                "a reference has no scheme: write `registry.example.com/repo:tag` \
                 (plain HTTP is chosen by the insecure-registry policy, not the reference)"
                    .into(),
            ));
        }
        let (name_and_tag, digest) = match text_trimmed.split_once('@') {
            Some((left, digest)) => (
                left,
                Some(parse_digest(digest).map_err(|r| bad("digest", r))?),
            ),
            None => (text_trimmed, None),
        };
        let (registry, rest) = match name_and_tag.split_once('/') {
            Some((first, rest))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (first.to_owned(), rest)
            }
            _ => (DOCKER_HUB.to_owned(), name_and_tag),
        };
        check_registry(&registry).map_err(|r| bad("registry", r))?;
        // The tag is after the last `:` of the last path component.
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (repository, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
            None => (rest, None),
        };
        check_repository(repository).map_err(|r| bad("repository", r))?;
        if let Some(tag) = tag {
            check_tag(tag).map_err(|r| bad("tag", r))?;
        }
        if tag.is_none() && digest.is_none() {
            return Err(bad(
                "tag",
                "the reference names neither a tag nor a digest: add `:TAG` or `@sha256:DIGEST` \
                 (atoll does not assume `latest`)"
                    .into(),
            ));
        }
        let repository = if registry == DOCKER_HUB && !repository.contains('/') {
            format!("library/{repository}")
        } else {
            repository.to_owned()
        };
        Ok(Self {
            registry,
            repository,
            tag: tag.map(str::to_owned),
            digest,
        })
    }

    /// The registry as written (`host[:port]`, `docker.io` for Docker Hub):
    /// the key pull Secrets use.
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// The host and port requests go to (Docker Hub's API host for `docker.io`).
    pub fn api_host(&self) -> &str {
        if self.registry == DOCKER_HUB {
            DOCKER_HUB_API
        } else {
            &self.registry
        }
    }

    pub fn repository(&self) -> &str {
        &self.repository
    }

    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    /// The pinned manifest digest, if any.
    pub fn digest(&self) -> Option<Digest> {
        self.digest
    }

    /// The same repository at another tag, without a digest (for pushing).
    ///
    /// # Errors
    /// [`OciError::InvalidReference`] when `tag` is not a valid tag.
    pub fn with_tag(&self, tag: &str) -> Result<Self, OciError> {
        check_tag(tag).map_err(|reason| OciError::InvalidReference {
            reference: format!("{}/{}:{tag}", self.registry, self.repository),
            part: "tag",
            reason,
        })?;
        Ok(Self {
            tag: Some(tag.to_owned()),
            digest: None,
            ..self.clone()
        })
    }

    /// The same reference (tag kept) pinned to `digest`.
    pub fn pinned(&self, digest: Digest) -> Self {
        Self {
            digest: Some(digest),
            ..self.clone()
        }
    }

    /// The same repository pinned to `digest` (no tag).
    pub fn with_digest(&self, digest: Digest) -> Self {
        Self {
            tag: None,
            digest: Some(digest),
            ..self.clone()
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

/// `sha256:<64 lowercase hex>`; the only algorithm atoll verifies.
pub(super) fn parse_digest(text: &str) -> Result<Digest, String> {
    let Some((algorithm, hex)) = text.split_once(':') else {
        return Err(format!("`{text}` is not `sha256:<64 hex digits>`"));
    };
    if algorithm != "sha256" {
        return Err(format!(
            "digest algorithm `{algorithm}` is not supported: atoll verifies sha256 only"
        ));
    }
    if hex.len() != 64
        || !hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(format!(
            "`{hex}` is not 64 lowercase hex digits (a sha256 digest)"
        ));
    }
    let mut bytes = [0u8; 32];
    hex::decode_to_slice(hex, &mut bytes).map_err(|e| format!("`{hex}`: {e}"))?;
    Ok(Digest(bytes))
}

fn check_registry(registry: &str) -> Result<(), String> {
    let (host, port) = match registry.rsplit_once(':') {
        // `[::1]:5000`: the port is after the closing bracket.
        Some((host, port)) if !port.contains(']') => (host, Some(port)),
        _ => (registry, None),
    };
    let host_ok = if let Some(inner) = host.strip_prefix('[') {
        inner
            .strip_suffix(']')
            .is_some_and(|ip| ip.parse::<std::net::Ipv6Addr>().is_ok())
    } else {
        !host.is_empty()
            && host.split('.').all(|label| {
                !label.is_empty()
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            })
    };
    if !host_ok {
        return Err(format!(
            "`{registry}` is not `host[:port]` (a DNS name, an IPv4 address or a bracketed IPv6 address)"
        ));
    }
    if let Some(port) = port
        && port.parse::<u16>().map_or(true, |p| p == 0)
    {
        return Err(format!(
            "`{port}` in `{registry}` is not a port number (1-65535)"
        ));
    }
    Ok(())
}

/// Path components of lowercase letters and digits, joined by `.`, `_`,
/// `__` or runs of `-` (the distribution spec's grammar).
fn check_repository(repository: &str) -> Result<(), String> {
    if repository.is_empty() {
        return Err("the repository is empty: write `registry/repository:tag`".into());
    }
    if repository.len() > 255 {
        return Err(format!(
            "the repository is {} characters long; at most 255",
            repository.len()
        ));
    }
    for component in repository.split('/') {
        if !component_ok(component) {
            return Err(format!(
                "component `{component}` of `{repository}` must be lowercase letters and digits, \
                 separated by `.`, `_`, `__` or dashes, starting and ending with a letter or digit"
            ));
        }
    }
    Ok(())
}

fn component_ok(component: &str) -> bool {
    let bytes = component.as_bytes();
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if bytes.is_empty() || !alnum(bytes[0]) || !alnum(bytes[bytes.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < bytes.len() {
        if alnum(bytes[i]) {
            i += 1;
            continue;
        }
        // A separator: `.`, `_`, `__` or one or more `-`, then a letter or digit.
        let start = i;
        match bytes[i] {
            b'.' => i += 1,
            b'_' => {
                i += 1;
                if bytes.get(i) == Some(&b'_') {
                    i += 1;
                }
            }
            b'-' => {
                while bytes.get(i) == Some(&b'-') {
                    i += 1;
                }
            }
            _ => return false,
        }
        if i == start || !bytes.get(i).copied().is_some_and(alnum) {
            return false;
        }
    }
    true
}

/// `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
fn check_tag(tag: &str) -> Result<(), String> {
    let bytes = tag.as_bytes();
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let ok = !bytes.is_empty()
        && bytes.len() <= 128
        && word(bytes[0])
        && bytes.iter().all(|&b| word(b) || b == b'.' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{tag}` is not a tag: 1-128 letters, digits, `_`, `.` or `-`, not starting with `.` or `-`"
        ))
    }
}
