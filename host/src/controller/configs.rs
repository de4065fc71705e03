//! The reconcile step between render and plan that reads the ConfigMaps and
//! Secrets pod templates refer to but the plugin did not render (a user's own
//! Secret), so their data is part of each template's config checksum
//! ([`crate::render::checksum`]) and editing them rolls the pods.
//!
//! Caveat: atoll does not watch these objects, so an edit reaches the pods at
//! the Database's next reconcile (at the latest the resync,
//! [`super::RESYNC`]). One that does not exist hashes as missing: creating it
//! changes the checksum too.

use super::Context;
use super::observe::Kind;
use crate::render::Desired;
use crate::render::checksum::External;

/// Read every external reference of `desired` in `namespace` and stamp the
/// checksums again with their data.
///
/// # Errors
/// A read failed (other than not found); the reconcile retries.
pub async fn stamp_external(
    ctx: &Context,
    namespace: &str,
    desired: &mut Desired,
) -> Result<(), kube::Error> {
    let wanted = desired.external_configs();
    if wanted.is_empty() {
        return Ok(());
    }
    let mut external = External::new();
    for reference in wanted {
        let api = Kind::new("v1", reference.kind).api(&ctx.client, namespace);
        // The object's fields besides metadata: `data`, `binaryData`.
        let object = api.get_opt(&reference.name).await?.map(|o| o.data);
        external.insert(reference, object);
    }
    desired.stamp_config_checksums(&external);
    Ok(())
}
