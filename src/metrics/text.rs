//! The Prometheus text format of the metrics file: rendering samples
//! grouped by family with one HELP and TYPE each, and parsing a previous file
//! back into samples (pure).

use std::collections::BTreeMap;

use super::{Sample, FAMILIES};

fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn format_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".to_string()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.to_string()
    } else {
        format!("{v}")
    }
}

fn format_sample(s: &Sample) -> String {
    let labels: Vec<String> = s
        .labels
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape_label(v)))
        .collect();
    if labels.is_empty() {
        format!("{} {}", s.name, format_value(s.value))
    } else {
        format!(
            "{}{{{}}} {}",
            s.name,
            labels.join(","),
            format_value(s.value)
        )
    }
}

/// Render samples grouped by family (HELP/TYPE first, known families in
/// [`FAMILIES`] order, samples sorted by labels; unknown names last, untyped).
pub fn render(samples: &[Sample]) -> String {
    let mut out = String::new();
    let mut by_name: BTreeMap<&str, Vec<&Sample>> = BTreeMap::new();
    for s in samples {
        by_name.entry(s.name.as_str()).or_default().push(s);
    }
    for v in by_name.values_mut() {
        v.sort_by(|a, b| a.labels.cmp(&b.labels));
        v.dedup_by(|a, b| a.labels == b.labels);
    }
    for (name, ty, help) in FAMILIES {
        if let Some(v) = by_name.remove(name) {
            out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {ty}\n"));
            for s in v {
                out.push_str(&format_sample(s));
                out.push('\n');
            }
        }
    }
    for v in by_name.values() {
        for s in v {
            out.push_str(&format_sample(s));
            out.push('\n');
        }
    }
    out
}

/// Parse one sample line (`name{k="v",...} value [timestamp]`).
pub fn parse_sample(line: &str) -> Option<Sample> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let name_end = line.find(|c: char| c == '{' || c.is_whitespace())?;
    let name = &line[..name_end];
    let mut labels = BTreeMap::new();
    let mut rest = &line[name_end..];
    if let Some(r) = rest.strip_prefix('{') {
        let mut chars = r.char_indices().peekable();
        let end;
        loop {
            // Skip separators.
            while let Some((_, c)) = chars.peek() {
                if *c == ',' || c.is_whitespace() {
                    chars.next();
                } else {
                    break;
                }
            }
            match chars.peek() {
                Some((i, '}')) => {
                    end = *i + 1;
                    break;
                }
                None => return None,
                _ => {}
            }
            let mut key = String::new();
            for (_, c) in chars.by_ref() {
                if c == '=' {
                    break;
                }
                key.push(c);
            }
            if chars.next().map(|(_, c)| c) != Some('"') {
                return None;
            }
            let mut val = String::new();
            let mut closed = false;
            while let Some((_, c)) = chars.next() {
                match c {
                    '\\' => match chars.next().map(|(_, c)| c) {
                        Some('n') => val.push('\n'),
                        Some(o) => val.push(o),
                        None => return None,
                    },
                    '"' => {
                        closed = true;
                        break;
                    }
                    o => val.push(o),
                }
            }
            if !closed {
                return None;
            }
            labels.insert(key.trim().to_string(), val);
        }
        rest = &r[end..];
    }
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse::<f64>().ok()?,
    };
    Some(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

pub fn parse(text: &str) -> Vec<Sample> {
    text.lines().filter_map(parse_sample).collect()
}
