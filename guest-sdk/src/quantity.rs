//! Kubernetes resource quantities (`1Gi`, `500m`, `64Mi`), checked early so a
//! typo is a validation error naming the field rather than an API server
//! rejection after atoll has started applying.

/// Check that `s` is a Kubernetes quantity, e.g. `10Gi`, `1.5`, `500m`, `1e3`.
///
/// # Errors
/// A message quoting `s` and showing valid forms.
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

/// The value of quantity `s` as a number, e.g. `64Mi` → 67108864, `500m` → 0.5,
/// for comparing sizes given in different units.
///
/// # Errors
/// As [`check`]: `s` is not a Kubernetes quantity.
pub fn value(s: &str) -> Result<f64, String> {
    check(s)?;
    const UNITS: [(&str, f64); 15] = [
        ("Ki", 1024.0),
        ("Mi", 1048576.0),
        ("Gi", 1073741824.0),
        ("Ti", 1099511627776.0),
        ("Pi", 1125899906842624.0),
        ("Ei", 1152921504606846976.0),
        ("n", 1e-9),
        ("u", 1e-6),
        ("m", 1e-3),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
        ("P", 1e15),
        ("E", 1e18),
    ];
    let s = s.trim_start_matches('+');
    let (number, multiplier) = UNITS
        .iter()
        .find_map(|(suffix, m)| s.strip_suffix(suffix).map(|n| (n, *m)))
        .unwrap_or((s, 1.0));
    // `check` accepted it, so what is left is a decimal, possibly with an
    // exponent (`1e3`), which Rust parses as is.
    number
        .parse::<f64>()
        .map(|n| n * multiplier)
        .map_err(|e| format!("`{s}`: {e}"))
}

#[cfg(test)]
mod tests {
    use super::{check, value};

    #[test]
    fn values_compare_across_units() {
        assert_eq!(value("64Mi"), Ok(67108864.0));
        assert_eq!(value("1Gi"), Ok(1073741824.0));
        assert_eq!(value("1G"), Ok(1e9));
        assert_eq!(value("500m"), Ok(0.5));
        assert_eq!(value("1.5Ki"), Ok(1536.0));
        assert_eq!(value("1e3"), Ok(1000.0));
        assert_eq!(value("2E6"), Ok(2e6));
        assert_eq!(value("+1k"), Ok(1000.0));
        assert_eq!(value("7"), Ok(7.0));
        assert!(value("1Mi").unwrap() > value("1M").unwrap());
        assert!(value("1GB").is_err());
    }

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
