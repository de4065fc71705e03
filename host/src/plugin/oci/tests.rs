//! The OCI client against an in-process registry ([`fake`]): reference,
//! pull Secret and challenge parsing ([`parsing`]), then pulls that succeed
//! and pulls that must fail with the right [`OciError`](super::OciError) ([`pulls`]).

mod fake;
mod parsing;
mod pulls;
