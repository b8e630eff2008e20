//! A small line-based unified diff (LCS over the lines between the common prefix and suffix),
//! for showing a proposal's candidate bundle next to its base.

/// A unified diff of `a` → `b` (`--- a/path`, `+++ b/path`, `@@` hunks with `context` lines
/// around each change). Empty when the texts are equal.
pub fn unified(path: &str, a: &str, b: &str, context: usize) -> String {
    if a == b {
        return String::new();
    }
    let la: Vec<&str> = a.lines().collect();
    let lb: Vec<&str> = b.lines().collect();
    let ops = diff_lines(&la, &lb);
    let mut out = String::new();
    let old = if a.is_empty() {
        "/dev/null".to_string()
    } else {
        format!("a/{path}")
    };
    out.push_str(&format!("--- {old}\n+++ b/{path}\n"));
    // Group ops into hunks: changes closer than 2*context lines share a hunk.
    let changed: Vec<usize> = ops
        .iter()
        .enumerate()
        .filter(|(_, o)| !matches!(o, Op::Same(..)))
        .map(|(i, _)| i)
        .collect();
    let mut i = 0;
    while i < changed.len() {
        let start = changed[i].saturating_sub(context);
        let mut end = changed[i];
        while i + 1 < changed.len() && changed[i + 1] <= end + 2 * context + 1 {
            i += 1;
            end = changed[i];
        }
        let end = (end + context + 1).min(ops.len());
        let (mut a0, mut b0) = (0usize, 0usize);
        for o in &ops[..start] {
            match o {
                Op::Same(..) => {
                    a0 += 1;
                    b0 += 1;
                }
                Op::Del(_) => a0 += 1,
                Op::Add(_) => b0 += 1,
            }
        }
        let (mut na, mut nb) = (0usize, 0usize);
        let mut body = String::new();
        for o in &ops[start..end] {
            match o {
                Op::Same(l) => {
                    na += 1;
                    nb += 1;
                    body.push_str(&format!(" {l}\n"));
                }
                Op::Del(l) => {
                    na += 1;
                    body.push_str(&format!("-{l}\n"));
                }
                Op::Add(l) => {
                    nb += 1;
                    body.push_str(&format!("+{l}\n"));
                }
            }
        }
        out.push_str(&format!(
            "@@ -{},{} +{},{} @@\n",
            a0 + usize::from(na > 0),
            na,
            b0 + usize::from(nb > 0),
            nb
        ));
        out.push_str(&body);
        i += 1;
    }
    out
}

enum Op<'a> {
    Same(&'a str),
    Del(&'a str),
    Add(&'a str),
}

fn diff_lines<'a>(a: &[&'a str], b: &[&'a str]) -> Vec<Op<'a>> {
    let pre = a.iter().zip(b).take_while(|(x, y)| x == y).count();
    let suf = a[pre..]
        .iter()
        .rev()
        .zip(b[pre..].iter().rev())
        .take_while(|(x, y)| x == y)
        .count();
    let ma = &a[pre..a.len() - suf];
    let mb = &b[pre..b.len() - suf];
    let mut ops: Vec<Op<'a>> = a[..pre].iter().map(|l| Op::Same(l)).collect();
    // LCS table over the middle (bundles are small; cap the work and fall back to del+add).
    if ma.len().saturating_mul(mb.len()) <= 4_000_000 {
        let (n, m) = (ma.len(), mb.len());
        let mut t = vec![0u32; (n + 1) * (m + 1)];
        for i in (0..n).rev() {
            for j in (0..m).rev() {
                t[i * (m + 1) + j] = if ma[i] == mb[j] {
                    t[(i + 1) * (m + 1) + j + 1] + 1
                } else {
                    t[(i + 1) * (m + 1) + j].max(t[i * (m + 1) + j + 1])
                };
            }
        }
        let (mut i, mut j) = (0, 0);
        while i < n && j < m {
            if ma[i] == mb[j] {
                ops.push(Op::Same(ma[i]));
                i += 1;
                j += 1;
            } else if t[(i + 1) * (m + 1) + j] >= t[i * (m + 1) + j + 1] {
                ops.push(Op::Del(ma[i]));
                i += 1;
            } else {
                ops.push(Op::Add(mb[j]));
                j += 1;
            }
        }
        ops.extend(ma[i..].iter().map(|l| Op::Del(l)));
        ops.extend(mb[j..].iter().map(|l| Op::Add(l)));
    } else {
        ops.extend(ma.iter().map(|l| Op::Del(l)));
        ops.extend(mb.iter().map(|l| Op::Add(l)));
    }
    ops.extend(a[a.len() - suf..].iter().map(|l| Op::Same(l)));
    ops
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insertions_show_as_hunks() {
        let a = "a\nb\nc\nd\ne\nf\ng\nh\ni\nj\n";
        let b = "a\nb\nX\nc\nd\ne\nf\ng\nh\ni\nY\nj\n";
        let d = unified("p.yaml", a, b, 1);
        assert_eq!(
            d,
            "--- a/p.yaml\n+++ b/p.yaml\n@@ -2,2 +2,3 @@\n b\n+X\n c\n@@ -9,2 +10,3 @@\n i\n+Y\n j\n"
        );
        assert_eq!(unified("p", a, a, 3), "");
        let new = unified("n.txt", "", "x\n", 3);
        assert!(
            new.starts_with("--- /dev/null\n+++ b/n.txt\n@@ -0,0 +1,1 @@\n+x\n"),
            "{new}"
        );
    }
}
