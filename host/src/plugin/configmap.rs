//! Decoding a plugin ConfigMap: the component in `binaryData`, plain or
//! gzip, bounded in size.

use std::io::Read as _;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::ResourceExt;

/// `binaryData` key of an uncompressed component.
pub const KEY_WASM: &str = "plugin.wasm";
/// `binaryData` key of a gzip-compressed component.
pub const KEY_WASM_GZ: &str = "plugin.wasm.gz";
/// A decompressed component larger than this is refused (a gzip bomb
/// guard; the largest built-in is under 1 MiB).
pub const MAX_COMPONENT_BYTES: u64 = 64 << 20;

/// The component bytes of a plugin ConfigMap, or why there are none.
pub fn decode(cm: &ConfigMap) -> Result<Vec<u8>, String> {
    let id = format!(
        "configmap/{}/{}",
        cm.namespace().unwrap_or_default(),
        cm.name_any()
    );
    let binary = cm.binary_data.as_ref();
    if let Some(wasm) = binary.and_then(|b| b.get(KEY_WASM)) {
        return Ok(wasm.0.clone());
    }
    if let Some(gz) = binary.and_then(|b| b.get(KEY_WASM_GZ)) {
        let mut bytes = Vec::new();
        flate2::read::GzDecoder::new(gz.0.as_slice())
            .take(MAX_COMPONENT_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| format!("{id}: binaryData.{KEY_WASM_GZ} is not valid gzip: {e}"))?;
        if bytes.len() as u64 > MAX_COMPONENT_BYTES {
            return Err(format!(
                "{id}: binaryData.{KEY_WASM_GZ} decompresses to more than {} MiB",
                MAX_COMPONENT_BYTES >> 20
            ));
        }
        return Ok(bytes);
    }
    let in_data = cm
        .data
        .as_ref()
        .is_some_and(|d| d.contains_key(KEY_WASM) || d.contains_key(KEY_WASM_GZ));
    Err(if in_data {
        format!(
            "{id}: the component is under data, which holds text; put it under binaryData (`kubectl create configmap --from-file=plugin.wasm=FILE` does)"
        )
    } else {
        format!(
            "{id}: binaryData has neither {KEY_WASM} nor {KEY_WASM_GZ}; create it with `kubectl create configmap NAME --from-file=plugin.wasm=FILE`"
        )
    })
}

pub(crate) fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push('…');
    }
    s
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use k8s_openapi::ByteString;

    use super::*;

    fn configmap(binary: &[(&str, Vec<u8>)]) -> ConfigMap {
        let mut cm = ConfigMap::default();
        cm.metadata.name = Some("p".into());
        cm.metadata.namespace = Some("ns".into());
        cm.binary_data = Some(
            binary
                .iter()
                .map(|(k, v)| (k.to_string(), ByteString(v.clone())))
                .collect(),
        );
        cm
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(bytes).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn decodes_plain_and_gzip_components() {
        assert_eq!(
            decode(&configmap(&[(KEY_WASM, b"\0asm".to_vec())])).unwrap(),
            b"\0asm"
        );
        let gz = gzip(b"\0asm component");
        assert_eq!(
            decode(&configmap(&[(KEY_WASM_GZ, gz)])).unwrap(),
            b"\0asm component"
        );
    }

    #[test]
    fn explains_missing_or_misplaced_components() {
        let err = decode(&configmap(&[("other", vec![1])])).unwrap_err();
        assert!(
            err.contains("configmap/ns/p") && err.contains("--from-file=plugin.wasm="),
            "{err}"
        );
        let mut cm = configmap(&[]);
        cm.data = Some([(KEY_WASM.to_string(), "text".to_string())].into());
        assert!(decode(&cm).unwrap_err().contains("under binaryData"));
        let err = decode(&configmap(&[(KEY_WASM_GZ, b"not gzip".to_vec())])).unwrap_err();
        assert!(err.contains("not valid gzip"), "{err}");
    }

    #[test]
    fn refuses_gzip_bombs() {
        let bomb = gzip(&vec![0u8; (MAX_COMPONENT_BYTES + 10) as usize]);
        let err = decode(&configmap(&[(KEY_WASM_GZ, bomb)])).unwrap_err();
        assert!(err.contains("decompresses to more than 64 MiB"), "{err}");
    }

    #[test]
    fn truncates_on_char_boundaries() {
        assert_eq!(truncate("ééé".into(), 3), "é…");
        assert_eq!(truncate("abc".into(), 3), "abc");
    }
}
