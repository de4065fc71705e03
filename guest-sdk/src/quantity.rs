//! Kubernetes resource quantities (`1Gi`, `500m`, `64Mi`), checked early so a
//! typo is a validation error naming the field rather than an API server
//! rejection after atoll has started applying.

/// Check that `s` is a Kubernetes quantity, e.g. `10Gi`, `1.5`, `500m`, `1e3`.
pub fn check(s: &str) -> Result<(), String> {
    const SUFFIXES: [&str; 16] = [
        "Ki", "Mi", "Gi", "Ti", "Pi", "Ei", "n", "u", "m", "", "k", "M", "G", "T", "P", "E",
    ];
    let bad = || {
        format!(
            "`{s}` is not a Kubernetes quantity; use a number with an optional unit such as 512Mi, 10Gi or 500m"
        )
    };
    let digits_end = s
        .char_indices()
        .find(|(i, c)| !(c.is_ascii_digit() || *c == '.' || (*i == 0 && *c == '+')))
        .map_or(s.len(), |(i, _)| i);
    let (number, suffix) = s.split_at(digits_end);
    let number = number.trim_start_matches('+');
    if number.is_empty() || number == "." || number.matches('.').count() > 1 {
        return Err(bad());
    }
    let decimal_exponent = suffix.strip_prefix(['e', 'E']).is_some_and(|e| {
        let e = e.strip_prefix(['+', '-']).unwrap_or(e);
        !e.is_empty() && e.chars().all(|c| c.is_ascii_digit())
    });
    if SUFFIXES.contains(&suffix) || decimal_exponent {
        Ok(())
    } else {
        Err(bad())
    }
}

#[cfg(test)]
mod tests {
    use super::check;

    #[test]
    fn accepts_kubernetes_quantities() {
        for ok in [
            "1Gi", "10Gi", "500m", "1.5", "64Mi", "1e3", "2E6", "0", "+1k",
        ] {
            assert!(check(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn rejects_nonsense() {
        for bad in ["", "Gi", "1GB", "1.2.3Gi", "ten", "1 Gi", "-1Gi", "1e"] {
            assert!(check(bad).is_err(), "{bad}");
        }
    }
}
