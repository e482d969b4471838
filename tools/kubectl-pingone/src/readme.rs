//! The troubleshooting tables of the operator's README, embedded at compile time: every markdown
//! table whose first column is a reason (`reason`, `` `ClientSecretRotation` reason``) maps each
//! reason of its rows to the row's "what to do" cell.

/// The operator's README, as built into this binary.
pub const README: &str = include_str!("../../../README.md");

/// One row of a reason table.
#[derive(Clone, Debug, PartialEq)]
pub struct Hint {
    /// The reasons the row lists (a cell may list several, each in backticks).
    pub reasons: Vec<String>,
    /// The row's "meaning" cell, if the table has one.
    pub meaning: String,
    /// The row's "what to do" cell.
    pub what_to_do: String,
}

fn cells(line: &str) -> Option<Vec<String>> {
    let line = line.trim();
    let inner = line.strip_prefix('|')?;
    let inner = inner.strip_suffix('|').unwrap_or(inner);
    Some(inner.split('|').map(|c| c.trim().to_string()).collect())
}

/// The names in backticks in `cell`; a cell without backticks is taken as one name.
fn backticked(cell: &str) -> Vec<String> {
    let parts: Vec<&str> = cell.split('`').collect();
    if parts.len() < 3 {
        return vec![cell.trim().to_string()]
            .into_iter()
            .filter(|s| !s.is_empty())
            .collect();
    }
    parts
        .iter()
        .skip(1)
        .step_by(2)
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

/// Every row of every reason table in `markdown`.
pub fn parse(markdown: &str) -> Vec<Hint> {
    let mut hints = Vec::new();
    let mut lines = markdown.lines().peekable();
    while let Some(line) = lines.next() {
        let Some(header) = cells(line) else { continue };
        let is_reason_table = header
            .first()
            .is_some_and(|c| c.to_ascii_lowercase().ends_with("reason"));
        let separator = lines.peek().and_then(|l| cells(l)).is_some_and(|c| {
            c.iter()
                .all(|c| !c.is_empty() && c.chars().all(|ch| ch == '-' || ch == ':'))
        });
        if !is_reason_table || !separator {
            continue;
        }
        lines.next();
        let column = |name: &str| header.iter().position(|h| h.eq_ignore_ascii_case(name));
        let todo = column("what to do");
        let meaning = column("meaning");
        while let Some(row) = lines.peek().and_then(|l| cells(l)) {
            lines.next();
            let get = |i: Option<usize>| i.and_then(|i| row.get(i)).cloned().unwrap_or_default();
            hints.push(Hint {
                reasons: backticked(&row[0]),
                meaning: get(meaning),
                what_to_do: get(todo),
            });
        }
    }
    hints
}

/// The README row for `reason`.
pub fn hint(reason: &str) -> Option<Hint> {
    parse(README)
        .into_iter()
        .find(|h| h.reasons.iter().any(|r| r == reason))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_single_and_listed_reasons_and_skips_other_tables() {
        let md = "\
| flag | default |
| --- | --- |
| `--x` | 1 |

| reason | condition | meaning | what to do |
| --- | --- | --- | --- |
| `TokenIssued` | Ready=True | fine | nothing |
| `A`, `B` | Stalled | bad | fix it |

| `Foo` reason | status | meaning | what to do |
| --- | --- | --- | --- |
| `C` | False | c | see `x` |
";
        let hints = parse(md);
        assert_eq!(hints.len(), 3);
        assert_eq!(hints[1].reasons, ["A", "B"]);
        assert_eq!(hints[1].what_to_do, "fix it");
        assert_eq!(hints[2].reasons, ["C"]);
        assert_eq!(hints[2].what_to_do, "see `x`");
        assert_eq!(hints[2].meaning, "c");
    }

    #[test]
    fn every_row_of_the_readme_tables_parses() {
        let hints = parse(README);
        // The main table and the ClientSecretRotation table.
        assert!(hints.len() >= 30, "{} rows", hints.len());
        for h in &hints {
            assert!(!h.reasons.is_empty(), "{h:?}");
            for r in &h.reasons {
                assert!(
                    !r.is_empty()
                        && r.chars().next().unwrap().is_ascii_uppercase()
                        && r.chars().all(|c| c.is_ascii_alphanumeric()),
                    "not a reason: {r:?} in {h:?}"
                );
            }
            assert!(!h.what_to_do.is_empty(), "no what-to-do: {h:?}");
        }
        assert_eq!(
            hint("CredentialsNotFound").unwrap().what_to_do,
            "create it (same namespace; there is no cross-namespace reference)"
        );
        assert!(hint("ManagementApiError").is_some());
        assert!(hint("NoSuchReason").is_none());
    }
}
