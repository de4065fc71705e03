//! A unified diff of two texts, line by line, in the format of `diff -u`
//! (hunks `@@ -a,b +c,d @@` with `context` unchanged lines around each
//! change), for `atoll diff`.
//!
//! The alignment is a longest common subsequence of lines: quadratic in
//! the lines compared, which is fine for Kubernetes objects (hundreds of
//! lines) and exact, so no change is ever shown as larger than it is.

/// One line of the alignment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    /// In both: (index in old, index in new).
    Same(usize, usize),
    /// Only in the old text.
    Removed(usize),
    /// Only in the new text.
    Added(usize),
}

/// The unified diff from `old` to `new` with `context` lines around each
/// change, or an empty string when the texts have the same lines.
/// `old_name` and `new_name` head the diff (`--- old_name`, `+++ new_name`).
pub fn unified(old: &str, new: &str, old_name: &str, new_name: &str, context: usize) -> String {
    let a: Vec<&str> = old.lines().collect();
    let b: Vec<&str> = new.lines().collect();
    let ops = align(&a, &b);
    let changed: Vec<usize> = ops
        .iter()
        .enumerate()
        .filter(|(_, op)| !matches!(op, Op::Same(..)))
        .map(|(i, _)| i)
        .collect();
    if changed.is_empty() {
        return String::new();
    }
    // Hunks: runs of ops around changes, merged when their context touches.
    let mut hunks: Vec<(usize, usize)> = Vec::new();
    for &i in &changed {
        let start = i.saturating_sub(context);
        let end = (i + context + 1).min(ops.len());
        match hunks.last_mut() {
            Some((_, last_end)) if start <= *last_end => *last_end = end,
            _ => hunks.push((start, end)),
        }
    }
    let mut out = format!("--- {old_name}\n+++ {new_name}\n");
    for (start, end) in hunks {
        let slice = &ops[start..end];
        // Line numbers are those of the first line of the hunk in each text
        // (1-based); an empty side is numbered after the line preceding it.
        let (old_start, new_start) = position(&ops[..start]);
        let old_len = slice.iter().filter(|o| !matches!(o, Op::Added(_))).count();
        let new_len = slice
            .iter()
            .filter(|o| !matches!(o, Op::Removed(_)))
            .count();
        out.push_str(&format!(
            "@@ -{} +{} @@\n",
            range(old_start, old_len),
            range(new_start, new_len)
        ));
        for op in slice {
            match *op {
                Op::Same(i, _) => out.push_str(&format!(" {}\n", a[i])),
                Op::Removed(i) => out.push_str(&format!("-{}\n", a[i])),
                Op::Added(j) => out.push_str(&format!("+{}\n", b[j])),
            }
        }
    }
    out
}

/// How many old and new lines precede `ops`.
fn position(before: &[Op]) -> (usize, usize) {
    before.iter().fold((0, 0), |(o, n), op| match op {
        Op::Same(..) => (o + 1, n + 1),
        Op::Removed(_) => (o + 1, n),
        Op::Added(_) => (o, n + 1),
    })
}

/// `start,len` as `diff -u` writes it: `start` is 1-based, or the line
/// before an empty range; a length of one is left out.
fn range(preceding: usize, len: usize) -> String {
    match len {
        0 => format!("{preceding},0"),
        1 => format!("{}", preceding + 1),
        _ => format!("{},{len}", preceding + 1),
    }
}

/// Align `a` and `b` on a longest common subsequence; removals come before
/// additions within a change, as `diff -u` prints them.
fn align(a: &[&str], b: &[&str]) -> Vec<Op> {
    // lcs[i][j]: length of the LCS of a[i..] and b[j..].
    let (n, m) = (a.len(), b.len());
    let mut lcs = vec![vec![0u32; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j) = (0, 0);
    let mut ops = Vec::with_capacity(n + m);
    while i < n || j < m {
        if i < n && j < m && a[i] == b[j] {
            ops.push(Op::Same(i, j));
            i += 1;
            j += 1;
        } else if j == m || (i < n && lcs[i + 1][j] >= lcs[i][j + 1]) {
            ops.push(Op::Removed(i));
            i += 1;
        } else {
            ops.push(Op::Added(j));
            j += 1;
        }
    }
    ops
}

#[cfg(test)]
mod tests {
    use super::unified;

    #[test]
    fn equal_texts_have_no_diff() {
        assert_eq!(unified("a\nb\n", "a\nb\n", "x", "y", 3), "");
    }

    #[test]
    fn a_changed_line_in_the_middle_shows_its_context() {
        let old = "1\n2\n3\n4\n5\n6\n7\n8\n9\n";
        let new = "1\n2\n3\n4\nfive\n6\n7\n8\n9\n";
        assert_eq!(
            unified(old, new, "live", "after", 2),
            "--- live\n+++ after\n@@ -3,5 +3,5 @@\n 3\n 4\n-5\n+five\n 6\n 7\n"
        );
    }

    #[test]
    fn distant_changes_make_separate_hunks_and_close_ones_merge() {
        let old = "a\nb\nc\nd\ne\nf\ng\nh\n";
        let new = "A\nb\nc\nd\ne\nf\ng\nH\n";
        assert_eq!(
            unified(old, new, "o", "n", 1),
            "--- o\n+++ n\n@@ -1,2 +1,2 @@\n-a\n+A\n b\n@@ -7,2 +7,2 @@\n g\n-h\n+H\n"
        );
        assert_eq!(
            unified(old, new, "o", "n", 3),
            "--- o\n+++ n\n@@ -1,8 +1,8 @@\n-a\n+A\n b\n c\n d\n e\n f\n g\n-h\n+H\n"
        );
    }

    #[test]
    fn creation_and_deletion_are_numbered_like_diff_u() {
        assert_eq!(
            unified("", "x\ny\n", "o", "n", 3),
            "--- o\n+++ n\n@@ -0,0 +1,2 @@\n+x\n+y\n"
        );
        assert_eq!(
            unified("x\n", "", "o", "n", 3),
            "--- o\n+++ n\n@@ -1 +0,0 @@\n-x\n"
        );
    }

    #[test]
    fn an_inserted_line_keeps_the_rest_aligned() {
        let old = "a\nb\nc\n";
        let new = "a\nb\nnew\nc\n";
        assert_eq!(
            unified(old, new, "o", "n", 0),
            "--- o\n+++ n\n@@ -2,0 +3 @@\n+new\n"
        );
    }
}
