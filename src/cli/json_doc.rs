//! The JSON output contract: `docs/json.md` parsed (the one source of the
//! keys of every command's `--json` object), and its roff form for the
//! man pages ([`json_section`]).
//!
//! The format of `docs/json.md`: a section per report, headed
//! ``## `NAME` ``, with a table of rows ``| `key` | type | meaning |``.
//! `key` is a path (`a.b`, `<name>` for any key, `a[]` for the elements of
//! an array); `type` is types joined by ` or ` (`string`, `integer`,
//! `number`, `bool`, `null`, `object`, `array`), then optionally
//! `, optional` (the key may be absent) and `, opaque` (its content is
//! described elsewhere). The section `(every report)` lists the keys of
//! every object; a section whose name ends in `(stdout)` is a raw output
//! without them.

/// The contract's source text.
pub const SOURCE: &str = include_str!("../../docs/json.md");

/// Name of the section with the keys every report has.
pub const COMMON: &str = "(every report)";
/// Name of the section of a failed run's object.
pub const ERROR: &str = "(error)";

/// One documented key.
#[derive(Debug, Clone, PartialEq)]
pub struct Field {
    /// The path as written (`tasks.<task>.scanned`).
    pub path: String,
    /// The allowed JSON types.
    pub types: Vec<String>,
    /// The key may be absent although its parent is present.
    pub optional: bool,
    /// The value's content is not listed here.
    pub opaque: bool,
    pub meaning: String,
}

impl Field {
    /// The path as tokens: keys, `<name>` wildcards and `[]`.
    pub fn tokens(&self) -> Vec<String> {
        path_tokens(&self.path)
    }
}

/// One section: a report's keys.
#[derive(Debug, Clone)]
pub struct Section {
    pub name: String,
    /// The text between the heading and the table.
    pub intro: String,
    pub fields: Vec<Field>,
}

impl Section {
    /// A raw output (no `command`, `db`, `ok`, `elapsed_ms`).
    pub fn raw(&self) -> bool {
        self.name.ends_with("(stdout)")
    }

    /// The command whose man page shows this section (`migrate --dry-run`
    /// → `migrate`; `graph dump --format json (stdout)` → `graph dump`).
    pub fn command(&self) -> &str {
        let name = self.name.split(" (").next().unwrap_or(&self.name);
        name.split(" --").next().unwrap_or(name).trim()
    }
}

/// `a.b[].<c>` → `["a", "b", "[]", "<c>"]`.
pub fn path_tokens(path: &str) -> Vec<String> {
    let mut out = Vec::new();
    for part in path.split('.') {
        let mut p = part;
        let mut arrays = 0;
        while let Some(rest) = p.strip_suffix("[]") {
            p = rest;
            arrays += 1;
        }
        if !p.is_empty() {
            out.push(p.to_string());
        }
        out.extend(std::iter::repeat("[]".to_string()).take(arrays));
    }
    out
}

/// Whether a contract token matches an actual token (`<name>` matches any
/// key, never an array element).
pub fn token_matches(contract: &str, actual: &str) -> bool {
    if contract.starts_with('<') && contract.ends_with('>') && contract.len() > 2 {
        actual != "[]"
    } else {
        contract == actual
    }
}

/// The text between the first two backticks of `s`.
fn in_ticks(s: &str) -> Option<&str> {
    let start = s.find('`')? + 1;
    let len = s[start..].find('`')?;
    Some(&s[start..start + len])
}

/// Every section of the contract, in file order.
pub fn sections() -> Vec<Section> {
    parse(SOURCE)
}

/// Parse a contract text (see the module doc).
pub fn parse(text: &str) -> Vec<Section> {
    let mut out: Vec<Section> = Vec::new();
    for line in text.lines() {
        if let Some(h) = line.strip_prefix("## ") {
            if let Some(name) = h.trim().strip_prefix('`').and_then(|n| n.strip_suffix('`')) {
                out.push(Section {
                    name: name.to_string(),
                    intro: String::new(),
                    fields: Vec::new(),
                });
            } else {
                // A section of prose (conventions, changes): not a report.
                out.push(Section {
                    name: String::new(),
                    intro: String::new(),
                    fields: Vec::new(),
                });
            }
            continue;
        }
        let Some(sec) = out.last_mut().filter(|s| !s.name.is_empty()) else {
            continue;
        };
        let Some(row) = line.strip_prefix("| `") else {
            if !line.starts_with('|') && sec.fields.is_empty() {
                sec.intro.push_str(line);
                sec.intro.push('\n');
            }
            continue;
        };
        let row = format!("`{row}");
        let mut parts = row.splitn(3, " | ");
        let (Some(key), Some(ty), Some(meaning)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let Some(path) = in_ticks(key) else { continue };
        let mut spec = ty.split(", ");
        let types: Vec<String> = spec
            .next()
            .unwrap_or("")
            .split(" or ")
            .map(|t| t.trim().to_string())
            .collect();
        let flags: Vec<&str> = spec.collect();
        sec.fields.push(Field {
            path: path.to_string(),
            types,
            optional: flags.contains(&"optional"),
            opaque: flags.contains(&"opaque"),
            meaning: meaning.trim_end_matches('|').trim().to_string(),
        });
    }
    out.retain(|s| !s.name.is_empty());
    for s in &mut out {
        s.intro = s.intro.trim().to_string();
    }
    out
}

/// Escape text for roff: backslashes, and a leading `.` or `'`.
fn roff_text(s: &str) -> String {
    let s = s.replace('\\', "\\e").replace('`', "");
    if s.starts_with('.') || s.starts_with('\'') {
        format!("\\&{s}")
    } else {
        s
    }
}

/// The JSON OUTPUT section of the man page of `command` (`migrate`,
/// `graph dump`, or the page name `corescope-graph-dump`), as roff; `None`
/// for a command without JSON output.
pub fn json_section(command: &str) -> Option<String> {
    let wanted = command
        .strip_prefix("corescope-")
        .unwrap_or(command)
        .replace(' ', "-");
    let all = sections();
    let mine: Vec<&Section> = all
        .iter()
        .filter(|s| s.command().replace(' ', "-") == wanted)
        .collect();
    if mine.is_empty() {
        return None;
    }
    let mut r = String::from(".SH \"JSON OUTPUT\"\n");
    r.push_str(
        "With \\fB\\-\\-json\\fR the command prints one JSON object on stdout: \
         \\fBcommand\\fR, \\fBdb\\fR (the database's absolute path), \\fBok\\fR, \
         \\fBelapsed_ms\\fR, and the keys below (a failed run: \\fBerror\\fR and \
         \\fBexit_code\\fR instead). A path \\fIa.b\\fR is key \\fIb\\fR under \\fIa\\fR, \
         \\fI<name>\\fR any key, \\fIa[]\\fR each element of an array. The full \
         contract, with the changes from earlier versions: docs/json.md.\n",
    );
    for s in mine {
        r.push_str(&format!(
            ".SS \"{}\"\n",
            roff_text(&s.name).replace('"', "")
        ));
        if !s.intro.is_empty() {
            r.push_str(&roff_text(&s.intro.replace('\n', " ")));
            r.push('\n');
        }
        for f in &s.fields {
            let mut ty = f.types.join(" or ");
            if f.optional {
                ty.push_str(", optional");
            }
            r.push_str(".TP\n");
            r.push_str(&format!("\\fB{}\\fR ({ty})\n", roff_text(&f.path)));
            r.push_str(&roff_text(&f.meaning));
            r.push('\n');
        }
    }
    Some(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sections_rows_and_flags() {
        let s = parse(
            "# T\n## Prose\n| `x` | string | not a report |\n## `demo --x`\nIntro.\n\n| key | type | meaning |\n|---|---|---|\n\
             | `a.<k>[].b` | integer or null, optional | M \\| N |\n| `c` | object, opaque | O |\n",
        );
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].name, "demo --x");
        assert_eq!(s[0].command(), "demo");
        assert_eq!(s[0].intro, "Intro.");
        let f = &s[0].fields[0];
        assert_eq!(f.tokens(), ["a", "<k>", "[]", "b"]);
        assert_eq!(f.types, ["integer", "null"]);
        assert!(f.optional && !f.opaque);
        assert!(s[0].fields[1].opaque);
        assert!(token_matches("<k>", "from-pubkey"));
        assert!(!token_matches("<k>", "[]"));
    }

    #[test]
    fn every_report_section_has_rows_and_known_types() {
        let all = sections();
        for name in [
            COMMON, ERROR, "migrate", "check", "prune", "vacuum", "backfill",
        ] {
            assert!(all.iter().any(|s| s.name == name), "{name}");
        }
        for s in &all {
            assert!(!s.fields.is_empty(), "{}", s.name);
            for f in &s.fields {
                for t in &f.types {
                    assert!(
                        ["string", "integer", "number", "bool", "null", "object", "array"]
                            .contains(&t.as_str()),
                        "{}: {}: {t}",
                        s.name,
                        f.path
                    );
                }
            }
        }
        let man = json_section("corescope-graph-dump").unwrap();
        assert!(
            man.contains(".SS \"graph dump --format json (stdout)\""),
            "{man}"
        );
        assert!(json_section("migrate").unwrap().contains("rows_estimated"));
        assert!(json_section("completions").is_none());
    }
}
